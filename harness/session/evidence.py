"""Evidence for `verify-receipt --model / --replay`: the model file's own facts and the workload run again.

The receipt decides nothing here but what to re-run: the file's facts come from the engine's loader, the
replay from the engine running the recorded workload (per-shape kernel families, logits path, threads,
warm-up, repetitions, tokens), and harness.receipts.verify compares them with the claims. A file that is not
there is an error, never a preset quietly rebuilt: rebuilding needs `rebuild_preset` (the 2b-4t preset is
1.1 GB), and the rebuilt file is bound like any other (its sha256 must be the receipt's).
"""

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numba

from engine.errors import EngineError
from engine.generate import SamplingParams
from engine.loader import ModelFile, load_file
from engine.model import Model, load_model
from engine.synth import ensure_preset_model
from harness.errors import HarnessError
from harness.machine import noise
from harness.machine.host import host_facts
from harness.phases.benchmark import run_benchmark
from harness.phases.load import load_and_warm
from harness.phases.workload import prompt_ids
from harness.receipts.build import model_section
from harness.receipts.checks import Evidence, ModelFacts, ReplayRun
from harness.receipts.digest import file_digest, token_digest
from harness.receipts.gates.evidence import BOUND_FACTS, speed_shortfalls
from harness.receipts.kind import BENCHMARK, receipt_kind
from harness.receipts.schema import schema_errors

REMEASURE_REPETITIONS = 5  # per round of --remeasure
REMEASURE_BUDGET_SECONDS = 10.0  # longer than the slow spells of a shared host (up to ~3 s measured)
ROW_SUM_BYTES = 4  # engine.weights: the int8 embedding's int32 row sums, read only off the portable path


def model_file(
    receipt: Mapping[str, Any], model: Path | None, replay: bool, rebuild_preset: bool
) -> Path | None:
    """The file to bind and replay on: --model (which must exist), else for --replay the recorded path when
    it is there, else the recorded preset rebuilt when asked to; None when no evidence was asked for."""
    if model is not None:
        if not model.is_file():
            raise HarnessError(f"--model {model} does not exist or is not a file")
        return model
    if not (replay or rebuild_preset):
        return None
    facts = receipt.get("model") if isinstance(receipt.get("model"), Mapping) else {}
    recorded, preset = facts.get("path"), facts.get("preset")
    if not rebuild_preset:
        if isinstance(recorded, str) and recorded and Path(recorded).is_file():
            return Path(recorded)
        hint = f", or --rebuild-preset to write the {preset} preset again" if preset else ""
        raise HarnessError(f"the receipt's model {recorded!r} is not here; give --model FILE{hint}")
    if preset is None or facts.get("preset_seed") is None:
        raise HarnessError("--rebuild-preset: the receipt names no preset and seed to rebuild")
    try:
        return ensure_preset_model(preset, facts["format"], facts["architecture"], facts["preset_seed"])
    except (EngineError, KeyError, TypeError) as exc:
        raise HarnessError(f"--rebuild-preset: cannot rebuild the receipt's preset ({exc})") from None


def _families(receipt: Mapping[str, Any]) -> dict[tuple[int, int], str]:
    return {
        (int(e["shape"][0]), int(e["shape"][1])): e["kernel"] for e in receipt["kernel_choice"]["per_shape"]
    }


def _logits_mode(receipt: Mapping[str, Any]) -> str:
    return "int8" if "logits_i8" in receipt["kernel_counts"] else "f32"


def _recorded_bytes(model: Model, receipt: Mapping[str, Any]) -> int | None:
    """Weight bytes per token with the receipt's logits path (its row sums are read only off the portable
    path); None when the receipt does not say which path its int8 logits took."""
    if model.logits_mode != "int8":
        return model.weight_bytes_per_token
    recorded = receipt["kernel_choice"].get("variants", {}).get("logits_i8")
    if recorded is None:
        return None
    sums = model.config.vocab_size * ROW_SUM_BYTES
    here = sums if model.logits_variant != "portable" else 0
    there = sums if recorded != "portable" else 0
    return model.weight_bytes_per_token - here + there


def _facts(path: Path, mf: ModelFile, bytes_per_token: int | None) -> ModelFacts:
    section = model_section(mf, str(path), file_digest(path))
    return ModelFacts(str(path), {k: section[k] for k in BOUND_FACTS if k in section}, bytes_per_token)


