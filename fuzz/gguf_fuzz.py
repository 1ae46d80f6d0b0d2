"""Standalone fuzz target for the GGUF reader and loader: `python -m fuzz.gguf_fuzz --seconds 60`.

Mutates real tiny-preset model files written by engine.synth and builds hostile headers field by field; each
input must end in the engine's own one-line error (or load), in under a second and 256 MB of traced
allocations. Inputs that produce an outcome not seen before are kept with --save-corpus (hand-built files as
raw `.gguf`, mutations of the synthetic models as replayable recipes in `synth_mutations.json`); the tests
replay that corpus. Exit status 1 when any input broke the rules (its bytes are written to --crash-dir).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path

from fuzz.gguf_mutations import Mutation, build_random_gguf, check_file, mutate, rng_choose

BASES = (("tiny", "i2s", "bitnet-b1.58"), ("tiny", "tq1_0", "bitnet"))
MAX_SECONDS = 1.0
MAX_TRACED_BYTES = 256 * 2**20
RECIPES = "synth_mutations.json"


def base_name(preset: str, fmt: str, arch: str) -> str:
    return f"{preset}-{fmt}-{arch}"


def write_bases(folder: Path) -> dict[str, bytes]:
    """The synthetic model files mutations start from (seed 0: byte-identical on every machine)."""
    from engine.synth import synthesize

    out = {}
    for preset, fmt, arch in BASES:
        path = synthesize(preset, fmt, arch, 0, folder / f"{base_name(preset, fmt, arch)}.gguf")
        out[base_name(preset, fmt, arch)] = path.read_bytes()
    return out


def signature(outcome: str, path: Path) -> str:
    """The outcome with the file's own path, quoted names and numbers masked: a coarse coverage key."""
    from engine.errors import EngineError
    from engine.gguf_reader import read_gguf

    if outcome == "loaded":
        return outcome
    try:
        read_gguf(path)
        message = outcome
    except EngineError as exc:
        message = str(exc).replace(str(path), "")
    message = re.sub(r"'[^']*'", "'?'", message)
    return re.sub(r"\d+", "#", message)


def bounded_check(path: Path, trace_memory: bool = True) -> tuple[str, float, int]:
    """(outcome, seconds, peak traced bytes); raises on any exception that is not the engine's own."""
    if trace_memory:
        tracemalloc.start()
    start = time.perf_counter()
    try:
        outcome = check_file(path)
    finally:
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1] if trace_memory else 0
        if trace_memory:
            tracemalloc.stop()
    return outcome, seconds, peak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="time budget")
    parser.add_argument("--inputs", type=int, default=0, help="stop after this many inputs (0: time only)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-corpus", type=Path, help="keep inputs with new outcomes here")
    parser.add_argument("--crash-dir", type=Path, default=Path("fuzz-crashes"))
    parser.add_argument("--no-trace-memory", action="store_true", help="faster, without the 256 MB check")
    args = parser.parse_args(argv)

    rng = random.Random(args.seed)
    choose = rng_choose(rng)
    work = Path(tempfile.mkdtemp(prefix="gguf-fuzz-"))
    bases = write_bases(work)
    names = sorted(bases)
    seen: set[str] = set()
    outcomes: Counter[str] = Counter()
    recipes: list[dict[str, object]] = []
    failures = 0
    worst_seconds = 0.0
    worst_peak = 0
    target = work / "input.gguf"
    deadline = time.monotonic() + args.seconds
    count = 0
    while time.monotonic() < deadline and (args.inputs == 0 or count < args.inputs):
        count += 1
        recipe: dict[str, object] | None = None
        if rng.random() < 0.6:
            base = names[rng.randrange(len(names))]
            data, mutations = mutate(bases[base], choose, 1 + rng.randrange(3))
            recipe = {"base": base, "mutations": [m.to_json() for m in mutations]}
        else:
            data = build_random_gguf(choose)
        target.write_bytes(data)
        try:
            outcome, seconds, peak = bounded_check(target, not args.no_trace_memory)
            if seconds > MAX_SECONDS or peak > MAX_TRACED_BYTES:
                raise AssertionError(f"took {seconds:.2f} s and {peak / 2**20:.0f} MB")
        except Exception as exc:  # noqa: BLE001 - a fuzz target reports every escape
            failures += 1
            args.crash_dir.mkdir(parents=True, exist_ok=True)
            crash = args.crash_dir / f"crash-{hashlib.sha256(data).hexdigest()[:16]}.gguf"
            crash.write_bytes(data)
            print(f"FAIL {crash}: {type(exc).__name__}: {str(exc)[:200]}", file=sys.stderr)
            continue
        worst_seconds = max(worst_seconds, seconds)
        worst_peak = max(worst_peak, peak)
        outcomes[outcome] += 1
        sig = signature(outcome, target)
        if sig in seen:
            continue
        seen.add(sig)
        if args.save_corpus is not None:
            args.save_corpus.mkdir(parents=True, exist_ok=True)
            if recipe is None:
                name = f"hand-{hashlib.sha256(data).hexdigest()[:12]}.gguf"
                (args.save_corpus / name).write_bytes(data)
            else:
                recipes.append({**recipe, "outcome": outcome, "signature": sig})
    if args.save_corpus is not None and recipes:
        path = args.save_corpus / RECIPES
        old = json.loads(path.read_text()) if path.exists() else []
        path.write_text(json.dumps(old + recipes, indent=1) + "\n")
    print(
        json.dumps(
            {
                "inputs": count,
                "failures": failures,
                "distinct_outcomes": len(seen),
                "outcomes": dict(outcomes),
                "worst_seconds": round(worst_seconds, 3),
                "worst_traced_mb": round(worst_peak / 2**20, 1),
            }
        )
    )
    return 1 if failures else 0


def replay_recipe(bases: dict[str, bytes], recipe: dict[str, object]) -> bytes:
    """The bytes a saved recipe describes."""
    buf = bytearray(bases[str(recipe["base"])])
    for m in recipe["mutations"]:  # type: ignore[attr-defined]
        buf = Mutation.from_json(m).apply(buf)
    return bytes(buf)


if __name__ == "__main__":
    sys.exit(main())
