"""The AVX2 prefill GEMMs of this tree against another tree's emitters, interleaved in one process.

    git show <commit>:engine/kernels/avx2_ir.py > /tmp/base_ir.py
    python benchmarks/avx2_gemm_ab.py --baseline-ir /tmp/base_ir.py --threads 1 --rows 6912 --cols 2560
    python benchmarks/avx2_gemm_ab.py --baseline-ir /tmp/base_ir.py --kernel blk --threads 2

"this" is the tree's own kernel (avx2.i2s_gemm_avx2 or avx2.i2s_blk_gemm_avx2); "baseline" is the same
kernel body built over the other emitter module's `row_tokens_dot` / `row_blk_tokens` as that tree called them
(one row against 8 tokens, row chunks in parallel, token groups inside a chunk). Both run over one random
ternary matrix (valid codes only) and 128 tokens, and must give the portable kernel's result bit for bit
first. Each round times `--calls` calls of each kernel in turn and keeps the fastest (the least disturbed on
a shared machine): CPU seconds at 1 thread (less disturbed by other processes than wall time), wall seconds
otherwise. Prints one JSON record: medians and spread per kernel over the rounds, GMAC/s at the median, the
baseline / this ratio per round and its median.
"""

import argparse
import json
import time

import numba
import numpy as np
from avx2_gemv_ab import load_emitters  # this folder is on sys.path when the script runs
from numba import njit, prange, types
from numba.extending import intrinsic

from engine.kernels import avx2, intrinsic_args, ternary
from engine.trace import Trace

BASE_TOKENS = 8  # tokens per step of the baseline tree's GEMMs


def tokens_intrinsic(ir, ntok):
    """int32 sums of row r against tokens t0 .. t0 + ntok - 1 from the baseline's row_tokens_dot."""
    ret = types.UniTuple(types.int32, ntok)

    def typer(typingctx, w, r, q, t0):
        def codegen(context, builder, sig, args):
            wary, row, qary, tok = (intrinsic_args.arg(context, builder, sig, args, i) for i in range(4))
            wptr = avx2._row_ptrs(builder, wary, row, 1)[0]
            nb = builder.extract_value(wary.shape, 1)
            qptrs = avx2._row_ptrs(builder, qary, tok, ntok)
            vecs = ir.row_tokens_dot(builder, wptr, qptrs, ir.I64(0), nb)
            return context.make_tuple(builder, ret, [ir.hsum(builder, v) for v in vecs])

        return ret(w, r, q, t0), codegen

    return intrinsic(typer)


def blk_tokens_intrinsic(ir, ntok):
    """float32 per token from the baseline's row_blk_tokens (qsum transposed as avx2._qsum_transposed)."""
    ret = types.UniTuple(types.float32, ntok)

    def typer(typingctx, w, d, r, q, t0, qsum):
        def codegen(context, builder, sig, args):
            wary, dary, row, qary, tok, sumary = (
                intrinsic_args.arg(context, builder, sig, args, i) for i in range(6)
            )
            nsum = builder.extract_value(dary.shape, 1)
            wptr = avx2._row_ptrs(builder, wary, row, 1)[0]
            drow = builder.gep(dary.data, [builder.mul(row, nsum)])
            stride = builder.extract_value(qary.shape, 0)
            sptr = builder.gep(sumary.data, [tok])
            qptrs = avx2._row_ptrs(builder, qary, tok, ntok)
            acc = ir.row_blk_tokens(builder, wptr, drow, qptrs, sptr, stride, nsum)
            return avx2._lane_tuple(context, builder, ret, acc, ntok)

        return ret(w, d, r, q, t0, qsum), codegen

    return intrinsic(typer)


@njit
def store_tokens(out, r, t, sums, ntok, qsum, s, scale):
    for j in range(ntok):
        out[t + j, r] = np.float32(sums[j] - qsum[t + j]) / s[t + j] * scale


@njit
def store_blk_tokens(out, r, t, sums, ntok, s):
    for j in range(ntok):
        out[t + j, r] = sums[j] / s[t + j]


