"""AVX-512 BW variants of the tl1 / tl2 lookups (numba @intrinsic over llvmlite IR).

The 16-slot int16 table of one activation pair (tl1) / triple (tl2) is one ymm register; vpermw
(`llvm.x86.avx512.permvar.hi.256`) looks it up for the 16 rows of a row tile at once (the layout of lut.py
interleaves a tile's index bytes by row), tl2 negates by the sign bits with xor/sub, and the int16 results
are sign-extended into int32 accumulators. The portable kernels in lut.py do the same lookups one row at a
time; tables, tiles, scales and float order are shared, so results are bit-identical.
"""

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from engine.kernels import lut
from engine.trace import kid

_TL1_GEMV = kid("tl1_gemv")
_TL1_GEMM = kid("tl1_gemm")
_TL2_GEMV = kid("tl2_gemv")
_TL2_GEMM = kid("tl2_gemm")


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
