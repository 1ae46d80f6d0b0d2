"""AVX2 variants of the i2s kernel family and the int8 logits (numba @intrinsic over avx2_ir's LLVM IR).

Chosen when LLVM reports avx2 for the host and the AVX-512 VNNI path is absent (engine.kernels.cpu). Each
kernel has its portable twin's contract plus `plan`, an int64[1] array: the software prefetch distance in
bytes, 0 = none, measured per host and row width (engine.kernel_choice.prefetch_choice). Integer sums are
exact and the float math runs in the portable order, so every result is bit-identical to the portable
kernel's, and every kernel adds to its portable twin's trace row.

- GEMV: consecutive rows per step share each activation load (I2S_GEMV_ROWS for i2s, ROW_TILE for the
  TQ blocks and QK256); eight blocks (four cache lines) of each row per step, summed in int16 and widened
  once (avx2_ir.GEMV_GROUP). Two rows per step read the i2s weights faster from DRAM than four (fewer
  streams per thread for the hardware prefetcher), at two threads clearly, at one no slower.
- GEMM (prefill): tiles of avx2_ir.GEMM_ROWS rows against GEMM_TOKENS tokens, column chunks outermost in
  the tile so that a chunk's activations stay in L1; a block's codes are unpacked once (1x) for all tokens,
  one int16 sum per token over a chunk (avx2_ir.GEMM_GROUP). The tile writes float32(int sum - qsum) (or
  the TQ float sum) into `out`; the scaling by 1 / s and the tensor scale follows in the kernel.
- TQ2_0 / TQ1_0 (i2s_blk): each 256-value scale block's exact sums go through one vphaddw tree for the
  rows (GEMV) or tokens (GEMM), then the per-lane float multiply-add in the portable order.
- The int8 activations should start on a cache line (engine.kernels.aligned): a 32-byte load that splits
  two lines costs the GEMM about a sixth of its speed.
- logits: |q| once per token; vpsignb + vpmaddubsw, one row per step so that each thread streams its
  rows in order (needs emb_q within [-127, 127], which the model's int8 embedding copy guarantees; q may
  hold -128).
"""

import time

import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic

from engine.kernels import avx2_ir, ops, ternary
from engine.kernels.intrinsic_args import arg, c_array
from engine.kernels.ir_digest import require_ir_digest
from engine.trace import Trace

# numba's cache cannot see edits to avx2_ir.py: this file names the emitters it was built with.
IR_SHA256 = "e7cbcbbd8adc56372487c20940a635166b0b82a362b94071e87140c2a9f43aa2"
require_ir_digest(avx2_ir, IR_SHA256, "engine/kernels/avx2.py")

ROW_TILE = 4
I2S_GEMV_ROWS = 2
GEMM_TOKENS = 8


def _lane_tuple(context, builder, ret, vector, n):
    """The first n lanes of an IR vector as the intrinsic's UniTuple return value."""
    return context.make_tuple(
        builder, ret, [builder.extract_element(vector, avx2_ir.I32(i)) for i in range(n)]
    )


def _distance(builder, plan_ary):
    """plan[0]: the prefetch distance in bytes."""
    return builder.load(plan_ary.data)


def _row_ptrs(builder, ary, row0, nrows):
    """Byte pointers to rows row0 .. row0 + nrows - 1 of a C array whose row is shape[1:] bytes."""
    row_bytes = avx2_ir.I64(1)
    for dim in range(1, ary.shape.type.count):
        row_bytes = builder.mul(row_bytes, builder.extract_value(ary.shape, dim))
    data = builder.bitcast(ary.data, avx2_ir.I8.as_pointer())
    base = builder.gep(data, [builder.mul(row0, row_bytes)])
    return [builder.gep(base, [builder.mul(row_bytes, avx2_ir.I64(j))]) for j in range(nrows)]


