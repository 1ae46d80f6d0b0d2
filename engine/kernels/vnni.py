"""AVX-512 VNNI variants of the i2s kernel family (numba @intrinsic over llvmlite IR).

Portable numba reaches ~45 GMAC/s on the i2s GEMV here (int16 multiplies). The VNNI variant is a numba
@intrinsic whose LLVM IR loads 32 packed bytes per 128-value block, unpacks the four 2-bit planes with vector
shift/and into unsigned bytes and feeds them with the signed int8 activations to
`llvm.x86.avx512.vpdpbusd.256` (four independent <8 x i32> accumulators, one per bit plane). vpdpbusd takes
unsigned x signed bytes, which is exactly the code x q product of the `sum code*q - sum q` formulation, so the
result is the same exact integer as the portable kernel's. It is chosen only when LLVM reports avx512vnni and
avx512vl for the host; otherwise the portable kernel runs. The same IR serves the TQ2_0 / TQ1_0 per-256
block sums and QK256 (codes mapped to c + (c >> 1) = value + 2, so the sum is corrected by 2 sum q).

The i2s GEMV and the int8 logits run 512-bit `vpdpbusd.512` over four rows per step with software prefetch
(`emit_rows_dot512`, `_i8_rows_dot512`): one activation load serves four rows, a bit plane costs one AND
instead of shift + AND, and the next tiles' bytes are requested ahead of time (1.3-1.6x on cache-warm
matrices, 1.7x on matrices streamed from DRAM, single thread, over the 256-bit row kernel). The i2s GEMM
(`emit_pair_dots`) puts a block of two rows in one 512-bit register and reuses each unpacked plane for eight
tokens (1.1-1.4x over the 256-bit four-token kernel). The TQ2_0 / TQ1_0 kernels (per-256 fp16 scales) take
the same two paths with one scale block per step: `_rows_blk512` (GEMV, four rows) and `_pair_blk_intrinsic`
(GEMM, two rows x eight tokens) reduce each block's exact int32 sums with a shuffle tree shared by the rows or
tokens, then scale and accumulate in the portable order (GEMV 1.8-2.4x, GEMM 2.3-3.1x over the 256-bit row
kernel, warm, 2 threads).

Every variant adds to the same trace row as its portable twin and returns bit-identical results. This module
holds the @intrinsic typing glue and the njit kernels; the LLVM IR they emit is built in `vnni_ir.py`.
"""

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from engine.kernels import ops, ternary, vnni_ir
from engine.kernels.ir_digest import require_ir_digest
from engine.kernels.vnni_ir import (
    emit_pair_block,
    emit_pair_dots,
    emit_pair_reduce,
    emit_prefetch,
    emit_row_dots,
    emit_rows_dot512,
    emit_sum4,
    pair_rows,
    pick_lanes,
)
from engine.trace import kid

# numba's cache cannot see edits to vnni_ir.py: this file names the emitters it was built with.
IR_SHA256 = "095de12c928df038b3580ef6c723aa15a162e9eff010300caa38367ccec4a54b"
require_ir_digest(vnni_ir, IR_SHA256, "engine/kernels/vnni.py")

_I2S_GEMV = kid("i2s_gemv")
_I2S_GEMM = kid("i2s_gemm")
_BLK_GEMV = kid("i2s_blk_gemv")
_BLK_GEMM = kid("i2s_blk_gemm")
_QK_GEMV = kid("i2s_qk256_gemv")
_QK_GEMM = kid("i2s_qk256_gemm")
_LOGITS_I8 = kid("logits_i8")


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


