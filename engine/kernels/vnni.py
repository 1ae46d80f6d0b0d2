"""AVX-512 VNNI variants of the i2s kernel family (numba @intrinsic over llvmlite IR).

Portable numba reaches ~45 GMAC/s on the i2s GEMV here (int16 multiplies). The VNNI variant is a numba
@intrinsic whose LLVM IR loads 32 packed bytes per 128-value block, unpacks the four 2-bit planes with vector
shift/and into unsigned bytes and feeds them with the signed int8 activations to
`llvm.x86.avx512.vpdpbusd.256` (four independent <8 x i32> accumulators, one per bit plane). vpdpbusd takes
unsigned x signed bytes, which is exactly the code x q product of the `sum code*q - sum q` formulation, so the
result is the same exact integer as the portable kernel's. It is chosen only when LLVM reports avx512vnni and
avx512vl for the host; otherwise the portable kernel runs. The same IR serves the I2_S GEMM (each weight
block unpacked once for four tokens), the TQ2_0 / TQ1_0 per-256 block sums and QK256 (codes mapped to
c + (c >> 1) = value + 2, so the sum is corrected by 2 sum q).

Every variant adds to the same trace row as its portable twin and returns bit-identical results.
"""

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from engine.kernels import ternary
from engine.trace import kid

_I2S_GEMV = kid("i2s_gemv")
_I2S_GEMM = kid("i2s_gemm")
_BLK_GEMV = kid("i2s_blk_gemv")
_BLK_GEMM = kid("i2s_blk_gemm")
_QK_GEMV = kid("i2s_qk256_gemv")
_QK_GEMM = kid("i2s_qk256_gemm")


def _arrays_ok(w, q, qdim: int) -> bool:
    return (
        isinstance(w, types.Array)
        and isinstance(q, types.Array)
        and w.dtype == types.uint8
        and q.dtype == types.int8
        and w.ndim == 3
        and q.ndim == qdim
        and w.layout == "C"
        and q.layout == "C"
    )


def _emit_row_dots(context, builder, wary, row, qptrs, accs_per_token, blocks=None, qk256=False):
    """IR: int32 sums over one weight row of code * q for each activation base pointer in `qptrs`.

    `blocks` = (first, count) IR values limits the sum to those 128-value blocks (default: the whole row).
    `qk256` maps each code c to c + (c >> 1) (0, 1, 3, 4: the QK256 value + 2) before the multiply.

    Each token keeps `accs_per_token` independent <8 x i32> accumulators (bit plane g feeds accumulator
    g % accs_per_token), so consecutive vpdpbusd do not wait on each other; each 32-byte weight load and
    its unpacking serve every token.
    """
    i8x32 = ir.VectorType(ir.IntType(8), 32)
    i32x8 = ir.VectorType(ir.IntType(32), 8)
    i64 = ir.IntType(64)
    dpbusd = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(i32x8, [i32x8, i32x8, i32x8]), "llvm.x86.avx512.vpdpbusd.256"
    )
    nb = builder.extract_value(wary.shape, 1)
    wrow = builder.gep(wary.data, [builder.mul(row, builder.mul(nb, i64(32)))])
    zero = ir.Constant(i32x8, None)
    accs = [[cgutils.alloca_once_value(builder, zero) for _ in range(accs_per_token)] for _ in qptrs]
    three = ir.Constant(i8x32, [3] * 32)
    one = ir.Constant(i8x32, [1] * 32)
    first, count = blocks if blocks is not None else (i64(0), nb)
    with cgutils.for_range(builder, count) as loop:
        k = builder.add(first, loop.index)
        wptr = builder.bitcast(builder.gep(wrow, [builder.mul(k, i64(32))]), i8x32.as_pointer())
        wbytes = builder.load(wptr, align=1)
        for g in range(4):
            codes = builder.and_(builder.lshr(wbytes, ir.Constant(i8x32, [6 - 2 * g] * 32)), three)
            if qk256:
                codes = builder.add(codes, builder.lshr(codes, one))
            codes = builder.bitcast(codes, i32x8)
            qoff = builder.add(builder.mul(k, i64(128)), i64(32 * g))
            for base, tok_accs in zip(qptrs, accs, strict=True):
                qv = builder.load(builder.bitcast(builder.gep(base, [qoff]), i8x32.as_pointer()), align=1)
                slot = tok_accs[g % accs_per_token]
                acc = builder.call(dpbusd, [builder.load(slot), codes, builder.bitcast(qv, i32x8)])
                builder.store(acc, slot)
    results = []
    for tok_accs in accs:
        total = builder.load(tok_accs[0])
        for slot in tok_accs[1:]:
            total = builder.add(total, builder.load(slot))
        result = builder.extract_element(total, ir.IntType(32)(0))
        for lane in range(1, 8):
            result = builder.add(result, builder.extract_element(total, ir.IntType(32)(lane)))
        results.append(result)
    return results


