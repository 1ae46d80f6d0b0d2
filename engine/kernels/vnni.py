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
(`_emit_rows_dot512`, `_i8_rows_dot512`): one activation load serves four rows, a bit plane costs one AND
instead of shift + AND, and the next tiles' bytes are requested ahead of time (1.3-1.6x on cache-warm
matrices, 1.7x on matrices streamed from DRAM, single thread, over the 256-bit row kernel). The i2s GEMM
(`_emit_pair_dots`) puts a block of two rows in one 512-bit register and reuses each unpacked plane for eight
tokens (1.1-1.4x over the 256-bit four-token kernel).

Every variant adds to the same trace row as its portable twin and returns bit-identical results.
"""

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from engine.kernels import ops, ternary
from engine.trace import kid

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


# ---------------------------------------------------------------- 512-bit variants
def _emit_rows_dot512(builder, wary, rows, qptr, prefetch=False):
    """IR: int32 sums of code * q for each weight row index in `rows` against one token's activations.

    Two 128-value blocks (64 weight bytes) per step on `vpdpbusd.512`. A bit plane is isolated with one AND
    (mask 0xC0, 0x30, 0x0C, 0x03) and not shifted: plane g's products are exactly 4^(3-g) times the true ones,
    so its accumulator is shifted right (exact: every lane is a multiple) before the planes are added. Each
    activation load serves every row in `rows`. An odd last block runs on the 256-bit instruction.
    """
    i8x32 = ir.VectorType(ir.IntType(8), 32)
    i8x64 = ir.VectorType(ir.IntType(8), 64)
    i32x8 = ir.VectorType(ir.IntType(32), 8)
    i32x16 = ir.VectorType(ir.IntType(32), 16)
    i64 = ir.IntType(64)
    i32 = ir.IntType(32)
    dp512 = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(i32x16, [i32x16, i32x16, i32x16]), "llvm.x86.avx512.vpdpbusd.512"
    )
    dp256 = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(i32x8, [i32x8, i32x8, i32x8]), "llvm.x86.avx512.vpdpbusd.256"
    )
    nb = builder.extract_value(wary.shape, 1)
    row_bytes = builder.mul(nb, i64(32))
    wrows = [builder.gep(wary.data, [builder.mul(r, row_bytes)]) for r in rows]
    masks = [0xC0, 0x30, 0x0C, 0x03]
    zero16 = ir.Constant(i32x16, None)
    accs = [[cgutils.alloca_once_value(builder, zero16) for _ in range(4)] for _ in rows]
    concat = ir.Constant(ir.VectorType(i32, 64), list(range(64)))

    def qload(off):
        return builder.load(builder.bitcast(builder.gep(qptr, [off]), i8x32.as_pointer()), align=1)

    pairs = builder.udiv(nb, i64(2))
    with cgutils.for_range(builder, pairs) as loop:
        k = builder.mul(loop.index, i64(2))
        if prefetch:
            _emit_prefetch(builder, wrows[0], row_bytes, loop.index, len(rows))
        qv = []
        for g in range(4):
            lo = qload(builder.add(builder.mul(k, i64(128)), i64(32 * g)))
            hi = qload(builder.add(builder.mul(k, i64(128)), i64(128 + 32 * g)))
            qv.append(builder.bitcast(builder.shuffle_vector(lo, hi, concat), i32x16))
        for wrow, raccs in zip(wrows, accs, strict=True):
            wptr = builder.bitcast(builder.gep(wrow, [builder.mul(k, i64(32))]), i8x64.as_pointer())
            wbytes = builder.load(wptr, align=1)
            for g in range(4):
                codes = builder.bitcast(builder.and_(wbytes, ir.Constant(i8x64, [masks[g]] * 64)), i32x16)
                acc = builder.call(dp512, [builder.load(raccs[g]), codes, qv[g]])
                builder.store(acc, raccs[g])
    # the odd last block
    tails = [cgutils.alloca_once_value(builder, ir.Constant(i32x8, None)) for _ in range(4 * len(rows))]
    with builder.if_then(builder.icmp_unsigned("!=", builder.urem(nb, i64(2)), i64(0))):
        k = builder.sub(nb, i64(1))
        for ri, wrow in enumerate(wrows):
            wptr = builder.bitcast(builder.gep(wrow, [builder.mul(k, i64(32))]), i8x32.as_pointer())
            wbytes = builder.load(wptr, align=1)
            for g in range(4):
                qv = builder.bitcast(qload(builder.add(builder.mul(k, i64(128)), i64(32 * g))), i32x8)
                codes = builder.bitcast(builder.and_(wbytes, ir.Constant(i8x32, [masks[g]] * 32)), i32x8)
                builder.store(builder.call(dp256, [ir.Constant(i32x8, None), codes, qv]), tails[4 * ri + g])
    results = []
    for ri, raccs in enumerate(accs):
        total = None
        for g in range(4):
            shift = 6 - 2 * g
            v = builder.load(raccs[g])
            lo = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(i32, 8), list(range(8))))
            hi = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(i32, 8), list(range(8, 16))))
            v8 = builder.add(builder.add(lo, hi), builder.load(tails[4 * ri + g]))
            if shift:
                v8 = builder.ashr(v8, ir.Constant(i32x8, [shift] * 8))
            total = v8 if total is None else builder.add(total, v8)
        result = builder.extract_element(total, i32(0))
        for lane in range(1, 8):
            result = builder.add(result, builder.extract_element(total, i32(lane)))
        results.append(result)
    return results


ROW_TILE = 4
# Tiles ahead whose weight bytes a tile prefetches while it runs (spread over its loop: 64 bytes per row per
# step). Weight rows are read once per token from DRAM through 4 KB pages, where the hardware prefetcher stops
# at every page boundary; software prefetch took a cold single-thread GEMV from 4.5 to 7.7 GB/s here.
PREFETCH = 4


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
        return context.make_tuple(builder, ret, _emit_rows_dot512(builder, wary, rows, qary.data, True))

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
        return _emit_rows_dot512(builder, wary, [row], qary.data)[0]

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


def _emit_prefetch(builder, base, row_bytes, step, nrows):
    """IR: prefetch the `nrows` cache lines of the tile PREFETCH tiles ahead that loop step `step` covers."""
    i64 = ir.IntType(64)
    i32 = ir.IntType(32)
    pf = cgutils.get_or_insert_function(
        builder.module,
        ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer(), i32, i32, i32]),
        "llvm.prefetch.p0i8",
    )
    ahead = builder.mul(row_bytes, i64(PREFETCH * nrows))
    ptr = builder.gep(base, [builder.add(ahead, builder.mul(step, i64(64 * nrows)))])
    for j in range(nrows):
        builder.call(pf, [builder.gep(ptr, [i64(64 * j)]), i32(0), i32(3), i32(1)])


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
            _emit_prefetch(builder, base, n, loop.index, ROW_TILE)
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


def _emit_pair_dots(builder, wary, row, qptrs):
    """IR: int32 sums of rows `row` and `row + 1` against each token's activations in `qptrs`.

    Block k of both rows fills one 512-bit register (row r low half, row r+1 high half); a bit plane is
    unpacked once (shift + AND) and serves every token, whose 32 activation bytes of that plane are
    broadcast to both halves by the load itself. One <16 x i32> accumulator per token; returns
    [row r sums per token] + [row r+1 sums per token].
    """
    i8x32 = ir.VectorType(ir.IntType(8), 32)
    i8x64 = ir.VectorType(ir.IntType(8), 64)
    i32x16 = ir.VectorType(ir.IntType(32), 16)
    i64 = ir.IntType(64)
    i32 = ir.IntType(32)
    dp512 = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(i32x16, [i32x16, i32x16, i32x16]), "llvm.x86.avx512.vpdpbusd.512"
    )
    nb = builder.extract_value(wary.shape, 1)
    row_bytes = builder.mul(nb, i64(32))
    r0 = builder.gep(wary.data, [builder.mul(row, row_bytes)])
    r1 = builder.gep(r0, [row_bytes])
    accs = [cgutils.alloca_once_value(builder, ir.Constant(i32x16, None)) for _ in qptrs]
    concat = ir.Constant(ir.VectorType(i32, 64), list(range(64)))
    twice = ir.Constant(ir.VectorType(i32, 64), list(range(32)) * 2)
    three = ir.Constant(i8x64, [3] * 64)

    def load32(base, off):
        return builder.load(builder.bitcast(builder.gep(base, [off]), i8x32.as_pointer()), align=1)

    with cgutils.for_range(builder, nb) as loop:
        k = loop.index
        woff = builder.mul(k, i64(32))
        wbytes = builder.shuffle_vector(load32(r0, woff), load32(r1, woff), concat)
        for g in range(4):
            codes = builder.and_(builder.lshr(wbytes, ir.Constant(i8x64, [6 - 2 * g] * 64)), three)
            codes = builder.bitcast(codes, i32x16)
            qoff = builder.add(builder.mul(k, i64(128)), i64(32 * g))
            for base, slot in zip(qptrs, accs, strict=True):
                half = load32(base, qoff)
                qv = builder.bitcast(builder.shuffle_vector(half, half, twice), i32x16)
                builder.store(builder.call(dp512, [builder.load(slot), codes, qv]), slot)
    low, high = [], []
    for slot in accs:
        v = builder.load(slot)
        lanes = [builder.extract_element(v, i32(j)) for j in range(16)]
        a, b = lanes[0], lanes[8]
        for j in range(1, 8):
            a = builder.add(a, lanes[j])
            b = builder.add(b, lanes[8 + j])
        low.append(a)
        high.append(b)
    return low + high


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
            return context.make_tuple(builder, ret, _emit_pair_dots(builder, wary, row, qptrs))

        return ret(w, r, q, t0), codegen

    return typer


_pair_dots8 = intrinsic(_pair_intrinsic(GEMM_TOKENS))
_pair_dots1 = intrinsic(_pair_intrinsic(1))


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
