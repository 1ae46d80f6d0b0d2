"""Q, K and V (and gate, up) as one parallel region instead of one each: measured, not wired into the model.

A decode step runs one OpenMP parallel region per matrix (7 per layer) plus attention and the logits. This
script times, on the real 2B-4T shapes with random ternary weights, the three Q/K/V GEMVs (AVX2 kernel) called
one after the other against one kernel whose parallel loop walks the row tiles of all three, interleaved in
one process, and reports medians and spread; results are checked equal. Run with --threads 1 and 2:

    python benchmarks/grouped_gemv.py --threads 2 --rounds 200
"""

import argparse
import json
import statistics
import time

import numba
import numpy as np
from numba import njit, prange

from engine.formats import FORMATS
from engine.kernels import avx2, matvec, prepare_matrix, ternary
from engine.trace import Trace

ROWS = avx2.I2S_GEMV_ROWS  # rows per step, as in the i2s GEMV in use


@njit(cache=True, parallel=True)
def _gemv3(w0, w1, w2, q, sq, outs, plan):
    """Exact int32 row sums minus sq of three matrices in one parallel loop over their row tiles."""
    t0 = w0.shape[0] // ROWS
    t1 = t0 + w1.shape[0] // ROWS
    t2 = t1 + w2.shape[0] // ROWS
    for c in prange(t2):
        if c < t0:
            r = ROWS * c
            a = avx2._rows_dot2(w0, r, q, plan)
            o = 0
        elif c < t1:
            r = ROWS * (c - t0)
            a = avx2._rows_dot2(w1, r, q, plan)
            o = w0.shape[0]
        else:
            r = ROWS * (c - t1)
            a = avx2._rows_dot2(w2, r, q, plan)
            o = w0.shape[0] + w1.shape[0]
        for i in range(ROWS):
            outs[o + r + i] = np.float32(a[i] - sq)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    numba.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    shapes = [(2560, 2560), (640, 2560), (640, 2560)]
    layers = 30  # a layer's worth of weights per call, 30 layers cycled: weights come from DRAM as in decode
    mats = []
    for _ in range(layers):
        group = []
        for rows, cols in shapes:
            values = rng.integers(-1, 2, size=(rows, cols), dtype=np.int8)
            group.append(
                prepare_matrix("i2s", FORMATS["i2s"].pack(values, np.float32(1)), rows, cols, variant="avx2")
            )
        mats.append(group)
    q = rng.integers(-127, 128, size=2560, dtype=np.int8)
    qb = q.reshape(20, 4, 32)
    sq = ternary._qsum_total(qb)
    counts = Trace().counts
    outs = [np.zeros(r, np.float32) for r, _ in shapes]
    fused = np.zeros(sum(r for r, _ in shapes), np.float32)

    def separate(layer):
        for m, out in zip(mats[layer], outs, strict=True):
            matvec(m, q, 1.0, out, counts)

    def grouped(layer):
        w = [m.arrays["w"] for m in mats[layer]]
        _gemv3(w[0], w[1], w[2], qb, sq, fused, mats[layer][0].prefetch.plan)

    separate(0)
    grouped(0)
    assert np.array_equal(np.concatenate(outs), fused)  # scale 1.0, s = 1.0: the same exact sums
    times = {"separate": [], "grouped": []}
    for i in range(args.rounds):
        layer = i % layers
        for name, fn in (("separate", separate), ("grouped", grouped)):
            start = time.perf_counter()
            fn(layer)
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    if args.json:
        spread = {name: [float(x) for x in np.percentile(t, [10, 90])] for name, t in times.items()}
        print(json.dumps({"threads": args.threads, "median_seconds": medians, "p10_p90_seconds": spread}))
        return
    for name, t in times.items():
        q10, q50, q90 = np.percentile(t, [10, 50, 90]) * 1e6
        print(f"{name}: median {q50:.0f} us (p10 {q10:.0f}, p90 {q90:.0f}) per Q/K/V, {args.threads} threads")
    print("median ratio", round(medians["separate"] / medians["grouped"], 2))


if __name__ == "__main__":
    main()
