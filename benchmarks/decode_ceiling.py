"""Where a decode step stands between the kernels' compute ceiling and the memory: one process, interleaved.

For the 2b-4t i2s preset at the given thread count, rounds alternate three measurements so that the host's
slow spells fall on all of them alike:
- `decode`: model.decode steps (positions 32 onwards, reset every round);
- `matrices` / `logits`: the same 210 matrices through `matvec` back to back, then the int8 logits, each read
  from DRAM (850 MB per sweep, far beyond the cache): what the big kernels take with nothing between them;
- `warm`: each matrix shape's GEMV called again and again on one matrix held in cache: the compute ceiling,
  the speed the kernel reaches when memory costs nothing.
Prints medians (GB/s of weight bytes) and the step's time outside the big kernels (decode - matrices -
logits). Compare the ceilings with an independent reader (`benchmarks/membw.sh`) at the same threads:

    python benchmarks/decode_ceiling.py --threads 2 --rounds 12 --json
"""

import argparse
import json
import statistics
import time

import numpy as np

from engine.kernels import matvec
from engine.model import load_model
from engine.synth import ensure_preset_model


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--steps", type=int, default=4, help="decode steps per round")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    model = load_model(ensure_preset_model("2b-4t", "i2s"), threads=args.threads)
    model.warmup()
    mats = list(model._matrices.values())
    matrix_bytes = sum(m.nbytes_read for m in mats)
    logit_bytes = model.weight_bytes_per_token - matrix_bytes
    rng = np.random.default_rng(0)
    q = {c: rng.integers(-127, 128, c, dtype=np.int8) for c in {m.cols for m in mats}}
    out = {r: np.zeros(r, np.float32) for r in {m.rows for m in mats}}
    counts = model.trace.counts
    x_last = model._dec.x[0:1]
    shapes = {(m.rows, m.cols): m for m in mats}
    decode, matrices, logits = [], [], []
    warm: dict[str, list[float]] = {f"{r}x{c}": [] for r, c in shapes}
    prompt = list(range(1, 33))
    for _ in range(args.rounds):
        model.reset()
        model.prefill(prompt)
        for i in range(args.steps):
            start = time.perf_counter()
            model.decode(5 + i)
            decode.append(time.perf_counter() - start)
        start = time.perf_counter()
        for m in mats:
            matvec(m, q[m.cols], 1.0, out[m.rows], counts)
        mid = time.perf_counter()
        model._logits_int8(x_last)
        matrices.append(mid - start)
        logits.append(time.perf_counter() - mid)
        for (r, c), m in shapes.items():
            matvec(m, q[c], 1.0, out[r], counts)  # into the cache
            calls = []
            for _ in range(20):
                start = time.perf_counter()
                matvec(m, q[c], 1.0, out[r], counts)
                calls.append(time.perf_counter() - start)
            warm[f"{r}x{c}"].append(m.nbytes_read / min(calls) / 1e9)
    step, mat, lg = _median_ms(decode), _median_ms(matrices), _median_ms(logits)
    result = {
        "threads": args.threads,
        "rounds": args.rounds,
        "decode_ms": step,
        "decode_tok_per_s": 1e3 / step,
        "decode_p10_ms": float(np.percentile(decode, 10)) * 1e3,
        "matrices_ms": mat,
        "matrices_gb_per_s": matrix_bytes / mat / 1e6,
        "logits_ms": lg,
        "logits_gb_per_s": logit_bytes / lg / 1e6,
        "outside_ms": step - mat - lg,
        "weight_bytes_per_token": model.weight_bytes_per_token,
        "warm_gb_per_s": {k: statistics.median(v) for k, v in warm.items()},
    }
    if args.json:
        print(json.dumps(result, indent=1))
        return
    for k, v in result.items():
        print(f"{k}: {v:.2f}" if isinstance(v, float) else f"{k}: {v}")


if __name__ == "__main__":
    main()
