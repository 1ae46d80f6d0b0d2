"""Can the default benchmark decide? An A/A experiment and an injected slowdown, in one command.

    python benchmarks/aa_experiment.py                       # 20 A/A pairs, 5 slowed pairs, 1 thread pair
    python benchmarks/aa_experiment.py --pairs 3 --slowed-pairs 1 --thread-pairs 0 -- --preset small
    python benchmarks/aa_experiment.py --runs 2 -- --preset small    # each side two runs (processes)

Every run is a separate `bitnet-harness benchmark` process with the defaults (plus anything after `--`), so a
pair differs the way two CI runs of one build differ; with `--runs K` each side is K such runs, one after the
other, compared as one side (`compare A1,A2 B1,B2`). Pairs alternate which side runs first, so a drift in the
machine does not always favour one side. Each pair is judged by `bitnet-harness compare` (JSON output):

- A/A: the same build twice. The expectation is "no change" in at least 19 of 20 pairs.
- Slowed: NEW runs with every decode step made slower by `--slowdown` (default 10 %) by a busy wait added to
  `Model.decode` in this script's own process; the run records `BITNET_HARNESS_INJECTED_SLOWDOWN` in its
  receipt's environment, so the receipt says what was done to it. The expectation is "regression".
- Threads: NEW with `--threads 1` (compared with `--ignore threads`), a real configuration that decodes more
  slowly on a multi-core host. The expectation is "regression".

A noisy run (the receipt's `noise` section; on a side of several runs only the reasons outside the samples'
own spread) makes its pair inconclusive by design: the summary counts those apart and names the reasons;
`--ignore-noise` judges their timings anyway (`compare --ignore noise`), to see
what the statistics alone would say on a busy machine. Results go to --out (receipts, one JSON line per pair)
and, as markdown with the date, host, commit, command and load average, to stdout and to --log when given.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

SLOWDOWN_ENV = "BITNET_HARNESS_INJECTED_SLOWDOWN"
REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-c", "from harness.entry import main; main()"]


def _slowed_main(fraction: float, argv: list[str]) -> None:
    """Run the harness CLI with every Model.decode call stretched by `fraction` (a busy wait, timed with the
    call, so the decode-step latencies the receipt records include it)."""
    from engine.model import Model
    from harness.entry import main

    real = Model.decode

    def decode(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202 - the wrapped signature
        start = time.perf_counter()
        out = real(self, *args, **kwargs)
        until = start + (time.perf_counter() - start) * (1.0 + fraction)
        while time.perf_counter() < until:
            pass
        return out

    Model.decode = decode  # type: ignore[method-assign]
    sys.argv = ["bitnet-harness", *argv]
    main()


def _benchmark(folder: Path, extra: list[str], slowdown: float = 0.0) -> Path:
    """One benchmark process; the path of the receipt it wrote (a fresh folder per run)."""
    folder.mkdir(parents=True)
    args = ["benchmark", "--receipts-dir", str(folder), *extra]
    env = dict(os.environ)
    if slowdown:
        env[SLOWDOWN_ENV] = f"{slowdown:g}"
        cmd = [sys.executable, __file__, "--run-slowed", f"{slowdown:g}", "--", *args]
    else:
        env.pop(SLOWDOWN_ENV, None)
        cmd = [*CLI, *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    written = sorted(folder.glob("*.json"))
    if done.returncode not in (0, 1) or len(written) != 1:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise SystemExit(f"benchmark failed (exit {done.returncode}): {tail}")
    return written[0]


def _side(folder: Path, extra: list[str], runs: int, slowdown: float = 0.0) -> list[Path]:
    """One side of a pair: `runs` benchmark processes, one after the other."""
    return [_benchmark(folder / f"run{j}", extra, slowdown) for j in range(runs)]


def _compare(base: list[Path], new: list[Path], ignore: list[str]) -> dict[str, Any]:
    cmd = [*CLI, "compare", ",".join(map(str, base)), ",".join(map(str, new)), "--format", "json"]
    for key in ignore:
        cmd += ["--ignore", key]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    try:
        return json.loads(done.stdout)
    except ValueError:
        raise SystemExit(f"compare failed (exit {done.returncode}): {done.stderr.strip()[-300:]}") from None


def _noise(paths: list[Path]) -> list[str]:
    """The reasons that make a side noisy for compare (harness.comparison.compare.noise_reasons)."""
    from harness.comparison.compare import noise_reasons

    several = len(paths) > 1
    return [r for p in paths for r in noise_reasons(json.loads(p.read_text()), of_several_runs=several) or []]


def _load() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0]) if Path("/proc/loadavg").exists() else -1.0


def run_pair(out: Path, kind: str, i: int, extra: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """Run two benchmarks (BASE alternating between the first and the second) and compare them."""
    plain = out / kind / f"{i:02d}-plain"
    changed = out / kind / f"{i:02d}-changed"
    ignore: list[str] = []
    k = args.runs
    if kind == "aa":
        first, second = (_side(plain, extra, k), _side(changed, extra, k))
        base, new = (first, second) if i % 2 == 0 else (second, first)
    elif kind == "slowed":
        if i % 2 == 0:
            base, new = _side(plain, extra, k), _side(changed, extra, k, args.slowdown)
        else:
            new, base = _side(changed, extra, k, args.slowdown), _side(plain, extra, k)
    else:
        ignore = ["threads"]
        one = [*extra, "--threads", "1"]
        if i % 2 == 0:
            base, new = _side(plain, extra, k), _side(changed, one, k)
        else:
            new, base = _side(changed, one, k), _side(plain, extra, k)
    comp = _compare(base, new, ignore + (["noise"] if args.ignore_noise else []))
    rows = {r["metric"]: r for r in comp["rows"] if r["metric"] != "geometric mean speed-up"}
    decode, floor = rows["decode tok/s"], rows["decode step floor"]
    return {
        "kind": kind,
        "pair": i,
        "base": [str(p) for p in base],
        "new": [str(p) for p in new],
        "exit_code": comp["exit_code"],
        "verdict": comp["verdict"],
        "verdicts": {k: r["verdict"] for k, r in rows.items()},
        "decode": {k: decode[k] for k in ("base", "new", "ratio", "ci low", "ci high", "p", "mde")},
        "floor": {k: floor[k] for k in ("base", "new", "ratio", "ci low", "ci high", "p", "mde")},
        "noise": {"base": _noise(base), "new": _noise(new)},
        "noise_ignored": args.ignore_noise,
        "load1": _load(),
    }


def outcome(result: dict[str, Any]) -> str:
    """A pair in one word: noisy, no change, regression, improvement or inconclusive."""
    if (result["noise"]["base"] or result["noise"]["new"]) and not result["noise_ignored"]:
        return "noisy (inconclusive)"
    judged = [v for v in result["verdicts"].values() if v != "not judged"]
    if all(v == "no change" for v in judged):
        return "no change"
    for word in ("regression", "improvement", "inconclusive"):
        if word in judged:
            return word
    return result["verdict"]


def _git_commit() -> str:
    from harness.machine.host import git_facts

    commit, dirty = git_facts(REPO)
    return "not a git checkout" if commit is None else commit[:10] + (" (dirty)" if dirty else "")


def _host() -> str:
    from harness.machine.host import host_facts

    facts = host_facts()
    llc = facts["llc_bytes"]
    llc_text = f"{llc >> 20} MiB last-level cache" if llc else "last-level cache unknown"
    system = f"{platform.system()} {platform.release()}"
    return f"{facts['cpu_model']}, {facts['cores']} CPUs, {llc_text}, {system}"


def _ci(row: dict[str, Any]) -> str:
    return f"[{row['ci low']:.3f}, {row['ci high']:.3f}]" if row["ci low"] is not None else "-"


def _mde(row: dict[str, Any]) -> str:
    return f"{row['mde'] * 100:.1f} %" if row["mde"] is not None else "none"


def summary(results: list[dict[str, Any]], command: str, loads: tuple[float, float], seconds: float) -> str:
    lines = [
        f"# A/A and injected-slowdown experiment, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        f"- **Host**: {_host()}",
        f"- **Commit**: `{_git_commit()}`",
        f"- **Command**: `{command}`",
        f"- **Load average** (1 min) at start and end: {loads[0]:.2f}, {loads[1]:.2f}",
        f"- **Duration**: {seconds / 60:.0f} min",
        "",
    ]
    for kind, expected in (("aa", "no change"), ("slowed", "regression"), ("threads", "regression")):
        mine = [r for r in results if r["kind"] == kind]
        if not mine:
            continue
        counts = Counter(outcome(r) for r in mine)
        tally = ", ".join(f"{n} {word}" for word, n in counts.most_common())
        lines += [f"**{kind}** ({len(mine)} pairs, expected: {expected}): {tally}", ""]
        lines += [
            "| pair | BASE tok/s | NEW tok/s | NEW/BASE | 95 % CI | MDE | floor NEW/BASE | floor 95 % CI "
            "| floor MDE | not 'no change' | outcome | noise |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in mine:
            d, f = r["decode"], r["floor"]
            reasons = "; ".join(f"{side}: {len(x)} reason(s)" for side, x in r["noise"].items() if x) or "-"
            skip = ("no change", "not judged")
            others = ", ".join(f"{k}: {v}" for k, v in r["verdicts"].items() if v not in skip)
            lines.append(
                f"| {r['pair']} | {d['base']:.2f} | {d['new']:.2f} | {d['ratio']:.3f} | {_ci(d)} | {_mde(d)} "
                f"| {f['ratio']:.3f} | {_ci(f)} | {_mde(f)} | {others or '-'} | {outcome(r)} | {reasons} |"
            )
        lines.append("")
    noisy = sorted({reason for r in results for x in r["noise"].values() for reason in x})
    if noisy:
        lines += ["Noise reasons seen:", "", *(f"- {reason}" for reason in noisy[:20]), ""]
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--run-slowed":
        _slowed_main(float(sys.argv[2]), sys.argv[4:] if sys.argv[3:4] == ["--"] else sys.argv[3:])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=20, help="A/A pairs")
    ap.add_argument("--slowed-pairs", type=int, default=5, help="pairs with an injected decode slowdown")
    ap.add_argument("--slowdown", type=float, default=0.10, help="injected slowdown of each decode step")
    ap.add_argument("--thread-pairs", type=int, default=1, help="pairs of default threads against 1 thread")
    ap.add_argument("--runs", type=int, default=1, help="benchmark runs (processes) per side of a pair")
    ap.add_argument(
        "--out", type=Path, default=None, help="folder for receipts and results (default: a temp)"
    )
    ap.add_argument("--ignore-noise", action="store_true", help="judge noisy runs' timings anyway")
    ap.add_argument("--log", type=Path, default=None, help="also write the markdown summary here")
    ap.add_argument("extra", nargs="*", help="after --: extra `benchmark` options for every run")
    args = ap.parse_args()
    out = args.out or Path(f"/tmp/aa-experiment-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}")
    out.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python benchmarks/aa_experiment.py", *sys.argv[1:]])
    start, load_start = time.monotonic(), _load()
    results = []
    plan = [("aa", args.pairs), ("slowed", args.slowed_pairs), ("threads", args.thread_pairs)]
    with (out / "pairs.jsonl").open("a") as log:
        for kind, count in plan:
            for i in range(count):
                result = run_pair(out, kind, i, args.extra, args)
                results.append(result)
                log.write(json.dumps(result) + "\n")
                log.flush()
                print(
                    f"{kind} {i}: {outcome(result)} (decode ratio {result['decode']['ratio']:.3f})",
                    file=sys.stderr,
                )
    text = summary(results, command, (load_start, _load()), time.monotonic() - start)
    print(text)
    if args.log is not None:
        args.log.write_text(text + "\n")


if __name__ == "__main__":
    main()