def baseline_kernel(ir, blk: bool):
    """The GEMM of the baseline tree: row chunks in parallel, token groups inside a chunk, a row a step.

    `x` is the tensor scale (I2_S) or the scales d [rows, cols / 256] (blk); qsum as the kernel's contract.
    """
    if blk:
        row8, row1 = blk_tokens_intrinsic(ir, BASE_TOKENS), blk_tokens_intrinsic(ir, 1)

        @njit
        def prepare(q, qsum):
            avx2._qsum_transposed(q, qsum)

        @njit
        def step(w, x, r, q, t, s, out, qsum, wide):
            if wide:
                store_blk_tokens(out, r, t, row8(w, x, r, q, t, qsum), BASE_TOKENS, s)
            else:
                store_blk_tokens(out, r, t, row1(w, x, r, q, t, qsum), 1, s)

    else:
        row8, row1 = tokens_intrinsic(ir, BASE_TOKENS), tokens_intrinsic(ir, 1)

        @njit
        def prepare(q, qsum):
            for t in range(q.shape[0]):
                qsum[t] = ternary._qsum_total(q[t])

        @njit
        def step(w, x, r, q, t, s, out, qsum, wide):
            if wide:
                store_tokens(out, r, t, row8(w, r, q, t), BASE_TOKENS, qsum, s, x)
            else:
                store_tokens(out, r, t, row1(w, r, q, t), 1, qsum, s, x)

    @njit(parallel=True)
    def run(w, x, q, s, out, qsum, cols, counts, plan):
        rows = w.shape[0]
        ntok = q.shape[0]
        prepare(q, qsum)
        full = ntok - ntok % BASE_TOKENS
        for c in prange((rows + ternary.ROW_CHUNK - 1) // ternary.ROW_CHUNK):
            r1 = min(rows, (c + 1) * ternary.ROW_CHUNK)
            for t in range(0, full, BASE_TOKENS):
                for r in range(c * ternary.ROW_CHUNK, r1):
                    step(w, x, r, q, t, s, out, qsum, True)
            for t in range(full, ntok):
                for r in range(c * ternary.ROW_CHUNK, r1):
                    step(w, x, r, q, t, s, out, qsum, False)

    return run


def at_offset(a: np.ndarray, offset: int) -> np.ndarray:
    """A copy of `a` whose data starts `offset` bytes past a 64-byte boundary (split loads cost extra)."""
    raw = np.empty(a.nbytes + 128, np.uint8)
    start = (-raw.ctypes.data) % 64 + offset
    out = raw[start : start + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


def spread(values: list[float]) -> dict:
    return {"median": float(np.median(values)), "min": min(values), "max": max(values)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline-ir", required=True, help="an avx2_ir.py of the tree to compare against")
    ap.add_argument("--kernel", choices=("i2s", "blk"), default="i2s", help="blk: the TQ2_0 / TQ1_0 GEMM")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rows", type=int, default=2560)
    ap.add_argument("--cols", type=int, default=2560, help="a multiple of 256")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=1, help="calls per kernel and round; the fastest counts")
    ap.add_argument(
        "--q-offset", type=int, default=0, help="bytes past a 64-byte boundary the activations start at"
    )
    args = ap.parse_args()
    if args.cols % 256:
        raise SystemExit("avx2_gemm_ab: cols must be a multiple of 256")
    numba.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    nb = args.cols // 128
    w = rng.integers(0, 256, size=(args.rows, nb, 32), dtype=np.uint8)
    w &= ~((w >> 1) & w & np.uint8(0x55))  # clears the low bit of every code 3: codes 0..2 only
    q = at_offset(rng.integers(-128, 128, size=(args.tokens, nb, 4, 32), dtype=np.int8), args.q_offset)
    s = rng.uniform(0.5, 200.0, size=args.tokens).astype(np.float32)
    counts = Trace().counts
    plan = np.zeros(1, np.int64)  # the GEMMs do not prefetch
    base = load_emitters(args.baseline_ir)
    if args.kernel == "i2s":
        scale = np.float32(0.7)
        qsum = np.zeros(args.tokens, np.int32)
        operands = (w, scale, q, s)
        portable = lambda out: ternary.i2s_gemm(w, scale, q, s, out, qsum, args.cols, counts)  # noqa: E731
        kernels = {"baseline": baseline_kernel(base, False), "this": avx2.i2s_gemm_avx2}
    else:
        d = rng.uniform(0.01, 2.0, size=(args.rows, args.cols // 256)).astype(np.float32)
        qsum = np.zeros((args.tokens, args.cols // 256), np.int32)
        operands = (w, d, q, s)
        portable = lambda out: ternary.i2s_blk_gemm(w, d, q, s, out, qsum, args.cols, counts)  # noqa: E731
        kernels = {"baseline": baseline_kernel(base, True), "this": avx2.i2s_blk_gemm_avx2}
    want = np.zeros((args.tokens, args.rows), np.float32)
    portable(want)
    out = np.zeros_like(want)
    jit = {}
    for name, run in kernels.items():
        out[:] = np.nan
        start = time.perf_counter()
        run(*operands, out, qsum, args.cols, counts, plan)
        jit[name] = time.perf_counter() - start
        if not np.array_equal(out, want):
            raise SystemExit(f"avx2_gemm_ab: the {name} kernel differs from the portable kernel")
    clock = time.process_time if args.threads == 1 else time.perf_counter
    times = {name: [] for name in kernels}
    for _ in range(args.rounds):
        for name, run in kernels.items():
            fastest = float("inf")
            for _ in range(args.calls):
                start = clock()
                run(*operands, out, qsum, args.cols, counts, plan)
                fastest = min(fastest, clock() - start)
            times[name].append(fastest)
    macs = args.rows * args.cols * args.tokens
    ratios = [b / t for b, t in zip(times["baseline"], times["this"], strict=True)]
    record = {
        "kernel": args.kernel,
        "threads": args.threads,
        "clock": "cpu" if args.threads == 1 else "wall",
        "rows": args.rows,
        "cols": args.cols,
        "tokens": args.tokens,
        "q_offset": args.q_offset,
        "calls_per_round": args.calls,
        "first_call_s": jit,
        "load_average": open("/proc/loadavg").read().split()[:3],
        "seconds": {n: spread(t) for n, t in times.items()},
        "gmac_s": {n: macs / float(np.median(t)) / 1e9 for n, t in times.items()},
        "baseline_over_this": {"median": float(np.median(ratios)), "rounds": [round(r, 3) for r in ratios]},
    }
    print(json.dumps(record))


if __name__ == "__main__":
    main()
