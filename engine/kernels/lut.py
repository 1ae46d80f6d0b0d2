"""Table-lookup ternary kernels (tl1, tl2): weights become table indices at load, activations become tables.

tl1: a row is cut into weight pairs; each pair (a, b) is the 4-bit index 3 (a + 1) + (b + 1) (9 combinations),
two per byte (even pair in the low nibble). Per token, every activation pair gets a table of its 9 sums
a q0 + b q1 (int16, padded to 16 slots), and a row is a sum of table lookups.

tl2: weight triples. A triple and its negation share a table entry: the triple is stored as a 4-bit index
into the 14 sign-canonical triples (`CANON3`: all zero, or first non-zero entry +1) plus a sign bit,
indices two per byte and signs eight per byte (bit g % 8). Per token, every activation triple gets a table
of the 14 sums; a lookup is negated when the sign bit is set. Columns left over when a block is not a
multiple of 3 form one pair group (a triple whose missing column has weight 0 and activation 0).

Layout: rows are stored in tiles of ROW_TILE rows, index bytes interleaved by row inside a tile
(`idx[tiles, bytes, ROW_TILE]`, `sign[tiles, groups / 8, ROW_TILE]`), so one table entry's lookups for
16 rows are one contiguous 16-byte load with lane-uniform shifts: the inner loop runs across rows and
vectorizes, where a per-row walk is a chain of scalar loads. Rows are padded to whole tiles with zero weights.

Scales: a row is split into scale blocks of B columns: B = the whole (padded) row for a per-tensor scale
(I2_S: y = lookups / s * w, the same float order as the i2s kernel), B = 256 for TQ2_0 / TQ1_0, B = 32 for
BitNet-32 (y = sum_b d_b * lookups_b / s). Table groups never cross a scale block. Integer sums are exact
(int16 table entries, int32 accumulation).

Scratch (from the caller): tables, and per-tile int32 / float32 accumulators `[tiles, ROW_TILE]`. The GEMM
builds tables for up to TOKEN_CHUNK tokens at a time, then walks each row tile once per chunk.
"""

import numpy as np
from numba import njit, prange

from engine.trace import CALLS, ELEMENTS, ROWS, kid

_TL1_GEMV = kid("tl1_gemv")
_TL1_GEMM = kid("tl1_gemm")
_TL2_GEMV = kid("tl2_gemv")
_TL2_GEMM = kid("tl2_gemm")

TOKEN_CHUNK = 16
TABLE_SLOTS = 16
ROW_TILE = 16

