"""The i2s kernel family: 2-bit weight codes x int8 activations, exact integer sums, scales once per output.

All four variants read one execution layout, the microsoft x86 I2_S block order: a row is cut into 128-value
blocks of 32 bytes, value `32 g + b` of a block sits in byte `b` at bit shift `6 - 2 g`. Weights arrive as
`w[rows, cols / 128, 32]` (uint8) and activations as `q[cols / 128, 4, 32]` (int8; `[T, cols / 128, 4, 32]`
for the GEMM), so every inner loop runs over 32 contiguous bytes with `range` indices and vectorizes
(vpmovsxbw / vpmullw / vpaddw on this machine).

Codes are unsigned (0, 1, 2 mean -1, 0, +1), so a block sum is `sum code * q - sum q`; the sum of the
activations is taken once per token (and per scale block), never per row. Products are summed in int16 over
one 128-value block (|sum| <= 2 * 128 * 128 = 32768, exact) and in int32 across blocks; float math happens
once per scale block.

- `i2s`: one float32 scale per tensor: y = (sum code*q - sum q) / s * w.
- `i2s_blk` (TQ2_0 / TQ1_0 repacked at load): one scale d per 256-value block of a row:
  y = (sum_b d_b * (sum_{i in b} v_i q_i)) / s, blocks accumulated in order in float32.
- `i2s_b32` (BitNet-32 repacked at load): the same with 32-value blocks (one bit plane group of a 128-block).
- `i2s_qk256`: codes c through [-2, -1, 1, 2] = c + (c >> 1) - 2, no scale: y = sum v*q / s. int16 sums run
  over 64 values there (4 * 128 * 64 = 32768).

Every kernel adds its own trace row (calls, output rows x tokens, rows x cols x tokens) before its parallel
loop; `cols` is the logical width (layouts may pad a row with zero activations up to a whole block).
"""

import numpy as np
from numba import njit, prange

from engine.trace import CALLS, ELEMENTS, ROWS, kid

# GEMMs walk rows in chunks (in parallel) and tokens inside a chunk, so a chunk's weights stay in L2 and one
# token's activations stay in L1 while the chunk's rows pass over them.
ROW_CHUNK = 64

_I2S_GEMV = kid("i2s_gemv")
_I2S_GEMM = kid("i2s_gemm")
_BLK_GEMV = kid("i2s_blk_gemv")
_BLK_GEMM = kid("i2s_blk_gemm")
_QK_GEMV = kid("i2s_qk256_gemv")
_QK_GEMM = kid("i2s_qk256_gemm")
_B32_GEMV = kid("i2s_b32_gemv")
_B32_GEMM = kid("i2s_b32_gemm")


@njit(cache=True)
def _count(counts, k, rows, cols, tokens):
    counts[k, CALLS] += 1
    counts[k, ROWS] += rows * tokens
    counts[k, ELEMENTS] += rows * cols * tokens


@njit(cache=True)
def _dot128(w, r, k, q):
    """sum code * q over block k of row r, int16 (exact for codes 0..2)."""
    a = np.int16(0)
    for b in range(32):
        wb = np.int16(w[r, k, b])
        p0 = np.int16(((wb >> 6) & 3) * np.int16(q[k, 0, b]))
        p1 = np.int16(((wb >> 4) & 3) * np.int16(q[k, 1, b]))
        p2 = np.int16(((wb >> 2) & 3) * np.int16(q[k, 2, b]))
        p3 = np.int16((wb & 3) * np.int16(q[k, 3, b]))
        a = np.int16(a + np.int16(np.int16(p0 + p1) + np.int16(p2 + p3)))
    return a


@njit(cache=True)
def _dot32x4(w, r, k, q):
    """The four 32-value group sums of code * q in block k of row r (each int16)."""
    a0 = np.int16(0)
    a1 = np.int16(0)
    a2 = np.int16(0)
    a3 = np.int16(0)
    for b in range(32):
        wb = np.int16(w[r, k, b])
        a0 = np.int16(a0 + np.int16(np.int16((wb >> 6) & 3) * np.int16(q[k, 0, b])))
        a1 = np.int16(a1 + np.int16(np.int16((wb >> 4) & 3) * np.int16(q[k, 1, b])))
        a2 = np.int16(a2 + np.int16(np.int16((wb >> 2) & 3) * np.int16(q[k, 2, b])))
        a3 = np.int16(a3 + np.int16(np.int16(wb & 3) * np.int16(q[k, 3, b])))
    return a0, a1, a2, a3


