"""The AVX2 i2s GEMV with 1, 2 or 4 rows per step, streaming a 2B-4T model's matrices from DRAM.

    python benchmarks/gemv_rows_ab.py --threads 2 --rounds 20
    python benchmarks/gemv_rows_ab.py --threads 1 --rounds 14 --rows 2,4 --prefetch 2048,4096

Rows per step trade shared activation loads (more rows: fewer loads per block) against the number of
weight streams each thread reads at once (the rows of a step lie one row apart). Every variant is built
from `avx2._rows_dot_intrinsic` and checked equal to the kernel in use; the 210 matrices of 30 layers (random
valid codes, 521 MB, model order: q, k, v, o, gate, up, down) are swept once per variant and round, the
variants in turn. Prints GB/s of weight bytes per variant and its ratio to the first one per round.
"""

import argparse
import statistics
import time

import numba
import numpy as np
from numba import njit, prange

from engine.kernels import avx2, ternary
from engine.presets import get_preset
from engine.trace import Trace

MODEL = get_preset("2b-4t")


def gemv(nrows: int):
    """An i2s GEMV that takes `nrows` rows per step (rows % nrows == 0), float math as the kernel in use."""
    dot = avx2._rows_dot_intrinsic(nrows, False)

    @njit(parallel=True)
    def run(w, q, out, plan):
        sq = ternary._qsum_total(q)
        for c in prange(w.shape[0] // nrows):
            sums = dot(w, c * nrows, q, plan)
            for j in range(nrows):
                out[c * nrows + j] = np.float32(sums[j] - sq)

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--rows", default="4,2,1", help="rows per step to compare; the first is the reference")
    ap.add_argument("--prefetch", default="4096,4096", help="prefetch bytes for hidden- and ffn-column rows")
    args = ap.parse_args()
    numba.set_num_threads(args.threads)
    rng = np.random.default_rng(1)
    shapes = list(MODEL.matrix_shapes().values())  # forward order
    widths = (MODEL.hidden, MODEL.ffn)
    mats = [
        rng.integers(0, 256, (r, c // 128, 32), dtype=np.uint8)
        for _ in range(MODEL.n_layers)
        for r, c in shapes
    ]
    nbytes = sum(m.nbytes for m in mats)
    qs = {c: rng.integers(-128, 128, (c // 128, 4, 32), dtype=np.int8) for c in widths}
    outs = {r: np.zeros(r, np.float32) for r, _ in shapes}
    plans = dict(zip(widths, (np.array([int(d)]) for d in args.prefetch.split(",")), strict=True))
    variants = {int(n): gemv(int(n)) for n in args.rows.split(",")}

    check, cols = mats[1], mats[1].shape[1] * 128  # the K matrix
    want = np.zeros(check.shape[0], np.float32)
    one = np.float32(1)
    avx2.i2s_gemv_avx2(check, one, qs[cols], one, want, cols, Trace().counts, plans[cols])
    for n, run in variants.items():
        run(check, qs[cols], outs[check.shape[0]], plans[cols])
        assert np.array_equal(outs[check.shape[0]], want), f"{n} rows per step differ from the kernel in use"

    def sweep(run) -> float:
        start = time.perf_counter()
        for m in mats:
            cols = m.shape[1] * 128
            run(m, qs[cols], outs[m.shape[0]], plans[cols])
        return nbytes / (time.perf_counter() - start) / 1e9

    gbps = {n: [] for n in variants}
    for _ in range(args.rounds):
        for n, run in variants.items():
            gbps[n].append(sweep(run))
    first = gbps[next(iter(gbps))]
    for n, values in gbps.items():
        ratios = [v / f for v, f in zip(values, first, strict=True)]
        print(
            f"{args.threads} threads, {n} rows per step: {statistics.median(values):.1f} GB/s, "
            f"ratio {statistics.median(ratios):.3f} ({min(ratios):.2f}-{max(ratios):.2f})"
        )


if __name__ == "__main__":
    main()
