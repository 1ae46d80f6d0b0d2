"""CPU feature detection and the CPU-specific kernel variants (numba @intrinsic over llvmlite IR).

Portable numba reaches ~40 GMAC/s on the i2s GEMV here (int16 multiplies). The VNNI variant is a numba
@intrinsic whose LLVM IR loads 32 packed bytes per 128-value block, unpacks the four 2-bit planes with vector
shift/and into unsigned bytes and feeds them with the signed int8 activations to
`llvm.x86.avx512.vpdpbusd.256` (four independent <8 x i32> accumulators, one per bit plane). vpdpbusd takes
unsigned x signed bytes, which is exactly the code x q product of the `sum code*q - sum q` formulation, so the
result is the same exact integer as the portable kernel's. It is chosen only when LLVM reports avx512vnni and
avx512vl for the host; otherwise the portable kernel runs. The same IR serves the I2_S GEMM (each weight
block unpacked once for four tokens), the TQ2_0 / TQ1_0 per-256 block sums and QK256 (codes mapped to
c + (c >> 1) = value + 2, so the sum is corrected by 2 sum q).

tl1 / tl2 ("avx512bw"): the 16-slot int16 table of one activation pair / triple is one ymm register and
vpermw (`llvm.x86.avx512.permvar.hi.256`) looks it up for the 16 rows of a row tile at once; the portable
kernels (lut.py) do those lookups one row at a time.

Every variant adds to the same trace row as its portable twin and returns bit-identical results.
"""

from collections.abc import Callable
from functools import lru_cache

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from engine.kernels import lut, ternary
from engine.trace import kid

_I2S_GEMV = kid("i2s_gemv")
_I2S_GEMM = kid("i2s_gemm")
_BLK_GEMV = kid("i2s_blk_gemv")
_BLK_GEMM = kid("i2s_blk_gemm")
_QK_GEMV = kid("i2s_qk256_gemv")
_QK_GEMM = kid("i2s_qk256_gemm")
_TL1_GEMV = kid("tl1_gemv")
_TL1_GEMM = kid("tl1_gemm")
_TL2_GEMV = kid("tl2_gemv")
_TL2_GEMM = kid("tl2_gemm")
VNNI_FEATURES = ("avx512vnni", "avx512vl")


@lru_cache(maxsize=1)
def host_features() -> frozenset[str]:
    """Features LLVM sees on this CPU (names without the sign, e.g. 'avx512vnni')."""
    import llvmlite.binding as llvm

    raw = llvm.get_host_cpu_features()
    return frozenset(name[1:] for name in raw.flatten().split(",") if name.startswith("+"))


def has_vnni() -> bool:
    return all(f in host_features() for f in VNNI_FEATURES)


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


def select_blk(prefer: str = "auto") -> tuple[Callable, Callable, str]:
    """(GEMV, GEMM, variant) for TQ2_0 / TQ1_0 repacked with 256-value scales."""
    if prefer != "portable" and has_vnni():
        return i2s_blk_gemv_vnni, i2s_blk_gemm_vnni, "avx512vnni"
    return ternary.i2s_blk_gemv, ternary.i2s_blk_gemm, "portable"


def select_qk256(prefer: str = "auto") -> tuple[Callable, Callable, str]:
    """(GEMV, GEMM, variant) for QK256."""
    if prefer != "portable" and has_vnni():
        return i2s_qk256_gemv_vnni, i2s_qk256_gemm_vnni, "avx512vnni"
    return ternary.i2s_qk256_gemv, ternary.i2s_qk256_gemm, "portable"


def select_i2s(prefer: str = "auto") -> tuple[Callable, Callable, str]:
    """(GEMV, GEMM, variant) for microsoft I2_S: "avx512vnni" when the host has it, else "portable"."""
    if prefer != "portable" and has_vnni():
        return i2s_gemv_vnni, i2s_gemm_vnni, "avx512vnni"
    return ternary.i2s_gemv, ternary.i2s_gemm, "portable"


# ---- tl1 / tl2 lookups on vpermw (AVX-512 BW + VL) ------------------------------------------------------