# ---------------------------------------------------------------- intrinsics
def _rows_dot_intrinsic(nrows: int, qk256: bool):
    """int32 sums of code * q over rows r0 .. r0 + nrows - 1 (w uint8[rows, nb, 32], q int8[nb, 4, 32])."""
    ret = types.UniTuple(types.int32, nrows)

    def typer(typingctx, w, r0, q, plan):
        ok = c_array(w, types.uint8, 3) and c_array(q, types.int8, 3) and c_array(plan, types.int64, 1)
        if not (ok and isinstance(r0, types.Integer)):
            return None

        def codegen(context, builder, sig, args):
            wary, row, qary, sary = (arg(context, builder, sig, args, i) for i in range(4))
            wptrs = _row_ptrs(builder, wary, row, nrows)
            nb = builder.extract_value(wary.shape, 1)
            qptr = builder.bitcast(qary.data, avx2_ir.I8.as_pointer())
            vecs = avx2_ir.rows_dot(builder, wptrs, qptr, nb, _distance(builder, sary), qk256)
            return context.make_tuple(builder, ret, [avx2_ir.hsum(builder, v) for v in vecs])

        return ret(w, r0, q, plan), codegen

    return intrinsic(typer)


_rows_dot2 = _rows_dot_intrinsic(I2S_GEMV_ROWS, False)
_rows_dot1 = _rows_dot_intrinsic(1, False)
_rows_qk4 = _rows_dot_intrinsic(ROW_TILE, True)
_rows_qk1 = _rows_dot_intrinsic(1, True)


def _rows_blk_intrinsic(nrows: int):
    """float32 sums over scale blocks j of d[r, j] * (int sum_j - qsum[j]) for rows r0 .. r0 + nrows - 1."""
    ret = types.UniTuple(types.float32, nrows)

    def typer(typingctx, w, d, r0, q, qsum, plan):
        ok = (
            c_array(w, types.uint8, 3)
            and c_array(d, types.float32, 2)
            and c_array(q, types.int8, 3)
            and c_array(qsum, types.int32, 1)
            and c_array(plan, types.int64, 1)
            and isinstance(r0, types.Integer)
        )
        if not ok:
            return None

        def codegen(context, builder, sig, args):
            wary, dary, row, qary, sumary, sary = (arg(context, builder, sig, args, i) for i in range(6))
            nsum = builder.extract_value(dary.shape, 1)
            wptrs = _row_ptrs(builder, wary, row, nrows)
            drow0 = builder.gep(dary.data, [builder.mul(row, nsum)])
            dptrs = [builder.gep(drow0, [builder.mul(nsum, avx2_ir.I64(j))]) for j in range(nrows)]
            qptr = builder.bitcast(qary.data, avx2_ir.I8.as_pointer())
            dist = _distance(builder, sary)
            acc = avx2_ir.rows_blk(builder, wptrs, dptrs, qptr, sumary.data, nsum, dist)
            return _lane_tuple(context, builder, ret, acc, nrows)

        return ret(w, d, r0, q, qsum, plan), codegen

    return intrinsic(typer)


_rows_blk4 = _rows_blk_intrinsic(ROW_TILE)
_rows_blk1 = _rows_blk_intrinsic(1)


@intrinsic
def _i8_row_dot(typingctx, e, r, u, q, plan):
    """int32 sum e[r] . q for row r of e int8[rows, n] (n % 64 == 0); u = |q| as uint8[n]."""
    ok = (
        c_array(e, types.int8, 2)
        and c_array(u, types.uint8, 1)
        and c_array(q, types.int8, 1)
        and c_array(plan, types.int64, 1)
        and isinstance(r, types.Integer)
    )
    if not ok:
        return None

    def codegen(context, builder, sig, args):
        eary, row, uary, qary, sary = (arg(context, builder, sig, args, i) for i in range(5))
        n = builder.extract_value(eary.shape, 1)
        (rptr,) = _row_ptrs(builder, eary, row, 1)
        qptr = builder.bitcast(qary.data, avx2_ir.I8.as_pointer())
        vec = avx2_ir.i8_row_dot(builder, rptr, uary.data, qptr, n, _distance(builder, sary))
        return avx2_ir.hsum(builder, vec)

    return types.int32(e, r, u, q, plan), codegen