@njit(cache=True)
def _dot_qk(w, r, k, q):
    """sum (c + (c >> 1)) * q over block k of row r, in int32 (two int16 halves of 64 values)."""
    a0 = np.int16(0)
    a1 = np.int16(0)
    for b in range(32):
        wb = np.int16(w[r, k, b])
        c0 = np.int16((wb >> 6) & 3)
        c1 = np.int16((wb >> 4) & 3)
        c2 = np.int16((wb >> 2) & 3)
        c3 = np.int16(wb & 3)
        p0 = np.int16(np.int16(c0 + np.int16(c0 >> 1)) * np.int16(q[k, 0, b]))
        p1 = np.int16(np.int16(c1 + np.int16(c1 >> 1)) * np.int16(q[k, 1, b]))
        p2 = np.int16(np.int16(c2 + np.int16(c2 >> 1)) * np.int16(q[k, 2, b]))
        p3 = np.int16(np.int16(c3 + np.int16(c3 >> 1)) * np.int16(q[k, 3, b]))
        a0 = np.int16(a0 + np.int16(p0 + p1))
        a1 = np.int16(a1 + np.int16(p2 + p3))
    return np.int32(np.int32(a0) + np.int32(a1))


@njit(cache=True)
def _qsum_total(q):
    total = np.int32(0)
    for k in range(q.shape[0]):
        for g in range(4):
            for b in range(32):
                total = np.int32(total + np.int32(q[k, g, b]))
    return total


@njit(cache=True)
def _qsum_groups(q, out, per):
    """out[j] = sum of q over the j-th run of `per` consecutive 32-value groups (per in 1, 4, 8)."""
    nb = q.shape[0]
    for j in range(out.shape[0]):
        out[j] = 0
    for k in range(nb):
        for g in range(4):
            part = np.int32(0)
            for b in range(32):
                part = np.int32(part + np.int32(q[k, g, b]))
            j = (4 * k + g) // per
            out[j] = np.int32(out[j] + part)


# ---- i2s: one scale per tensor (zero copy over the memmapped bytes) -------------------------------------


@njit(cache=True, parallel=True)
def i2s_gemv(w, scale, q, s, out, cols, counts):
    """out[r] = (sum code*q - sum q) / s * scale for one token."""
    rows, nb, _ = w.shape
    _count(counts, _I2S_GEMV, rows, cols, 1)
    sq = _qsum_total(q)
    for r in prange(rows):
        acc = np.int32(0)
        for k in range(nb):
            acc = np.int32(acc + np.int32(_dot128(w, r, k, q)))
        out[r] = np.float32(acc - sq) / s * scale