PERMW_FEATURES = ("avx512bw", "avx512vl")


def has_permw() -> bool:
    return all(f in host_features() for f in PERMW_FEATURES)


def _splat16(builder, value):
    """<16 x i16> with every lane = the i64 `value` (truncated)."""
    i16x16 = ir.VectorType(ir.IntType(16), 16)
    lane = builder.trunc(value, ir.IntType(16))
    vec = builder.insert_element(ir.Constant(i16x16, None), lane, ir.IntType(32)(0))
    return builder.shuffle_vector(
        vec, ir.Constant(i16x16, None), ir.Constant(ir.VectorType(ir.IntType(32), 16), None)
    )


def _perm_setup(builder, acc_ary):
    i16x16 = ir.VectorType(ir.IntType(16), 16)
    i32x16 = ir.VectorType(ir.IntType(32), 16)
    permw = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(i16x16, [i16x16, i16x16]), "llvm.x86.avx512.permvar.hi.256"
    )
    accp = builder.bitcast(acc_ary.data, i32x16.as_pointer())
    return i16x16, i32x16, permw, accp


def _load16(builder, base, offset):
    """16 bytes at base + offset, zero-extended to <16 x i16>."""
    i8x16 = ir.VectorType(ir.IntType(8), 16)
    ptr = builder.bitcast(builder.gep(base, [offset]), i8x16.as_pointer())
    return builder.zext(builder.load(ptr, align=1), ir.VectorType(ir.IntType(16), 16))


def _tile_arrays_ok(idx, tab, acc) -> bool:
    return (
        isinstance(idx, types.Array)
        and idx.dtype == types.uint8
        and idx.ndim == 3
        and idx.layout == "C"
        and isinstance(tab, types.Array)
        and tab.dtype == types.int16
        and tab.layout == "C"
        and isinstance(acc, types.Array)
        and acc.dtype == types.int32
        and acc.ndim == 1
        and acc.layout == "C"
    )


@intrinsic
def _tl1_bytes_perm(typingctx, idx, tt, j0, j1, tab, acc):
    """acc[0:16] += lookups of index bytes j0 .. j1-1 of row tile tt (tab int16 [bytes, 2, 16])."""
    ints = all(isinstance(x, types.Integer) for x in (tt, j0, j1))
    if not (ints and _tile_arrays_ok(idx, tab, acc) and tab.ndim == 3):
        return None

    def codegen(context, builder, sig, args):
        i64 = ir.IntType(64)
        idx_a = context.make_array(sig.args[0])(context, builder, args[0])
        tab_a = context.make_array(sig.args[4])(context, builder, args[4])
        acc_a = context.make_array(sig.args[5])(context, builder, args[5])
        tile, first, last = (context.cast(builder, args[i], sig.args[i], types.int64) for i in (1, 2, 3))
        i16x16, i32x16, permw, accp = _perm_setup(builder, acc_a)
        nbytes = builder.extract_value(idx_a.shape, 1)
        tile_base = builder.mul(builder.mul(tile, nbytes), i64(16))
        fifteen = ir.Constant(i16x16, [15] * 16)
        four = ir.Constant(i16x16, [4] * 16)
        tab_ptr = builder.bitcast(tab_a.data, i16x16.as_pointer())
        accv = cgutils.alloca_once_value(builder, builder.load(accp, align=4))
        with cgutils.for_range(builder, builder.sub(last, first)) as loop:
            j = builder.add(first, loop.index)
            w = _load16(builder, idx_a.data, builder.add(tile_base, builder.mul(j, i64(16))))
            t0 = builder.load(builder.gep(tab_ptr, [builder.mul(j, i64(2))]), align=2)
            t1 = builder.load(builder.gep(tab_ptr, [builder.add(builder.mul(j, i64(2)), i64(1))]), align=2)
            v = builder.add(
                builder.call(permw, [t0, builder.and_(w, fifteen)]),
                builder.call(permw, [t1, builder.lshr(w, four)]),
            )
            builder.store(builder.add(builder.load(accv), builder.sext(v, i32x16)), accv)
        builder.store(builder.load(accv), accp, align=4)
        return context.get_dummy_value()

    return types.none(idx, tt, j0, j1, tab, acc), codegen