def _tile_args(builder, wary, row0, row1, qary, tok, oary, ntok):
    """(first row's weights, bytes per row, rows, token pointers, out pointer at [t0, r0], out row stride)."""
    rows = builder.extract_value(oary.shape, 1)
    return (
        _row_ptrs(builder, wary, row0, 1)[0],
        builder.mul(builder.extract_value(wary.shape, 1), avx2_ir.I64(32)),
        builder.sub(row1, row0),
        _row_ptrs(builder, qary, tok, ntok),
        builder.gep(oary.data, [builder.add(builder.mul(tok, rows), row0)]),
        rows,
    )


def _tile_tokens_intrinsic(ntok: int):
    """Rows r0 .. r1 - 1 (at most avx2_ir.GEMM_ROWS) against tokens t0 .. t0 + ntok - 1: writes
    float32(sum code * q - qsum[t]) to out[t, r] (q int8[T, nb, 4, 32], qsum int32[T], out float32[T, R])."""

    def typer(typingctx, w, r0, r1, q, t0, qsum, out):
        ok = (
            c_array(w, types.uint8, 3)
            and c_array(q, types.int8, 4)
            and c_array(qsum, types.int32, 1)
            and c_array(out, types.float32, 2)
            and all(isinstance(x, types.Integer) for x in (r0, r1, t0))
        )
        if not ok:
            return None

        def codegen(context, builder, sig, args):
            wary, row0, row1, qary, tok, sumary, oary = (
                arg(context, builder, sig, args, i) for i in range(7)
            )
            wptr, row_bytes, nrows, qptrs, optr, rows = _tile_args(
                builder, wary, row0, row1, qary, tok, oary, ntok
            )
            nb = builder.extract_value(wary.shape, 1)
            qsum = [builder.gep(sumary.data, [builder.add(tok, avx2_ir.I64(t))]) for t in range(ntok)]
            avx2_ir.tile_tokens(builder, wptr, row_bytes, nrows, qptrs, nb, qsum, optr, rows)
            return context.get_dummy_value()

        return types.none(w, r0, r1, q, t0, qsum, out), codegen

    return intrinsic(typer)


_tile_tokens8 = _tile_tokens_intrinsic(GEMM_TOKENS)
_tile_tokens1 = _tile_tokens_intrinsic(1)


def _tile_blk_tokens_intrinsic(ntok: int):
    """Rows r0 .. r1 - 1 (at most avx2_ir.GEMM_ROWS) against tokens t0 .. t0 + ntok - 1: writes the sum over
    scale blocks j of d[r, j] * (sum_j - qsum_j) to out[t, r] (qsum int32 [T, nsum] scratch holding the sums
    transposed: block j's token sums side by side)."""

    def typer(typingctx, w, d, r0, r1, q, t0, qsum, out):
        ok = (
            c_array(w, types.uint8, 3)
            and c_array(d, types.float32, 2)
            and c_array(q, types.int8, 4)
            and c_array(qsum, types.int32, 2)
            and c_array(out, types.float32, 2)
            and all(isinstance(x, types.Integer) for x in (r0, r1, t0))
        )
        if not ok:
            return None

        def codegen(context, builder, sig, args):
            wary, dary, row0, row1, qary, tok, sumary, oary = (
                arg(context, builder, sig, args, i) for i in range(8)
            )
            wptr, row_bytes, nrows, qptrs, optr, rows = _tile_args(
                builder, wary, row0, row1, qary, tok, oary, ntok
            )
            nsum = builder.extract_value(dary.shape, 1)
            dptr = builder.gep(dary.data, [builder.mul(row0, nsum)])
            stride = builder.extract_value(qary.shape, 0)
            sptr = builder.gep(sumary.data, [tok])
            avx2_ir.tile_blk_tokens(
                builder, wptr, row_bytes, nrows, qptrs, dptr, nsum, sptr, stride, optr, rows
            )
            return context.get_dummy_value()

        return types.none(w, d, r0, r1, q, t0, qsum, out), codegen

    return intrinsic(typer)