@njit(cache=True, parallel=True)
def i2s_gemm(w, scale, q, s, out, qsum, cols, counts):
    """out[t, r] for T tokens in one call (row chunks in parallel, tokens inside a chunk)."""
    rows, nb, _ = w.shape
    ntok = q.shape[0]
    _count(counts, _I2S_GEMM, rows, cols, ntok)
    for t in range(ntok):
        qsum[t] = _qsum_total(q[t])
    for c in prange((rows + ROW_CHUNK - 1) // ROW_CHUNK):
        for t in range(ntok):
            qt = q[t]
            for r in range(c * ROW_CHUNK, min(rows, (c + 1) * ROW_CHUNK)):
                acc = np.int32(0)
                for k in range(nb):
                    acc = np.int32(acc + np.int32(_dot128(w, r, k, qt)))
                out[t, r] = np.float32(acc - qsum[t]) / s[t] * scale


# ---- i2s_blk: one scale per 256-value block of a row (TQ2_0 / TQ1_0) --------------------------------------


@njit(cache=True)
def _blk_row(w, d, r, q, qsum):
    facc = np.float32(0.0)
    for j in range(d.shape[1]):
        a = np.int32(np.int32(_dot128(w, r, 2 * j, q)) + np.int32(_dot128(w, r, 2 * j + 1, q)))
        facc = facc + d[r, j] * np.float32(a - qsum[j])
    return facc


@njit(cache=True, parallel=True)
def i2s_blk_gemv(w, d, q, s, out, qsum, cols, counts):
    """out[r] = sum_b d[r, b] * (sum_{i in b} v_i q_i) / s; qsum is int32 scratch of cols / 256."""
    rows = w.shape[0]
    _count(counts, _BLK_GEMV, rows, cols, 1)
    _qsum_groups(q, qsum, 8)
    for r in prange(rows):
        out[r] = _blk_row(w, d, r, q, qsum) / s


@njit(cache=True, parallel=True)
def i2s_blk_gemm(w, d, q, s, out, qsum, cols, counts):
    """T tokens in one call; qsum is int32 scratch [T, cols / 256]."""
    rows = w.shape[0]
    ntok = q.shape[0]
    _count(counts, _BLK_GEMM, rows, cols, ntok)
    for t in range(ntok):
        _qsum_groups(q[t], qsum[t], 8)
    for c in prange((rows + ROW_CHUNK - 1) // ROW_CHUNK):
        for t in range(ntok):
            for r in range(c * ROW_CHUNK, min(rows, (c + 1) * ROW_CHUNK)):
                out[t, r] = _blk_row(w, d, r, q[t], qsum[t]) / s[t]


# ---- i2s_b32: one scale per 32-value block (BitNet-32) ---------------------------------------------------


@njit(cache=True)
def _b32_row(w, d, r, q, qsum):
    facc = np.float32(0.0)
    for k in range(w.shape[1]):
        a0, a1, a2, a3 = _dot32x4(w, r, k, q)
        j = 4 * k
        facc = facc + d[r, j] * np.float32(np.int32(a0) - qsum[j])
        facc = facc + d[r, j + 1] * np.float32(np.int32(a1) - qsum[j + 1])
        facc = facc + d[r, j + 2] * np.float32(np.int32(a2) - qsum[j + 2])
        facc = facc + d[r, j + 3] * np.float32(np.int32(a3) - qsum[j + 3])
    return facc


@njit(cache=True, parallel=True)
def i2s_b32_gemv(w, d, q, s, out, qsum, cols, counts):
    """out[r] = sum_b d[r, b] * (sum_{i in b} v_i q_i) / s over 32-value blocks; qsum int32 [cols_p / 32]."""
    rows = w.shape[0]
    _count(counts, _B32_GEMV, rows, cols, 1)
    _qsum_groups(q, qsum, 1)
    for r in prange(rows):
        out[r] = _b32_row(w, d, r, q, qsum) / s


@njit(cache=True, parallel=True)
def i2s_b32_gemm(w, d, q, s, out, qsum, cols, counts):
    """T tokens in one call; qsum is int32 scratch [T, cols_p / 32]."""
    rows = w.shape[0]
    ntok = q.shape[0]
    _count(counts, _B32_GEMM, rows, cols, ntok)
    for t in range(ntok):
        _qsum_groups(q[t], qsum[t], 1)
    for c in prange((rows + ROW_CHUNK - 1) // ROW_CHUNK):
        for t in range(ntok):
            for r in range(c * ROW_CHUNK, min(rows, (c + 1) * ROW_CHUNK)):
                out[t, r] = _b32_row(w, d, r, q[t], qsum[t]) / s[t]


# ---- i2s_qk256: codes through [-2, -1, 1, 2], no scale ----------------------------------------------------


@njit(cache=True, parallel=True)
def i2s_qk256_gemv(w, q, s, out, cols, counts):
    """out[r] = (sum (c + (c >> 1)) q - 2 sum q) / s."""
    rows, nb, _ = w.shape
    _count(counts, _QK_GEMV, rows, cols, 1)
    sq2 = np.int32(2 * _qsum_total(q))
    for r in prange(rows):
        acc = np.int32(0)
        for k in range(nb):
            acc = np.int32(acc + _dot_qk(w, r, k, q))
        out[r] = np.float32(acc - sq2) / s


@njit(cache=True, parallel=True)
def i2s_qk256_gemm(w, q, s, out, qsum, cols, counts):
    """T tokens in one call; qsum is int32 scratch [T]."""
    rows, nb, _ = w.shape
    ntok = q.shape[0]
    _count(counts, _QK_GEMM, rows, cols, ntok)
    for t in range(ntok):
        qsum[t] = np.int32(2 * _qsum_total(q[t]))
    for c in prange((rows + ROW_CHUNK - 1) // ROW_CHUNK):
        for t in range(ntok):
            qt = q[t]
            for r in range(c * ROW_CHUNK, min(rows, (c + 1) * ROW_CHUNK)):
                acc = np.int32(0)
                for k in range(nb):
                    acc = np.int32(acc + _dot_qk(w, r, k, qt))
                out[t, r] = np.float32(acc - qsum[t]) / s[t]


_CODE3_CHUNK = 8192  # words per parallel chunk (64 KB)
_LOW_BITS = np.uint64(0x5555555555555555)


@njit(cache=True, parallel=True)
def _code3_words(words):
    """True when any 2-bit field of the uint64 words holds 3 (both bits set); vectorized over 64-bit lanes."""
    n = words.shape[0]
    found = 0
    for c in prange((n + _CODE3_CHUNK - 1) // _CODE3_CHUNK):
        bad = np.uint64(0)
        for i in range(c * _CODE3_CHUNK, min(n, (c + 1) * _CODE3_CHUNK)):
            w = words[i]
            bad |= w & (w >> np.uint64(1)) & _LOW_BITS
        if bad != 0:
            found += 1
    return found > 0


def has_code3(raw: np.ndarray) -> bool:
    """True when any 2-bit field of the bytes `raw` holds 3 (ternary I2_S never does; sums assume it).

    Read as 64-bit words (the check runs over every weight byte at load: 850 MB for 2B-4T), the last few
    bytes apart.
    """
    raw = np.ascontiguousarray(raw, dtype=np.uint8).reshape(-1)
    whole = raw.size // 8 * 8
    tail = raw[whole:]
    if np.any(tail & (tail >> 1) & 0x55):
        return True
    return bool(_code3_words(raw[:whole].view(np.uint64))) if whole else False
