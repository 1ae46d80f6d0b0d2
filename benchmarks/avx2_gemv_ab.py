"""The AVX2 i2s GEMV of this tree against another tree's emitter, interleaved in one process.

    git show <commit>:engine/kernels/avx2_ir.py > /tmp/base_ir.py
    python benchmarks/avx2_gemv_ab.py --baseline-ir /tmp/base_ir.py --threads 1 --rows 2560 --cols 6912
    python benchmarks/avx2_gemv_ab.py --baseline-ir /tmp/base_ir.py --rows 40960 --cols 6912 --prefetch 8192

Both kernels are built from their module's `rows_dot` over the i2s GEMV's I2S_GEMV_ROWS rows per step and
run over the same random ternary matrix (valid codes only); their int32 row sums are checked equal to
numpy's first.
Each round times `--calls` calls of each kernel in turn and keeps the fastest call of each: on a shared
machine the fastest call is the one least disturbed. Prints one JSON record (microseconds, GB/s of weight
bytes, the baseline / this-tree ratio per round).
"""

import argparse
import importlib.util
import json
import time

import numba
import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic

from engine.kernels import avx2, avx2_ir, intrinsic_args

ROWS = avx2.I2S_GEMV_ROWS  # rows per step, as in the kernel in use


def load_emitters(path: str):
    spec = importlib.util.spec_from_file_location("baseline_avx2_ir", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rows_intrinsic(emit):
    """I2S_GEMV_ROWS int32 row sums of code * q from the emitter `emit` (avx2_ir.rows_dot's signature)."""
    ret = types.UniTuple(types.int32, ROWS)

    def typer(typingctx, w, r0, q, plan):
        def codegen(context, builder, sig, args):
            wary, row, qary, plan_ary = (intrinsic_args.arg(context, builder, sig, args, i) for i in range(4))
            wptrs = avx2._row_ptrs(builder, wary, row, ROWS)
            nb = builder.extract_value(wary.shape, 1)
            qptr = builder.bitcast(qary.data, avx2_ir.I8.as_pointer())
            distance = avx2._distance(builder, plan_ary)
            vecs = emit(builder, wptrs, qptr, nb, distance)
            return context.make_tuple(builder, ret, [avx2_ir.hsum(builder, v) for v in vecs])

        return ret(w, r0, q, plan), codegen

    return intrinsic(typer)


def gemv(rows_dot):
    @njit(parallel=True)
    def run(w, q, out, plan):
        for c in prange(w.shape[0] // ROWS):
            sums = rows_dot(w, c * ROWS, q, plan)
            for j in range(ROWS):
                out[c * ROWS + j] = sums[j]

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline-ir", required=True, help="an avx2_ir.py of the tree to compare against")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rows", type=int, default=2560, help="a multiple of I2S_GEMV_ROWS")
    ap.add_argument("--cols", type=int, default=6912, help="a multiple of 128")
    ap.add_argument("--prefetch", type=int, default=0, help="prefetch distance in bytes (0 = none)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=0, help="calls per round (default: ~200 MB of weights)")
    args = ap.parse_args()
    if args.rows % ROWS or args.cols % 128:
        raise SystemExit(f"avx2_gemv_ab: rows must be a multiple of {ROWS} and cols of 128")
    numba.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 3, size=(args.rows, args.cols // 128, 4, 32), dtype=np.uint8)  # [r, k, g, b]
    w = np.zeros((args.rows, args.cols // 128, 32), np.uint8)
    for g in range(4):
        w |= codes[:, :, g, :] << np.uint8(6 - 2 * g)
    q = rng.integers(-128, 128, size=(args.cols // 128, 4, 32), dtype=np.int8)
    qflat = q.reshape(-1).astype(np.float64)  # float64 sums of these sizes are exact
    chunks = [codes[i : i + 1024].reshape(-1, args.cols) for i in range(0, args.rows, 1024)]
    want = np.concatenate([c.astype(np.float64) @ qflat for c in chunks]).astype(np.int64)
    plan = np.array([args.prefetch], np.int64)
    kernels = {
        "baseline": gemv(rows_intrinsic(load_emitters(args.baseline_ir).rows_dot)),
        "this": gemv(rows_intrinsic(avx2_ir.rows_dot)),
    }
    out = np.zeros(args.rows, np.int32)
    for name, run in kernels.items():
        out[:] = 0
        run(w, q, out, plan)
        if not np.array_equal(out, want):
            raise SystemExit(f"avx2_gemv_ab: {name} kernel's sums differ from numpy's")
    calls = args.calls or max(3, int(2e8 // w.nbytes))
    best = {name: [] for name in kernels}
    for _ in range(args.rounds):
        for name, run in kernels.items():
            fastest = float("inf")
            for _ in range(calls):
                start = time.perf_counter()
                run(w, q, out, plan)
                fastest = min(fastest, time.perf_counter() - start)
            best[name].append(fastest)
    ratios = [b / t for b, t in zip(best["baseline"], best["this"], strict=True)]
    record = {
        "threads": args.threads,
        "rows": args.rows,
        "cols": args.cols,
        "weight_mb": w.nbytes / 1e6,
        "prefetch": args.prefetch,
        "calls_per_round": calls,
        "load_average": open("/proc/loadavg").read().split()[:3],
        **{f"{n}_us_min": min(t) * 1e6 for n, t in best.items()},
        **{f"{n}_gb_s_best": w.nbytes / min(t) / 1e9 for n, t in best.items()},
        "ratio_per_round": [round(r, 3) for r in ratios],
        "ratio_median": float(np.median(ratios)),
    }
    print(json.dumps(record))


if __name__ == "__main__":
    main()