@intrinsic
def _row_dot_vnni(typingctx, w, r, q):
    """int32 sum over row r of code * q: w uint8[rows, nb, 32] and q int8[nb, 4, 32], both C-contiguous."""
    if not (_arrays_ok(w, q, 3) and isinstance(r, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        wary = context.make_array(sig.args[0])(context, builder, args[0])
        qary = context.make_array(sig.args[2])(context, builder, args[2])
        row = context.cast(builder, args[1], sig.args[1], types.int64)
        return emit_row_dots(context, builder, wary, row, [qary.data], 4)[0]

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
        return emit_row_dots(context, builder, wary, row, [qary.data], 4, blocks=(first, count))[0]

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
        return emit_row_dots(context, builder, wary, row, [qary.data], 4, qk256=True)[0]

    return types.int32(w, r, q), codegen


@njit(cache=True)
def _blk_row_vnni(w, d, r, q, qsum):
    facc = np.float32(0.0)
    for j in range(d.shape[1]):
        a = _blocks_dot_vnni(w, r, 2 * j, 2, q)
        facc = facc + d[r, j] * np.float32(a - qsum[j])
    return facc


@njit(cache=True, parallel=True)
def i2s_blk_gemv_vnni(w, d, q, s, out, qsum, cols, counts):
    """Same contract and result as ternary.i2s_blk_gemv; four rows per step on 512-bit vpdpbusd."""
    rows = w.shape[0]
    ternary._count(counts, _BLK_GEMV, rows, cols, 1)
    ternary._qsum_groups(q, qsum, 8)
    tiles = rows // ROW_TILE
    for c in prange(tiles):
        r = c * ROW_TILE
        f0, f1, f2, f3 = _rows_blk512(w, d, r, q, qsum)
        out[r] = f0 / s
        out[r + 1] = f1 / s
        out[r + 2] = f2 / s
        out[r + 3] = f3 / s
    for r in range(tiles * ROW_TILE, rows):
        out[r] = _blk_row_vnni(w, d, r, q, qsum) / s


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


# ---------------------------------------------------------------- 512-bit variants
ROW_TILE = 4


@intrinsic
def _rows_dot512(typingctx, w, r0, q):
    """int32 sums of rows r0 .. r0+3 of w uint8[rows, nb, 32] against q int8[nb, 4, 32] (512-bit)."""
    if not (_arrays_ok(w, q, 3) and isinstance(r0, types.Integer)):
        return None
    ret = types.UniTuple(types.int32, ROW_TILE)

    def codegen(context, builder, sig, args):
        wary = context.make_array(sig.args[0])(context, builder, args[0])
        qary = context.make_array(sig.args[2])(context, builder, args[2])
        row = context.cast(builder, args[1], sig.args[1], types.int64)
        rows = [builder.add(row, ir.IntType(64)(j)) for j in range(ROW_TILE)]
        return context.make_tuple(builder, ret, emit_rows_dot512(builder, wary, rows, qary.data, True))

    return ret(w, r0, q), codegen


@intrinsic
def _row_dot512(typingctx, w, r, q):
    """int32 sum of row r of w against q (512-bit, one row)."""
    if not (_arrays_ok(w, q, 3) and isinstance(r, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        wary = context.make_array(sig.args[0])(context, builder, args[0])
        qary = context.make_array(sig.args[2])(context, builder, args[2])
        row = context.cast(builder, args[1], sig.args[1], types.int64)
        return emit_rows_dot512(builder, wary, [row], qary.data)[0]

    return types.int32(w, r, q), codegen


@njit(cache=True, parallel=True)
def i2s_gemv_vnni(w, scale, q, s, out, cols, counts):
    """Same contract and result as ternary.i2s_gemv; four rows per step on 512-bit vpdpbusd."""
    rows = w.shape[0]
    ternary._count(counts, _I2S_GEMV, rows, cols, 1)
    sq = ternary._qsum_total(q)
    tiles = rows // ROW_TILE
    for c in prange(tiles):
        r = c * ROW_TILE
        a0, a1, a2, a3 = _rows_dot512(w, r, q)
        out[r] = np.float32(a0 - sq) / s * scale
        out[r + 1] = np.float32(a1 - sq) / s * scale
        out[r + 2] = np.float32(a2 - sq) / s * scale
        out[r + 3] = np.float32(a3 - sq) / s * scale
    for r in range(tiles * ROW_TILE, rows):
        out[r] = np.float32(_row_dot512(w, r, q) - sq) / s * scale


@intrinsic
def _rows_blk512(typingctx, w, d, r0, q, qsum):
    """float32 sums over the 256-value scale blocks j of rows r0 .. r0+3: d[r, j] * (int sum_j - qsum[j]).

    One 512-bit load is one scale block of a row (two 128-value blocks); each block's exact int32 sum comes
    from four vpdpbusd.512 (bit planes unpacked with shift + AND) and a shuffle tree shared by the four rows,
    then the float accumulation runs in the portable kernel's order, so the result is bit-identical.
    """
    float_args = isinstance(d, types.Array) and d.dtype == types.float32 and d.ndim == 2 and d.layout == "C"
    sums_ok = isinstance(qsum, types.Array) and qsum.dtype == types.int32 and qsum.ndim == 1
    if not (_arrays_ok(w, q, 3) and float_args and sums_ok and isinstance(r0, types.Integer)):
        return None
    ret = types.UniTuple(types.float32, ROW_TILE)

    def codegen(context, builder, sig, args):
        i8x32 = ir.VectorType(ir.IntType(8), 32)
        i8x64 = ir.VectorType(ir.IntType(8), 64)
        i32x16 = ir.VectorType(ir.IntType(32), 16)
        i32x4 = ir.VectorType(ir.IntType(32), 4)
        f32x4 = ir.VectorType(ir.FloatType(), 4)
        i64 = ir.IntType(64)
        i32 = ir.IntType(32)
        dp512 = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(i32x16, [i32x16, i32x16, i32x16]), "llvm.x86.avx512.vpdpbusd.512"
        )
        wary = context.make_array(sig.args[0])(context, builder, args[0])
        dary = context.make_array(sig.args[1])(context, builder, args[1])
        qary = context.make_array(sig.args[3])(context, builder, args[3])
        sary = context.make_array(sig.args[4])(context, builder, args[4])
        row0 = context.cast(builder, args[2], sig.args[2], types.int64)
        nb = builder.extract_value(wary.shape, 1)
        nsum = builder.extract_value(dary.shape, 1)
        row_bytes = builder.mul(nb, i64(32))
        rows = [builder.add(row0, i64(j)) for j in range(ROW_TILE)]
        wrows = [builder.gep(wary.data, [builder.mul(r, row_bytes)]) for r in rows]
        drows = [builder.gep(dary.data, [builder.mul(r, nsum)]) for r in rows]
        facc = cgutils.alloca_once_value(builder, ir.Constant(f32x4, None))
        concat = ir.Constant(ir.VectorType(i32, 64), list(range(64)))
        three = ir.Constant(i8x64, [3] * 64)

        def qload(off):
            ptr = builder.gep(qary.data, [off])
            return builder.load(builder.bitcast(ptr, i8x32.as_pointer()), align=1)

        with cgutils.for_range(builder, nsum) as loop:
            j = loop.index
            emit_prefetch(builder, wrows[0], row_bytes, j, ROW_TILE)
            base = builder.mul(j, i64(256))
            qv = []
            for g in range(4):
                lo = qload(builder.add(base, i64(32 * g)))
                hi = qload(builder.add(base, i64(128 + 32 * g)))
                qv.append(builder.bitcast(builder.shuffle_vector(lo, hi, concat), i32x16))
            sums = []
            for wrow in wrows:
                wptr = builder.bitcast(builder.gep(wrow, [builder.mul(j, i64(64))]), i8x64.as_pointer())
                wbytes = builder.load(wptr, align=1)
                acc = ir.Constant(i32x16, None)
                for g in range(4):
                    codes = builder.and_(builder.lshr(wbytes, ir.Constant(i8x64, [6 - 2 * g] * 64)), three)
                    acc = builder.call(dp512, [acc, builder.bitcast(codes, i32x16), qv[g]])
                sums.append(acc)
            total = emit_sum4(builder, sums)
            qs = builder.load(builder.gep(sary.data, [j]))
            one_lane = builder.insert_element(ir.Constant(i32x4, None), qs, i32(0))
            diff = builder.sub(total, pick_lanes(builder, one_lane, one_lane, [0, 0, 0, 0]))
            dv = ir.Constant(f32x4, None)
            for i, drow in enumerate(drows):
                dv = builder.insert_element(dv, builder.load(builder.gep(drow, [j])), i32(i))
            term = builder.fmul(dv, builder.sitofp(diff, f32x4))
            builder.store(builder.fadd(builder.load(facc), term), facc)
        acc = builder.load(facc)
        return context.make_tuple(
            builder, ret, [builder.extract_element(acc, i32(i)) for i in range(ROW_TILE)]
        )

    return ret(w, d, r0, q, qsum), codegen


@intrinsic
def _i8_rows_dot512(typingctx, e, r0, u):
    """int32 sums u . e[r] for rows r0 .. r0+3 of e int8[rows, n] (n % 64 == 0), u uint8[n] (512-bit)."""
    ok = (
        isinstance(e, types.Array)
        and isinstance(u, types.Array)
        and e.dtype == types.int8
        and u.dtype == types.uint8
        and e.ndim == 2
        and u.ndim == 1
        and e.layout == "C"
        and u.layout == "C"
        and isinstance(r0, types.Integer)
    )
    if not ok:
        return None
    ret = types.UniTuple(types.int32, ROW_TILE)

    def codegen(context, builder, sig, args):
        i64 = ir.IntType(64)
        i8x64 = ir.VectorType(ir.IntType(8), 64)
        i32x16 = ir.VectorType(ir.IntType(32), 16)
        dp512 = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(i32x16, [i32x16, i32x16, i32x16]), "llvm.x86.avx512.vpdpbusd.512"
        )
        eary = context.make_array(sig.args[0])(context, builder, args[0])
        uary = context.make_array(sig.args[2])(context, builder, args[2])
        row = context.cast(builder, args[1], sig.args[1], types.int64)
        n = builder.extract_value(eary.shape, 1)
        base = builder.gep(eary.data, [builder.mul(row, n)])
        rptrs = [builder.gep(base, [builder.mul(n, i64(j))]) for j in range(ROW_TILE)]
        accs = [cgutils.alloca_once_value(builder, ir.Constant(i32x16, None)) for _ in range(ROW_TILE)]
        with cgutils.for_range(builder, builder.udiv(n, i64(64))) as loop:
            off = builder.mul(loop.index, i64(64))
            emit_prefetch(builder, base, n, loop.index, ROW_TILE)
            uv = builder.load(builder.bitcast(builder.gep(uary.data, [off]), i8x64.as_pointer()), align=1)
            uv = builder.bitcast(uv, i32x16)
            for rptr, slot in zip(rptrs, accs, strict=True):
                ev = builder.load(builder.bitcast(builder.gep(rptr, [off]), i8x64.as_pointer()), align=1)
                acc = builder.call(dp512, [builder.load(slot), uv, builder.bitcast(ev, i32x16)])
                builder.store(acc, slot)
        sums = []
        for slot in accs:
            v = builder.load(slot)
            total = builder.extract_element(v, ir.IntType(32)(0))
            for lane in range(1, 16):
                total = builder.add(total, builder.extract_element(v, ir.IntType(32)(lane)))
            sums.append(total)
        return context.make_tuple(builder, ret, sums)

    return ret(e, r0, u), codegen


@njit(cache=True, parallel=True)
def logits_i8_vnni(emb_q, emb_s, emb_sum, q, s, u, out, counts):
    """Same contract and result as ops.logits_i8 (hidden % 64 == 0), on 512-bit vpdpbusd, four rows a step.

    vpdpbusd multiplies unsigned by signed bytes: the activations are shifted to u = q + 128 (scratch
    uint8[hidden]) and 128 * emb_sum[r] (the row sums of emb_q, taken at load) is subtracted, which gives the
    same exact int32 dot product as the portable kernel.
    """
    vocab, hidden = emb_q.shape
    inv = np.float32(1.0) / np.float32(s)
    for c in range(hidden):
        u[c] = np.uint8(np.int32(q[c]) + 128)
    tiles = vocab // ROW_TILE
    for t in prange(tiles):
        r = t * ROW_TILE
        a0, a1, a2, a3 = _i8_rows_dot512(emb_q, r, u)
        out[r] = np.float32(a0 - 128 * emb_sum[r]) * emb_s[r] * inv
        out[r + 1] = np.float32(a1 - 128 * emb_sum[r + 1]) * emb_s[r + 1] * inv
        out[r + 2] = np.float32(a2 - 128 * emb_sum[r + 2]) * emb_s[r + 2] * inv
        out[r + 3] = np.float32(a3 - 128 * emb_sum[r + 3]) * emb_s[r + 3] * inv
    for r in range(tiles * ROW_TILE, vocab):
        acc = np.int32(0)
        for c in range(hidden):
            acc += np.int32(emb_q[r, c]) * np.int32(q[c])
        out[r] = np.float32(acc) * emb_s[r] * inv
    ops._count(counts, _LOGITS_I8, vocab, vocab * hidden)


# ---------------------------------------------------------------- 512-bit GEMM (prefill)
GEMM_TOKENS = 8


def _pair_intrinsic(ntok: int):
    ret = types.UniTuple(types.int32, 2 * ntok)

    def typer(typingctx, w, r, q, t0):
        ints = isinstance(r, types.Integer) and isinstance(t0, types.Integer)
        if not (_arrays_ok(w, q, 4) and ints):
            return None

        def codegen(context, builder, sig, args):
            i64 = ir.IntType(64)
            wary = context.make_array(sig.args[0])(context, builder, args[0])
            qary = context.make_array(sig.args[2])(context, builder, args[2])
            row = context.cast(builder, args[1], sig.args[1], types.int64)
            tok = context.cast(builder, args[3], sig.args[3], types.int64)
            per_token = builder.mul(builder.extract_value(wary.shape, 1), i64(128))
            starts = [builder.mul(builder.add(tok, i64(j)), per_token) for j in range(ntok)]
            qptrs = [builder.gep(qary.data, [start]) for start in starts]
            return context.make_tuple(builder, ret, emit_pair_dots(builder, wary, row, qptrs))

        return ret(w, r, q, t0), codegen

    return typer


_pair_dots8 = intrinsic(_pair_intrinsic(GEMM_TOKENS))
_pair_dots1 = intrinsic(_pair_intrinsic(1))


def _pair_blk_intrinsic(ntok: int):
    """float32 sums d[row, j] * (int sum_j - qsum[t, j]) of rows r, r + 1 for tokens t0 .. t0 + ntok - 1.

    A 256-value scale block of both rows is two `emit_pair_block` steps (the i2s GEMM's register layout);
    each block's exact int32 sums go through `emit_pair_reduce`, then the float accumulation runs in the
    portable kernel's order (bit-identical). Returns the ntok sums of row r, then the ntok of row r + 1.
    """
    ret = types.UniTuple(types.float32, 2 * ntok)
    lanes_of = [8 * (t // 4) + t % 4 for t in range(ntok)] if ntok == 8 else [0]
    row_offset = 4 if ntok == 8 else 1

    def typer(typingctx, w, d, r, q, t0, qsum):
        ints = isinstance(r, types.Integer) and isinstance(t0, types.Integer)
        d_ok = isinstance(d, types.Array) and d.dtype == types.float32 and d.ndim == 2 and d.layout == "C"
        s_ok = (
            isinstance(qsum, types.Array)
            and qsum.dtype == types.int32
            and qsum.ndim == 2
            and qsum.layout == "C"
        )
        if not (_arrays_ok(w, q, 4) and ints and d_ok and s_ok):
            return None

        def codegen(context, builder, sig, args):
            i64 = ir.IntType(64)
            i32 = ir.IntType(32)
            width = 16 if ntok == 8 else 2
            iv = ir.VectorType(i32, width)
            fv = ir.VectorType(ir.FloatType(), width)
            wary = context.make_array(sig.args[0])(context, builder, args[0])
            dary = context.make_array(sig.args[1])(context, builder, args[1])
            qary = context.make_array(sig.args[3])(context, builder, args[3])
            sary = context.make_array(sig.args[5])(context, builder, args[5])
            row = context.cast(builder, args[2], sig.args[2], types.int64)
            tok = context.cast(builder, args[4], sig.args[4], types.int64)
            nsum = builder.extract_value(dary.shape, 1)
            r0, r1 = pair_rows(builder, wary, row)
            d0 = builder.gep(dary.data, [builder.mul(row, nsum)])
            d1 = builder.gep(d0, [nsum])
            per_token = builder.mul(builder.extract_value(wary.shape, 1), i64(128))
            qptrs = [
                builder.gep(qary.data, [builder.mul(builder.add(tok, i64(t)), per_token)])
                for t in range(ntok)
            ]
            sptrs = [
                builder.gep(sary.data, [builder.mul(builder.add(tok, i64(t)), nsum)]) for t in range(ntok)
            ]
            facc = cgutils.alloca_once_value(builder, ir.Constant(fv, None))

            with cgutils.for_range(builder, nsum) as loop:
                j = loop.index
                accs = [ir.Constant(ir.VectorType(i32, 16), None)] * ntok
                for half in range(2):
                    k = builder.add(builder.mul(j, i64(2)), i64(half))
                    accs = emit_pair_block(builder, r0, r1, k, qptrs, accs)
                sums = emit_pair_reduce(builder, accs)
                qs = ir.Constant(iv, None)
                dv = ir.Constant(fv, None)
                dj = [builder.load(builder.gep(d0, [j])), builder.load(builder.gep(d1, [j]))]
                for t, sptr in enumerate(sptrs):
                    value = builder.load(builder.gep(sptr, [j]))
                    for h in range(2):
                        lane = i32(lanes_of[t] + h * row_offset)
                        qs = builder.insert_element(qs, value, lane)
                        dv = builder.insert_element(dv, dj[h], lane)
                term = builder.fmul(dv, builder.sitofp(builder.sub(sums, qs), fv))
                builder.store(builder.fadd(builder.load(facc), term), facc)
            acc = builder.load(facc)
            out = [
                builder.extract_element(acc, i32(lanes_of[t] + h * row_offset))
                for h in range(2)
                for t in range(ntok)
            ]
            return context.make_tuple(builder, ret, out)

        return ret(w, d, r, q, t0, qsum), codegen

    return typer


_pair_blk8 = intrinsic(_pair_blk_intrinsic(GEMM_TOKENS))
_pair_blk1 = intrinsic(_pair_blk_intrinsic(1))


@njit(cache=True)
def _store_blk_pair(out, r, t, sums, ntok, s):
    for j in range(ntok):
        out[t + j, r] = sums[j] / s[t + j]
        out[t + j, r + 1] = sums[ntok + j] / s[t + j]


@njit(cache=True)
def _store_pair(out, r, t, sums, ntok, qsum, s, scale):
    for j in range(ntok):
        out[t + j, r] = np.float32(sums[j] - qsum[t + j]) / s[t + j] * scale
        out[t + j, r + 1] = np.float32(sums[ntok + j] - qsum[t + j]) / s[t + j] * scale


@njit(cache=True, parallel=True)
def i2s_gemm_vnni(w, scale, q, s, out, qsum, cols, counts):
    """Same contract and result as ternary.i2s_gemm: pairs of rows on 512-bit vpdpbusd, 8 tokens a step."""
    rows = w.shape[0]
    ntok = q.shape[0]
    ternary._count(counts, _I2S_GEMM, rows, cols, ntok)
    for t in range(ntok):
        qsum[t] = ternary._qsum_total(q[t])
    full = ntok - ntok % GEMM_TOKENS
    for c in prange((rows + ternary.ROW_CHUNK - 1) // ternary.ROW_CHUNK):
        r0 = c * ternary.ROW_CHUNK
        r1 = min(rows, r0 + ternary.ROW_CHUNK)
        pairs_end = r0 + (r1 - r0) // 2 * 2
        for t in range(0, full, GEMM_TOKENS):
            for r in range(r0, pairs_end, 2):
                _store_pair(out, r, t, _pair_dots8(w, r, q, t), GEMM_TOKENS, qsum, s, scale)
        for t in range(full, ntok):
            for r in range(r0, pairs_end, 2):
                _store_pair(out, r, t, _pair_dots1(w, r, q, t), 1, qsum, s, scale)
        if pairs_end < r1:
            for t in range(ntok):
                acc = _row_dot_vnni(w, pairs_end, q[t])
                out[t, pairs_end] = np.float32(acc - qsum[t]) / s[t] * scale


@njit(cache=True, parallel=True)
def i2s_blk_gemm_vnni(w, d, q, s, out, qsum, cols, counts):
    """Same contract and result as ternary.i2s_blk_gemm: pairs of rows, eight tokens a step (512-bit)."""
    rows = w.shape[0]
    ntok = q.shape[0]
    ternary._count(counts, _BLK_GEMM, rows, cols, ntok)
    for t in range(ntok):
        ternary._qsum_groups(q[t], qsum[t], 8)
    full = ntok - ntok % GEMM_TOKENS
    for c in prange((rows + ternary.ROW_CHUNK - 1) // ternary.ROW_CHUNK):
        r0 = c * ternary.ROW_CHUNK
        r1 = min(rows, r0 + ternary.ROW_CHUNK)
        pairs_end = r0 + (r1 - r0) // 2 * 2
        for t in range(0, full, GEMM_TOKENS):
            for r in range(r0, pairs_end, 2):
                _store_blk_pair(out, r, t, _pair_blk8(w, d, r, q, t, qsum), GEMM_TOKENS, s)
        for t in range(full, ntok):
            for r in range(r0, pairs_end, 2):
                _store_blk_pair(out, r, t, _pair_blk1(w, d, r, q, t, qsum), 1, s)
        if pairs_end < r1:
            for t in range(ntok):
                out[t, pairs_end] = _blk_row_vnni(w, d, pairs_end, q[t], qsum[t]) / s[t]
