"""Decode steps of the 2b-4t preset with each layer as one compiled call (engine/kernels/decode_block.py)
against the same kernels called step by step from Python, alternating in one process so that a shared
host's drift falls on both alike.

    python benchmarks/decode_block_ab.py --threads 2 --rounds 16

Each round runs 16 decode steps per path from the same position, the paths' order alternating round by
round; with --threads 1 a step is CPU time (time the scheduler gave to other processes is not counted).
The logits of both paths are compared first (they must be bit-identical). Prints each path's median step
and the ratio steps / block round by round (median and range).
"""

import argparse
import json
import statistics
import time

import numpy as np

from engine.model import load_model
from engine.synth import ensure_preset_model

STEPS_PER_ROUND = 16


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=16)
    ap.add_argument("--position", type=int, default=160, help="decode from this many prompt tokens")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    model = load_model(ensure_preset_model("2b-4t", "i2s"), threads=args.threads)
    if model.decode_block is None:
        raise SystemExit("this model's decode runs step by step here: nothing to compare")
    model.warmup()
    vocab = model.config.vocab_size
    model.prefill([(i * 7919) % vocab for i in range(args.position)])
    tokens = [(i * 104729) % vocab for i in range(STEPS_PER_ROUND)]
    clock = time.process_time if args.threads == 1 else time.perf_counter

    def run(block: bool, keep: bool = False) -> tuple[list[float], list[np.ndarray]]:
        model.set_decode_block(block)
        model.pos = args.position
        times, logits = [], []
        for token in tokens:
            start = clock()
            out = model.decode(token)
            times.append(clock() - start)
            if keep:
                logits.append(out.copy())
        return times, logits

    same = all(np.array_equal(a, b) for a, b in zip(run(True, True)[1], run(False, True)[1], strict=True))
    if not same:
        raise SystemExit("the two paths' logits differ")
    medians = {"block": [], "steps": []}
    for r in range(args.rounds):
        for name in ("block", "steps") if r % 2 == 0 else ("steps", "block"):
            medians[name].append(statistics.median(run(name == "block")[0]) * 1e3)
    ratios = [s / b for s, b in zip(medians["steps"], medians["block"], strict=True)]
    result = {
        "threads": args.threads,
        "position": args.position,
        "variant": model.decode_block,
        "clock": clock.__name__,
        "step_ms": {name: statistics.median(v) for name, v in medians.items()},
        "rounds_ms": medians,
        "steps_over_block": {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)},
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for name, v in result["step_ms"].items():
            print(f"{name:6s} {v:7.2f} ms per step (median of round medians)")
        q = result["steps_over_block"]
        print(f"steps / block: {q['median']:.3f} ({q['min']:.3f}-{q['max']:.3f}) over {args.rounds} rounds")


if __name__ == "__main__":
    main()