@intrinsic
def _row_dot_vnni(typingctx, w, r, q):
    """int32 sum over row r of code * q: w uint8[rows, nb, 32] and q int8[nb, 4, 32], both C-contiguous."""
    if not (_arrays_ok(w, q, 3) and isinstance(r, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        wary = context.make_array(sig.args[0])(context, builder, args[0])
        qary = context.make_array(sig.args[2])(context, builder, args[2])
        row = context.cast(builder, args[1], sig.args[1], types.int64)
        return _emit_row_dots(context, builder, wary, row, [qary.data], 4)[0]

    return types.int32(w, r, q), codegen


@intrinsic
def _blocks_dot_vnni(typingctx, w, r, k0, n, q):
    """int32 sum of code * q over blocks k0 .. k0+n-1 of row r (a scale block of the TQ layouts)."""
    ints = all(isinstance(x, types.Integer) for x in (r, k0, n))
    if not (_arrays_ok(w, q, 3) and ints):
        return None

    def codegen(context, builder, sig, args):
        wary = context.make_array(sig.args[0])(context, builder, args[0])
        qary = context.make_array(sig.args[4])(context, builder, args[4])
        row, first, count = (context.cast(builder, args[i], sig.args[i], types.int64) for i in (1, 2, 3))
        return _emit_row_dots(context, builder, wary, row, [qary.data], 4, blocks=(first, count))[0]

    return types.int32(w, r, k0, n, q), codegen


@intrinsic
def _row_dot_qk_vnni(typingctx, w, r, q):
    """int32 sum over row r of (c + (c >> 1)) * q for QK256 codes c."""
    if not (_arrays_ok(w, q, 3) and isinstance(r, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        wary = context.make_array(sig.args[0])(context, builder, args[0])
        qary = context.make_array(sig.args[2])(context, builder, args[2])
        row = context.cast(builder, args[1], sig.args[1], types.int64)
        return _emit_row_dots(context, builder, wary, row, [qary.data], 4, qk256=True)[0]

    return types.int32(w, r, q), codegen


TOKEN_TILE = 4


@intrinsic
def _row_dots_vnni4(typingctx, w, r, q, t0):
    """The sums of row r for tokens t0 .. t0+3 of q int8[T, nb, 4, 32] (each weight block unpacked once)."""
    if not (_arrays_ok(w, q, 4) and isinstance(r, types.Integer) and isinstance(t0, types.Integer)):
        return None
    ret = types.UniTuple(types.int32, TOKEN_TILE)

    def codegen(context, builder, sig, args):
        i64 = ir.IntType(64)
        wary = context.make_array(sig.args[0])(context, builder, args[0])
        qary = context.make_array(sig.args[2])(context, builder, args[2])
        row = context.cast(builder, args[1], sig.args[1], types.int64)
        tok = context.cast(builder, args[3], sig.args[3], types.int64)
        per_token = builder.mul(builder.extract_value(wary.shape, 1), i64(128))
        qptrs = [builder.gep(qary.data, [builder.mul(builder.add(tok, i64(j)), per_token)]) for j in range(4)]
        return context.make_tuple(builder, ret, _emit_row_dots(context, builder, wary, row, qptrs, 2))

    return ret(w, r, q, t0), codegen


@njit(cache=True, parallel=True)
def i2s_gemv_vnni(w, scale, q, s, out, cols, counts):
    """Same contract and result as ternary.i2s_gemv; the block sums run on vpdpbusd."""
    rows = w.shape[0]
    ternary._count(counts, _I2S_GEMV, rows, cols, 1)
    sq = ternary._qsum_total(q)
    for r in prange(rows):
        acc = _row_dot_vnni(w, r, q)
        out[r] = np.float32(acc - sq) / s * scale


@njit(cache=True, parallel=True)
def i2s_gemm_vnni(w, scale, q, s, out, qsum, cols, counts):
    """Same contract and result as ternary.i2s_gemm; rows run on vpdpbusd four tokens at a time."""
    rows = w.shape[0]
    ntok = q.shape[0]
    ternary._count(counts, _I2S_GEMM, rows, cols, ntok)
    for t in range(ntok):
        qsum[t] = ternary._qsum_total(q[t])
    full = ntok - ntok % TOKEN_TILE
    for c in prange((rows + ternary.ROW_CHUNK - 1) // ternary.ROW_CHUNK):
        r0 = c * ternary.ROW_CHUNK
        r1 = min(rows, r0 + ternary.ROW_CHUNK)
        for t in range(0, full, TOKEN_TILE):
            for r in range(r0, r1):
                a0, a1, a2, a3 = _row_dots_vnni4(w, r, q, t)
                out[t, r] = np.float32(a0 - qsum[t]) / s[t] * scale
                out[t + 1, r] = np.float32(a1 - qsum[t + 1]) / s[t + 1] * scale
                out[t + 2, r] = np.float32(a2 - qsum[t + 2]) / s[t + 2] * scale
                out[t + 3, r] = np.float32(a3 - qsum[t + 3]) / s[t + 3] * scale
        for t in range(full, ntok):
            for r in range(r0, r1):
                acc = _row_dot_vnni(w, r, q[t])
                out[t, r] = np.float32(acc - qsum[t]) / s[t] * scale


@njit(cache=True)
def _blk_row_vnni(w, d, r, q, qsum):
    facc = np.float32(0.0)
    for j in range(d.shape[1]):
        a = _blocks_dot_vnni(w, r, 2 * j, 2, q)
        facc = facc + d[r, j] * np.float32(a - qsum[j])
    return facc


@njit(cache=True, parallel=True)
def i2s_blk_gemv_vnni(w, d, q, s, out, qsum, cols, counts):
    """Same contract and result as ternary.i2s_blk_gemv."""
    rows = w.shape[0]
    ternary._count(counts, _BLK_GEMV, rows, cols, 1)
    ternary._qsum_groups(q, qsum, 8)
    for r in prange(rows):
        out[r] = _blk_row_vnni(w, d, r, q, qsum) / s


@njit(cache=True, parallel=True)
def i2s_blk_gemm_vnni(w, d, q, s, out, qsum, cols, counts):
    """Same contract and result as ternary.i2s_blk_gemm."""
    rows = w.shape[0]
    ntok = q.shape[0]
    ternary._count(counts, _BLK_GEMM, rows, cols, ntok)
    for t in range(ntok):
        ternary._qsum_groups(q[t], qsum[t], 8)
    for c in prange((rows + ternary.ROW_CHUNK - 1) // ternary.ROW_CHUNK):
        for t in range(ntok):
            for r in range(c * ternary.ROW_CHUNK, min(rows, (c + 1) * ternary.ROW_CHUNK)):
                out[t, r] = _blk_row_vnni(w, d, r, q[t], qsum[t]) / s[t]


@njit(cache=True, parallel=True)
def i2s_qk256_gemv_vnni(w, q, s, out, cols, counts):
    """Same contract and result as ternary.i2s_qk256_gemv."""
    rows = w.shape[0]
    ternary._count(counts, _QK_GEMV, rows, cols, 1)
    sq2 = np.int32(2 * ternary._qsum_total(q))
    for r in prange(rows):
        out[r] = np.float32(_row_dot_qk_vnni(w, r, q) - sq2) / s


@njit(cache=True, parallel=True)
def i2s_qk256_gemm_vnni(w, q, s, out, qsum, cols, counts):
    """Same contract and result as ternary.i2s_qk256_gemm."""
    rows = w.shape[0]
    ntok = q.shape[0]
    ternary._count(counts, _QK_GEMM, rows, cols, ntok)
    for t in range(ntok):
        qsum[t] = np.int32(2 * ternary._qsum_total(q[t]))
    for c in prange((rows + ternary.ROW_CHUNK - 1) // ternary.ROW_CHUNK):
        for t in range(ntok):
            qt = q[t]
            for r in range(c * ternary.ROW_CHUNK, min(rows, (c + 1) * ternary.ROW_CHUNK)):
                out[t, r] = np.float32(_row_dot_qk_vnni(w, r, qt) - qsum[t]) / s[t]