@intrinsic
def _tl2_groups_perm(typingctx, idx, sign, tt, g0, g1, tab, acc):
    """acc[0:16] += signed lookups of groups g0 .. g1-1 of row tile tt (tab int16 [groups, 16])."""
    ints = all(isinstance(x, types.Integer) for x in (tt, g0, g1))
    sign_ok = (
        isinstance(sign, types.Array) and sign.dtype == types.uint8 and sign.ndim == 3 and sign.layout == "C"
    )
    if not (ints and sign_ok and _tile_arrays_ok(idx, tab, acc) and tab.ndim == 2):
        return None

    def codegen(context, builder, sig, args):
        i64 = ir.IntType(64)
        idx_a = context.make_array(sig.args[0])(context, builder, args[0])
        sign_a = context.make_array(sig.args[1])(context, builder, args[1])
        tab_a = context.make_array(sig.args[5])(context, builder, args[5])
        acc_a = context.make_array(sig.args[6])(context, builder, args[6])
        tile, first, last = (context.cast(builder, args[i], sig.args[i], types.int64) for i in (2, 3, 4))
        i16x16, i32x16, permw, accp = _perm_setup(builder, acc_a)
        idx_base = builder.mul(builder.mul(tile, builder.extract_value(idx_a.shape, 1)), i64(16))
        sign_base = builder.mul(builder.mul(tile, builder.extract_value(sign_a.shape, 1)), i64(16))
        fifteen = ir.Constant(i16x16, [15] * 16)
        one = ir.Constant(i16x16, [1] * 16)
        zero = ir.Constant(i16x16, None)
        tab_ptr = builder.bitcast(tab_a.data, i16x16.as_pointer())
        accv = cgutils.alloca_once_value(builder, builder.load(accp, align=4))
        with cgutils.for_range(builder, builder.sub(last, first)) as loop:
            g = builder.add(first, loop.index)
            nib_bytes = _load16(
                builder, idx_a.data, builder.add(idx_base, builder.mul(builder.lshr(g, i64(1)), i64(16)))
            )
            nib = builder.and_(
                builder.lshr(nib_bytes, _splat16(builder, builder.shl(builder.and_(g, i64(1)), i64(2)))),
                fifteen,
            )
            sbytes = _load16(
                builder, sign_a.data, builder.add(sign_base, builder.mul(builder.lshr(g, i64(3)), i64(16)))
            )
            neg = builder.sub(
                zero, builder.and_(builder.lshr(sbytes, _splat16(builder, builder.and_(g, i64(7)))), one)
            )
            v = builder.call(permw, [builder.load(builder.gep(tab_ptr, [g]), align=2), nib])
            v = builder.sub(builder.xor(v, neg), neg)
            builder.store(builder.add(builder.load(accv), builder.sext(v, i32x16)), accv)
        builder.store(builder.load(accv), accp, align=4)
        return context.get_dummy_value()

    return types.none(idx, sign, tt, g0, g1, tab, acc), codegen


@njit(cache=True)
def _tl1_tile_perm(idx, d, per_tensor, tt, tab, s, acc, facc, out, rows):
    nblk = d.shape[1]
    per = idx.shape[1] // nblk
    for rr in range(lut.ROW_TILE):
        facc[rr] = np.float32(0.0)
    for blk in range(nblk):
        for rr in range(lut.ROW_TILE):
            acc[rr] = 0
        _tl1_bytes_perm(idx, tt, blk * per, (blk + 1) * per, tab, acc)
        lut._finish(d, per_tensor, blk, tt, acc, facc)
    lut._store(d, per_tensor, tt, acc, facc, s, out, rows)