# tl1: index i <-> pair (i // 3 - 1, i % 3 - 1)
PAIR_A = np.array([i // 3 - 1 for i in range(9)], dtype=np.int16)
PAIR_B = np.array([i % 3 - 1 for i in range(9)], dtype=np.int16)


def _canonical_triples() -> np.ndarray:
    out = [(0, 0, 0)]
    for a in (0, 1):
        for b in (-1, 0, 1):
            for c in (-1, 0, 1):
                t = (a, b, c)
                first = next((v for v in t if v), 0)
                if first == 1 and t not in out:
                    out.append(t)
    return np.array(out, dtype=np.int16)


CANON3 = _canonical_triples()  # (14, 3)
_C3A = np.ascontiguousarray(CANON3[:, 0])
_C3B = np.ascontiguousarray(CANON3[:, 1])
_C3C = np.ascontiguousarray(CANON3[:, 2])


@njit(cache=True)
def _count(counts, k, rows, cols, tokens):
    counts[k, CALLS] += 1
    counts[k, ROWS] += rows * tokens
    counts[k, ELEMENTS] += rows * cols * tokens


# ---- tl1 ---------------------------------------------------------------------------------------------------


@njit(cache=True)
def _tl1_table(q, tab):
    """tab[j, h, i] = a_i q[4j + 2h] + b_i q[4j + 2h + 1] for the pair h of byte j (q padded to 4 * bytes)."""
    for j in range(tab.shape[0]):
        for h in range(2):
            q0 = np.int16(q[4 * j + 2 * h])
            q1 = np.int16(q[4 * j + 2 * h + 1])
            for i in range(9):
                tab[j, h, i] = np.int16(PAIR_A[i] * q0 + PAIR_B[i] * q1)


@njit(cache=True)
def _finish(d, per_tensor, blk, tt, acc, facc):
    """Fold one scale block's integer sums of tile tt into the float accumulators."""
    if per_tensor:
        return
    for rr in range(ROW_TILE):
        facc[rr] = facc[rr] + d[tt * ROW_TILE + rr, blk] * np.float32(acc[rr])


@njit(cache=True)
def _store(d, per_tensor, tt, acc, facc, s, out, rows):
    for rr in range(ROW_TILE):
        r = tt * ROW_TILE + rr
        if r < rows:
            if per_tensor:
                out[r] = np.float32(acc[rr]) / s * d[0, 0]
            else:
                out[r] = facc[rr] / s


@njit(cache=True)
def _tl1_tile(idx, d, per_tensor, tt, tab, s, acc, facc, out, rows):
    nblk = d.shape[1]
    per = idx.shape[1] // nblk
    for rr in range(ROW_TILE):
        facc[rr] = np.float32(0.0)
    for blk in range(nblk):
        for rr in range(ROW_TILE):
            acc[rr] = 0
        for j in range(blk * per, (blk + 1) * per):
            for rr in range(ROW_TILE):
                b = np.int32(idx[tt, j, rr])
                acc[rr] = np.int32(acc[rr] + np.int32(tab[j, 0, b & 15]) + np.int32(tab[j, 1, b >> 4]))
        _finish(d, per_tensor, blk, tt, acc, facc)
    _store(d, per_tensor, tt, acc, facc, s, out, rows)


@njit(cache=True, parallel=True)
def tl1_gemv(idx, d, per_tensor, q, s, out, tab, acc, facc, cols, counts):
    """One token: q int8 padded to 4 * idx.shape[1]; tab int16 scratch [idx.shape[1], 2, 16]."""
    rows = out.shape[0]
    _count(counts, _TL1_GEMV, rows, cols, 1)
    _tl1_table(q, tab)
    for tt in prange(idx.shape[0]):
        _tl1_tile(idx, d, per_tensor, tt, tab, s, acc[tt], facc[tt], out, rows)


@njit(cache=True, parallel=True)
def tl1_gemm(idx, d, per_tensor, q, s, out, tab, acc, facc, cols, counts):
    """T tokens in one call; tab int16 scratch [TOKEN_CHUNK, idx.shape[1], 2, 16]."""
    ntok, rows = out.shape
    _count(counts, _TL1_GEMM, rows, cols, ntok)
    for t0 in range(0, ntok, TOKEN_CHUNK):
        tn = min(TOKEN_CHUNK, ntok - t0)
        for tk in prange(tn):
            _tl1_table(q[t0 + tk], tab[tk])
        for tt in prange(idx.shape[0]):
            for tk in range(tn):
                t = t0 + tk
                _tl1_tile(idx, d, per_tensor, tt, tab[tk], s[t], acc[tt], facc[tt], out[t], rows)


# ---- tl2 ---------------------------------------------------------------------------------------------------


@njit(cache=True)
def _tl2_table(q, gcol, tab):
    """tab[g, i] = CANON3[i] . (q at the group's columns; a column index of -1 reads 0)."""
    for g in range(tab.shape[0]):
        c0 = gcol[g, 0]
        c1 = gcol[g, 1]
        c2 = gcol[g, 2]
        q0 = np.int16(q[c0]) if c0 >= 0 else np.int16(0)
        q1 = np.int16(q[c1]) if c1 >= 0 else np.int16(0)
        q2 = np.int16(q[c2]) if c2 >= 0 else np.int16(0)
        for i in range(14):
            tab[g, i] = np.int16(_C3A[i] * q0 + _C3B[i] * q1 + _C3C[i] * q2)


@njit(cache=True)
def _tl2_tile(idx, sign, d, per_tensor, groups_per_block, tt, tab, s, acc, facc, out, rows):
    nblk = d.shape[1]
    for rr in range(ROW_TILE):
        facc[rr] = np.float32(0.0)
    for blk in range(nblk):
        for rr in range(ROW_TILE):
            acc[rr] = 0
        for g in range(blk * groups_per_block, (blk + 1) * groups_per_block):
            jb = g >> 1
            sh = (g & 1) << 2
            js = g >> 3
            bit = g & 7
            for rr in range(ROW_TILE):
                nib = (np.int32(idx[tt, jb, rr]) >> sh) & 15
                neg = -((np.int32(sign[tt, js, rr]) >> bit) & 1)
                v = np.int32(tab[g, nib])
                acc[rr] = np.int32(acc[rr] + np.int32((v ^ neg) - neg))
        _finish(d, per_tensor, blk, tt, acc, facc)
    _store(d, per_tensor, tt, acc, facc, s, out, rows)


@njit(cache=True, parallel=True)
def tl2_gemv(idx, sign, d, per_tensor, groups_per_block, gcol, q, s, out, tab, acc, facc, cols, counts):
    """One token; tab int16 scratch [groups, 16] (groups = gcol.shape[0])."""
    rows = out.shape[0]
    _count(counts, _TL2_GEMV, rows, cols, 1)
    _tl2_table(q, gcol, tab)
    for tt in prange(idx.shape[0]):
        _tl2_tile(idx, sign, d, per_tensor, groups_per_block, tt, tab, s, acc[tt], facc[tt], out, rows)


@njit(cache=True, parallel=True)
def tl2_gemm(idx, sign, d, per_tensor, groups_per_block, gcol, q, s, out, tab, acc, facc, cols, counts):
    """T tokens in one call; tab int16 scratch [TOKEN_CHUNK, groups, 16]."""
    ntok, rows = out.shape
    _count(counts, _TL2_GEMM, rows, cols, ntok)
    for t0 in range(0, ntok, TOKEN_CHUNK):
        tn = min(TOKEN_CHUNK, ntok - t0)
        for tk in prange(tn):
            _tl2_table(q[t0 + tk], gcol, tab[tk])
        for tt in prange(idx.shape[0]):
            for tk in range(tn):
                t = t0 + tk
                _tl2_tile(
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
