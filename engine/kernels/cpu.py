"""CPU feature detection and the AVX-512 VNNI variant of the microsoft I2_S GEMV.

Portable numba reaches ~40 GMAC/s on the i2s GEMV here (int16 multiplies). The VNNI variant is a numba
@intrinsic whose LLVM IR loads 32 packed bytes per 128-value block, unpacks the four 2-bit planes with vector
shift/and into unsigned bytes and feeds them with the signed int8 activations to
`llvm.x86.avx512.vpdpbusd.256` (four independent <8 x i32> accumulators, one per bit plane). vpdpbusd takes
unsigned x signed bytes, which is exactly the code x q product of the `sum code*q - sum q` formulation, so the
result is the same exact integer as the portable kernel's. It is chosen only when LLVM reports avx512vnni and
avx512vl for the host; otherwise the portable kernel runs. Both add to the same trace row (i2s_gemv).
"""

from collections.abc import Callable
from functools import lru_cache

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from engine.kernels import ternary
from engine.trace import kid

_I2S_GEMV = kid("i2s_gemv")
VNNI_FEATURES = ("avx512vnni", "avx512vl")


@lru_cache(maxsize=1)
def host_features() -> frozenset[str]:
    """Features LLVM sees on this CPU (names without the sign, e.g. 'avx512vnni')."""
    import llvmlite.binding as llvm

    raw = llvm.get_host_cpu_features()
    return frozenset(name[1:] for name in raw.flatten().split(",") if name.startswith("+"))


def has_vnni() -> bool:
    return all(f in host_features() for f in VNNI_FEATURES)


@intrinsic
def _row_dot_vnni(typingctx, w, r, q):
    """int32 sum over row r of code * q: w uint8[rows, nb, 32] and q int8[nb, 4, 32], both C-contiguous."""
    ok = (
        isinstance(w, types.Array)
        and isinstance(q, types.Array)
        and w.dtype == types.uint8
        and q.dtype == types.int8
        and w.ndim == 3
        and q.ndim == 3
        and w.layout == "C"
        and q.layout == "C"
        and isinstance(r, types.Integer)
    )
    if not ok:
        return None

    def codegen(context, builder, sig, args):
        i8x32 = ir.VectorType(ir.IntType(8), 32)
        i32x8 = ir.VectorType(ir.IntType(32), 8)
        i64 = ir.IntType(64)
        dpbusd = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(i32x8, [i32x8, i32x8, i32x8]), "llvm.x86.avx512.vpdpbusd.256"
        )
        wary = context.make_array(sig.args[0])(context, builder, args[0])
        qary = context.make_array(sig.args[2])(context, builder, args[2])
        nb = builder.extract_value(wary.shape, 1)
        row = context.cast(builder, args[1], sig.args[1], types.int64)
        wrow = builder.gep(wary.data, [builder.mul(row, builder.mul(nb, i64(32)))])
        accs = [cgutils.alloca_once_value(builder, ir.Constant(i32x8, None)) for _ in range(4)]
        three = ir.Constant(i8x32, [3] * 32)
        with cgutils.for_range(builder, nb) as loop:
            k = loop.index
            wptr = builder.bitcast(builder.gep(wrow, [builder.mul(k, i64(32))]), i8x32.as_pointer())
            wbytes = builder.load(wptr, align=1)
            for g in range(4):
                shift = ir.Constant(i8x32, [6 - 2 * g] * 32)
                codes = builder.and_(builder.lshr(wbytes, shift), three)
                qoff = builder.add(builder.mul(k, i64(128)), i64(32 * g))
                qptr = builder.bitcast(builder.gep(qary.data, [qoff]), i8x32.as_pointer())
                qv = builder.load(qptr, align=1)
                acc = builder.load(accs[g])
                acc = builder.call(dpbusd, [acc, builder.bitcast(codes, i32x8), builder.bitcast(qv, i32x8)])
                builder.store(acc, accs[g])
        total = builder.add(
            builder.add(builder.load(accs[0]), builder.load(accs[1])),
            builder.add(builder.load(accs[2]), builder.load(accs[3])),
        )
        result = builder.extract_element(total, ir.IntType(32)(0))
        for lane in range(1, 8):
            result = builder.add(result, builder.extract_element(total, ir.IntType(32)(lane)))
        return result

    return types.int32(w, r, q), codegen


@njit(cache=True, parallel=True)
def i2s_gemv_vnni(w, scale, q, s, out, cols, counts):
    """Same contract and result as ternary.i2s_gemv; the block sums run on vpdpbusd."""
    rows = w.shape[0]
    ternary._count(counts, _I2S_GEMV, rows, cols, 1)
    sq = ternary._qsum_total(q)
    for r in prange(rows):
        acc = _row_dot_vnni(w, r, q)
        out[r] = np.float32(acc - sq) / s * scale


def select_i2s_gemv(prefer: str = "auto") -> tuple[Callable, str]:
    """(kernel, variant) for the microsoft I2_S GEMV: "avx512vnni" when the host has it, else "portable"."""
    if prefer != "portable" and has_vnni():
        return i2s_gemv_vnni, "avx512vnni"
    return ternary.i2s_gemv, "portable"