def _replay(model: Model, receipt: Mapping[str, Any], remeasure: float | None) -> ReplayRun:
    """The recorded workload on `model`: warm-up, then the measured repetitions with the trace counting;
    with a `remeasure` tolerance, further timed rounds (the best stands for this host)."""
    prompt, sampling = receipt["prompt"], receipt["sampling"]
    if prompt["text"] is None:
        raise HarnessError("the receipt records no prompt text (only its ids); it cannot be replayed")
    ids = prompt_ids(model.tokenizer, prompt["text"], prompt["token_count"])
    host = host_facts()
    here = (numba.get_num_threads(), host["cpu_model"], tuple(host["cpu_flags"]))
    if token_digest(ids) != prompt["token_ids_sha256"]:
        return ReplayRun({}, {}, {}, *here, prompt_matches=False)
    bench = receipt["phases"]["benchmark"]
    params = SamplingParams(sampling["temperature"], sampling["top_k"], sampling["top_p"], receipt["seed"])
    tokens, reps = receipt["tokens_requested"], len(bench["repetitions"])
    section, _ = run_benchmark(model, ids, tokens, reps, bench["warmup_repetitions"], params)
    counts = model.trace.snapshot()
    variants = {k: v for k, v in model.kernel_variants().items() if k in counts}
    timed = None
    if remeasure is not None:
        timed = remeasure_rounds(
            lambda: run_benchmark(model, ids, tokens, max(reps, REMEASURE_REPETITIONS), 1, params)[0],
            bench["repetitions"],
            remeasure,
        )
    return ReplayRun(section, counts, variants, *here, remeasured=timed)


def remeasure_rounds(
    run_round: Callable[[], dict[str, Any]], claimed: list[dict[str, Any]], tolerance: float
) -> dict[str, Any]:
    """Rounds of timed repetitions until their fastest samples reach the claims within `tolerance` or
    REMEASURE_BUDGET_SECONDS are spent: every repetition of every round, the rounds and seconds taken, and
    why this host was busy meanwhile (other processes, steal, load), if it was."""
    start, repetitions, rounds = noise.snapshot(), [], 0
    while True:
        repetitions += run_round()["repetitions"]
        rounds += 1
        usage = noise.usage_between(start, noise.snapshot())
        if not speed_shortfalls(claimed, repetitions, tolerance) or usage.seconds >= REMEASURE_BUDGET_SECONDS:
            return {
                "repetitions": repetitions,
                "rounds": rounds,
                "seconds": usage.seconds,
                "busy": usage.reasons(),
            }


def gather(
    receipt: Mapping[str, Any],
    *,
    model: Path | None = None,
    replay: bool = False,
    rebuild_preset: bool = False,
    remeasure: float | None = None,
    strict: bool | None = None,
) -> Evidence:
    """The model's facts (for --model, --replay or --rebuild-preset) and the replay (for --replay)."""
    if replay and receipt_kind(receipt) not in (BENCHMARK, "none"):
        replay = False  # a probe or timing receipt records no generation; its replay gate says so
    path = model_file(receipt, model, replay, rebuild_preset)
    if path is None:
        return Evidence(remeasure=remeasure)
    header = load_file(path, strict=strict)
    if schema_errors(receipt):
        withheld = {"replay": "the receipt fails the schema: its workload cannot be read"} if replay else {}
        return Evidence(_facts(path, header, None), remeasure=remeasure, withheld=withheld)
    threads = min(int(receipt["threads"]), numba.config.NUMBA_NUM_THREADS)
    options = {
        "kernel": _families(receipt),
        "threads": threads,
        "strict": strict,
        "logits": _logits_mode(receipt),
    }
    try:
        loaded = load_and_warm(path, **options).model if replay else load_model(path, **options)
    except EngineError as exc:  # the file itself loaded above: the receipt's kernel choice does not fit it
        withheld = {"replay": f"the engine cannot run the receipt's kernel choice on this file: {exc}"}
        return Evidence(_facts(path, header, None), remeasure=remeasure, withheld=withheld if replay else {})
    facts = _facts(path, header, _recorded_bytes(loaded, receipt))
    return Evidence(facts, _replay(loaded, receipt, remeasure) if replay else None, remeasure=remeasure)