@njit(cache=True, parallel=True)
def tl1_gemv_perm(idx, d, per_tensor, q, s, out, tab, acc, facc, cols, counts):
    """Same contract and result as lut.tl1_gemv; lookups on vpermw."""
    rows = out.shape[0]
    lut._count(counts, _TL1_GEMV, rows, cols, 1)
    lut._tl1_table(q, tab)
    for tt in prange(idx.shape[0]):
        _tl1_tile_perm(idx, d, per_tensor, tt, tab, s, acc[tt], facc[tt], out, rows)


@njit(cache=True, parallel=True)
def tl1_gemm_perm(idx, d, per_tensor, q, s, out, tab, acc, facc, cols, counts):
    """Same contract and result as lut.tl1_gemm; lookups on vpermw."""
    ntok, rows = out.shape
    lut._count(counts, _TL1_GEMM, rows, cols, ntok)
    for t0 in range(0, ntok, lut.TOKEN_CHUNK):
        tn = min(lut.TOKEN_CHUNK, ntok - t0)
        for tk in prange(tn):
            lut._tl1_table(q[t0 + tk], tab[tk])
        for tt in prange(idx.shape[0]):
            for tk in range(tn):
                t = t0 + tk
                _tl1_tile_perm(idx, d, per_tensor, tt, tab[tk], s[t], acc[tt], facc[tt], out[t], rows)


@njit(cache=True)
def _tl2_tile_perm(idx, sign, d, per_tensor, groups_per_block, tt, tab, s, acc, facc, out, rows):
    for rr in range(lut.ROW_TILE):
        facc[rr] = np.float32(0.0)
    for blk in range(d.shape[1]):
        for rr in range(lut.ROW_TILE):
            acc[rr] = 0
        _tl2_groups_perm(idx, sign, tt, blk * groups_per_block, (blk + 1) * groups_per_block, tab, acc)
        lut._finish(d, per_tensor, blk, tt, acc, facc)
    lut._store(d, per_tensor, tt, acc, facc, s, out, rows)


@njit(cache=True, parallel=True)
def tl2_gemv_perm(idx, sign, d, per_tensor, groups_per_block, gcol, q, s, out, tab, acc, facc, cols, counts):
    """Same contract and result as lut.tl2_gemv; lookups on vpermw."""
    rows = out.shape[0]
    lut._count(counts, _TL2_GEMV, rows, cols, 1)
    lut._tl2_table(q, gcol, tab)
    for tt in prange(idx.shape[0]):
        _tl2_tile_perm(idx, sign, d, per_tensor, groups_per_block, tt, tab, s, acc[tt], facc[tt], out, rows)


@njit(cache=True, parallel=True)
def tl2_gemm_perm(idx, sign, d, per_tensor, groups_per_block, gcol, q, s, out, tab, acc, facc, cols, counts):
    """Same contract and result as lut.tl2_gemm; lookups on vpermw."""
    ntok, rows = out.shape
    lut._count(counts, _TL2_GEMM, rows, cols, ntok)
    for t0 in range(0, ntok, lut.TOKEN_CHUNK):
        tn = min(lut.TOKEN_CHUNK, ntok - t0)
        for tk in prange(tn):
            lut._tl2_table(q[t0 + tk], gcol, tab[tk])
        for tt in prange(idx.shape[0]):
            for tk in range(tn):
                t = t0 + tk
                _tl2_tile_perm(
                    idx,
                    sign,
                    d,
                    per_tensor,
                    groups_per_block,
                    tt,
                    tab[tk],
                    s[t],
                    acc[tt],
                    facc[tt],
                    out[t],
                    rows,
                )


def select_tl(kernel: str, prefer: str = "auto") -> tuple[Callable, Callable, str]:
    """(GEMV, GEMM, variant) for "tl1" / "tl2": "avx512bw" (vpermw lookups) when the host has it."""
    if prefer != "portable" and has_permw():
        if kernel == "tl1":
            return tl1_gemv_perm, tl1_gemm_perm, "avx512bw"
        return tl2_gemv_perm, tl2_gemm_perm, "avx512bw"
    if kernel == "tl1":
        return lut.tl1_gemv, lut.tl1_gemm, "portable"
    return lut.tl2_gemv, lut.tl2_gemm, "portable"
