"""Seconds of one prefill and of each kernel in it (summed over the layers), for two trees A/B.

Run from a checkout (PYTHONPATH selects which one, so two trees can be compared interleaved):

    python benchmarks/prefill_profile.py --threads 2 --tokens 128
    python benchmarks/prefill_profile.py --threads 1 --gguf ~/.cache/bitnet-harness/models/<file>.gguf

Each round resets the model and runs the forward pass of `--tokens` prompt tokens with every kernel timed
(`Model.prefill` with a profile); prints one JSON record with the median round (by wall time): wall and
process CPU seconds, tokens per second, and the per-kernel seconds of that round.
"""

import argparse
import json
import pathlib
import time

import numpy as np

from engine.model import load_model
from engine.synth import ensure_preset_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--gguf", type=pathlib.Path, help="default: the 2b-4t i2s preset")
    args = ap.parse_args()
    path = args.gguf or ensure_preset_model("2b-4t", "i2s")
    model = load_model(path, threads=args.threads)
    jit = model.warmup()
    ids = np.array([(i * 104729) % model.config.vocab_size for i in range(args.tokens)], np.int64)
    rounds = []
    for _ in range(args.rounds):
        model.reset()
        report: dict = {}
        wall, cpu = time.perf_counter(), time.process_time()
        model.prefill(ids, profile=report, by_kernel=True)
        rounds.append((time.perf_counter() - wall, time.process_time() - cpu, report))
    wall, cpu, report = sorted(rounds, key=lambda r: r[0])[len(rounds) // 2]
    record = {
        "gguf": path.name,
        "threads": args.threads,
        "tokens": args.tokens,
        "jit_s": jit,
        "load_average": open("/proc/loadavg").read().split()[:3],
        "wall_s": wall,
        "cpu_s": cpu,
        "tok_s": args.tokens / wall,
        "wall_s_rounds": [r[0] for r in rounds],
        "kernels": {k: v for k, v in report.items() if k != "layers"},
    }
    print(json.dumps(record, default=float))


if __name__ == "__main__":
    main()