_tile_blk_tokens8 = _tile_blk_tokens_intrinsic(GEMM_TOKENS)
_tile_blk_tokens1 = _tile_blk_tokens_intrinsic(1)


# ---------------------------------------------------------------- i2s (one scale per tensor)
@njit(cache=True, parallel=True)
def i2s_gemv_avx2(w, scale, q, s, out, cols, counts, plan):
    """Same contract and result as ternary.i2s_gemv; I2S_GEMV_ROWS rows per step."""
    rows = w.shape[0]
    ternary._count(counts, ternary._I2S_GEMV, rows, cols, 1)
    sq = ternary._qsum_total(q)
    tiles = rows // I2S_GEMV_ROWS
    for c in prange(tiles):
        r = c * I2S_GEMV_ROWS
        a0, a1 = _rows_dot2(w, r, q, plan)
        out[r] = np.float32(a0 - sq) / s * scale
        out[r + 1] = np.float32(a1 - sq) / s * scale
    for r in range(tiles * I2S_GEMV_ROWS, rows):
        out[r] = np.float32(_rows_dot1(w, r, q, plan)[0] - sq) / s * scale


@njit(cache=True, parallel=True)
def i2s_gemm_avx2(w, scale, q, s, out, qsum, cols, counts, plan):
    """Same contract and result as ternary.i2s_gemm: tiles of GEMM_ROWS rows against GEMM_TOKENS tokens."""
    rows = w.shape[0]
    ntok = q.shape[0]
    ternary._count(counts, ternary._I2S_GEMM, rows, cols, ntok)
    for t in range(ntok):
        qsum[t] = ternary._qsum_total(q[t])
    full = ntok - ntok % GEMM_TOKENS
    for c in prange((rows + ternary.ROW_CHUNK - 1) // ternary.ROW_CHUNK):
        r0 = c * ternary.ROW_CHUNK
        r1 = min(rows, r0 + ternary.ROW_CHUNK)
        for t in range(0, full, GEMM_TOKENS):
            for r in range(r0, r1, avx2_ir.GEMM_ROWS):
                _tile_tokens8(w, r, min(r1, r + avx2_ir.GEMM_ROWS), q, t, qsum, out)
        for t in range(full, ntok):
            for r in range(r0, r1, avx2_ir.GEMM_ROWS):
                _tile_tokens1(w, r, min(r1, r + avx2_ir.GEMM_ROWS), q, t, qsum, out)
        for t in range(ntok):
            for r in range(r0, r1):
                out[t, r] = out[t, r] / s[t] * scale


# ---------------------------------------------------------------- i2s_blk (TQ2_0 / TQ1_0: one scale per 256)
@njit(cache=True, parallel=True)
def i2s_blk_gemv_avx2(w, d, q, s, out, qsum, cols, counts, plan):
    """Same contract and result as ternary.i2s_blk_gemv; ROW_TILE rows per step."""
    rows = w.shape[0]
    ternary._count(counts, ternary._BLK_GEMV, rows, cols, 1)
    ternary._qsum_groups(q, qsum, 8)
    tiles = rows // ROW_TILE
    for c in prange(tiles):
        r = c * ROW_TILE
        f0, f1, f2, f3 = _rows_blk4(w, d, r, q, qsum, plan)
        out[r] = f0 / s
        out[r + 1] = f1 / s
        out[r + 2] = f2 / s
        out[r + 3] = f3 / s
    for r in range(tiles * ROW_TILE, rows):
        out[r] = _rows_blk1(w, d, r, q, qsum, plan)[0] / s


@njit(cache=True)
def _qsum_transposed(q, qsum):
    """qsum's memory as int32 [nsum, T]: the sum of token t's activations over 256-value block j at j*T+t."""
    ntok = q.shape[0]
    nsum = qsum.shape[1]
    flat = qsum.reshape(ntok * nsum)
    for t in range(ntok):
        values = q[t].reshape(nsum * 256)
        for j in range(nsum):
            part = np.int32(0)
            for i in range(j * 256, (j + 1) * 256):
                part += np.int32(values[i])
            flat[j * ntok + t] = part


@njit(cache=True, parallel=True)
def i2s_blk_gemm_avx2(w, d, q, s, out, qsum, cols, counts, plan):
    """Same contract and result as ternary.i2s_blk_gemm (qsum scratch [T, cols / 256], filled transposed)."""
    rows = w.shape[0]
    ntok = q.shape[0]
    ternary._count(counts, ternary._BLK_GEMM, rows, cols, ntok)
    _qsum_transposed(q, qsum)
    full = ntok - ntok % GEMM_TOKENS
    for c in prange((rows + ternary.ROW_CHUNK - 1) // ternary.ROW_CHUNK):
        r0 = c * ternary.ROW_CHUNK
        r1 = min(rows, r0 + ternary.ROW_CHUNK)
        for t in range(0, full, GEMM_TOKENS):
            for r in range(r0, r1, avx2_ir.GEMM_ROWS):
                _tile_blk_tokens8(w, d, r, min(r1, r + avx2_ir.GEMM_ROWS), q, t, qsum, out)
        for t in range(full, ntok):
            for r in range(r0, r1, avx2_ir.GEMM_ROWS):
                _tile_blk_tokens1(w, d, r, min(r1, r + avx2_ir.GEMM_ROWS), q, t, qsum, out)
        for t in range(ntok):
            for r in range(r0, r1):
                out[t, r] = out[t, r] / s[t]


# ---------------------------------------------------------------- i2s_qk256 (codes through [-2, -1, 1, 2])
@njit(cache=True, parallel=True)
def i2s_qk256_gemv_avx2(w, q, s, out, cols, counts, plan):
    """Same contract and result as ternary.i2s_qk256_gemv; ROW_TILE rows per step."""
    rows = w.shape[0]
    ternary._count(counts, ternary._QK_GEMV, rows, cols, 1)
    sq2 = np.int32(2 * ternary._qsum_total(q))
    tiles = rows // ROW_TILE
    for c in prange(tiles):
        r = c * ROW_TILE
        a0, a1, a2, a3 = _rows_qk4(w, r, q, plan)
        out[r] = np.float32(a0 - sq2) / s
        out[r + 1] = np.float32(a1 - sq2) / s
        out[r + 2] = np.float32(a2 - sq2) / s
        out[r + 3] = np.float32(a3 - sq2) / s
    for r in range(tiles * ROW_TILE, rows):
        out[r] = np.float32(_rows_qk1(w, r, q, plan)[0] - sq2) / s


@njit(cache=True, parallel=True)
def i2s_qk256_gemm_avx2(w, q, s, out, qsum, cols, counts, plan):
    """Same contract and result as ternary.i2s_qk256_gemm (a GEMV per token: QK256 is a parity format)."""
    rows = w.shape[0]
    ntok = q.shape[0]
    ternary._count(counts, ternary._QK_GEMM, rows, cols, ntok)
    for t in range(ntok):
        qsum[t] = np.int32(2 * ternary._qsum_total(q[t]))
    tiles = rows // ROW_TILE
    for t in range(ntok):
        qt = q[t]
        for c in prange(tiles):
            r = c * ROW_TILE
            a0, a1, a2, a3 = _rows_qk4(w, r, qt, plan)
            out[t, r] = np.float32(a0 - qsum[t]) / s[t]
            out[t, r + 1] = np.float32(a1 - qsum[t]) / s[t]
            out[t, r + 2] = np.float32(a2 - qsum[t]) / s[t]
            out[t, r + 3] = np.float32(a3 - qsum[t]) / s[t]
        for r in range(tiles * ROW_TILE, rows):
            out[t, r] = np.float32(_rows_qk1(w, r, qt, plan)[0] - qsum[t]) / s[t]


# ---------------------------------------------------------------- int8 logits
@njit(cache=True, parallel=True)
def _logits_i8(emb_q, emb_s, q, s, u, out, counts, plan):
    vocab, hidden = emb_q.shape
    inv = np.float32(1.0) / np.float32(s)
    for c in range(hidden):
        u[c] = np.uint8(abs(np.int32(q[c])))
    for r in prange(vocab):
        out[r] = np.float32(_i8_row_dot(emb_q, r, u, q, plan)) * emb_s[r] * inv
    ops._count(counts, ops._LOGITS_I8, vocab, vocab * hidden)


def logits_i8_avx2(emb_q, emb_s, emb_sum, q, s, u, out, counts, plan) -> None:
    """Same result as ops.logits_i8 (hidden % 64 == 0, emb_q within [-127, 127]); the VNNI kernel's
    arguments (emb_sum is not read: no unsigned shift here), u = uint8[hidden] scratch for |q|, then the
    prefetch plan."""
    _logits_i8(emb_q, emb_s, q, s, u, out, counts, plan)


# ---------------------------------------------------------------- prefetch distance, measured
PREFETCH_DISTANCES = (0, 1024, 2048, 4096, 8192, 16384)  # finer steps only let noise pick among equals
_PROBE_BYTES = 64 << 20  # twice a 32 MB last-level cache: every pass streams from DRAM
_FILL = 0x99  # codes 2, 1, 2, 1: a valid ternary byte; as int8 -103, a valid int8 embedding value


def time_prefetch(
    kind: str,
    cols: int,
    distances: tuple[int, ...] = PREFETCH_DISTANCES,
    rounds: int = 5,
    nbytes: int = _PROBE_BYTES,
) -> dict[int, float]:
    """Best GB/s of the i2s GEMV (kind "matrix", cols % 128 == 0) or the int8 logits ("logits",
    cols % 64 == 0) over rows of `cols` values at each prefetch distance.

    The GEMV requests the lines `distance` bytes ahead along a tile of I2S_GEMV_ROWS rows (the logits
    along one row), so the distance that keeps every row's next lines in flight grows with the row's
    width (at 6912 columns 2 KB ran at two thirds of 4-8 KB where 2560 columns ran alike): each width is
    timed on its own. One buffer of `nbytes` (larger than the last-level cache) is streamed per call; the
    distances are timed in turns (one call each per round) so that a burst of load from other processes
    falls on all of them alike, and the best call of each is kept.
    """
    row_bytes, step_rows = (cols // 4, I2S_GEMV_ROWS) if kind == "matrix" else (cols, 1)
    data = np.full(nbytes // (row_bytes * step_rows) * (row_bytes * step_rows), _FILL, np.uint8)
    counts = Trace().counts
    plan = np.zeros(1, np.int64)
    if kind == "matrix":
        w = data.reshape(-1, cols // 128, 32)
        q = np.zeros((cols // 128, 4, 32), np.int8)
        out = np.zeros(w.shape[0], np.float32)

        def run():
            i2s_gemv_avx2(w, np.float32(1), q, np.float32(1), out, cols, counts, plan)

    else:
        e = data.view(np.int8).reshape(-1, cols)
        q1, u = np.zeros(cols, np.int8), np.zeros(cols, np.uint8)
        out, scales = np.zeros(e.shape[0], np.float32), np.ones(e.shape[0], np.float32)

        def run():
            _logits_i8(e, scales, q1, np.float32(1), u, out, counts, plan)

    best = dict.fromkeys(distances, 0.0)
    run()  # compile or load, and fault the buffer in
    for _ in range(rounds):
        for d in distances:
            plan[0] = d
            start = time.perf_counter()
            run()
            best[d] = max(best[d], data.nbytes / (time.perf_counter() - start) / 1e9)
    return best
