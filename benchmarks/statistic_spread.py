"""Which decode statistic moves least between runs of one build? Measured on receipts already written.

    python benchmarks/statistic_spread.py OUT [OUT ...]          # folders written by aa_experiment.py

Takes every unmodified run of the folders (the A/A runs and the plain side of the other pairs; never a slowed
run or a `--threads 1` run), draws A/A pairs of k runs per side from them at random (disjoint runs, seeded),
and prints, per statistic of the pooled decode-step latencies and per k, the spread of log(NEW/BASE) (its
standard deviation) and the share of pairs whose ratio is off by more than 5 %. A statistic whose A/A ratio
is often beyond 5 % cannot give "no change" there, however its interval is built.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

STATISTICS = {
    "mean (decode tok/s)": lambda x: float(np.mean(x)),
    "p50": lambda x: float(np.percentile(x, 50)),
    "p5": lambda x: float(np.percentile(x, 5)),
    "p1 (decode step floor)": lambda x: float(np.percentile(x, 1)),
    "minimum": lambda x: float(np.min(x)),
}


def unmodified_runs(folders: list[Path]) -> list[np.ndarray]:
    """Every decode step of each unmodified run's receipt, one array per run."""
    runs = []
    for folder in folders:
        for path in sorted(folder.glob("*/*/**/*.json")):
            kind, pair = path.relative_to(folder).parts[:2]
            if kind != "aa" and not pair.endswith("-plain"):
                continue
            reps = json.loads(path.read_text())["phases"]["benchmark"]["repetitions"]
            runs.append(np.concatenate([r["decode_seconds"] for r in reps]))
    return runs


def spread(runs: list[np.ndarray], k: int, draws: int, seed: int) -> dict[str, tuple[float, float]]:
    """Per statistic: (sd of log NEW/BASE, share of |NEW/BASE - 1| > 5 %) over A/A pairs of k runs a side."""
    rng = np.random.default_rng(seed)
    logs: dict[str, list[float]] = {name: [] for name in STATISTICS}
    for _ in range(draws):
        pick = rng.choice(len(runs), 2 * k, replace=False)
        base = np.concatenate([runs[i] for i in pick[:k]])
        new = np.concatenate([runs[i] for i in pick[k:]])
        for name, stat in STATISTICS.items():
            logs[name].append(np.log(stat(new) / stat(base)))
    out = {}
    for name, values in logs.items():
        x = np.asarray(values)
        out[name] = (float(np.std(x, ddof=1)), float(np.mean(np.abs(x) > np.log(1.05))))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+", type=Path, help="aa_experiment.py --out folders")
    ap.add_argument("--runs", type=int, nargs="+", default=[1, 2, 3, 5], help="runs per side")
    ap.add_argument("--draws", type=int, default=2000, help="random A/A pairs per runs-per-side")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    runs = unmodified_runs(args.folders)
    if len(runs) < 2 * max(args.runs):
        raise SystemExit(f"{len(runs)} unmodified runs: too few for {max(args.runs)} runs per side")
    print(f"{len(runs)} unmodified runs; {args.draws} random A/A pairs per row\n")
    print("| runs per side | statistic | sd of log NEW/BASE | pairs off by > 5 % |")
    print("| --- | --- | --- | --- |")
    for k in args.runs:
        for name, (sd, off) in spread(runs, k, args.draws, args.seed).items():
            print(f"| {k} | {name} | {sd * 100:.1f} % | {off * 100:.0f} % |")


if __name__ == "__main__":
    main()
