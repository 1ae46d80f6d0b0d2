"""TQ1_0 (type 34, ggml upstream): 256-value blocks of 54 bytes holding base-3 digits as fixed point, fp16 d.

A byte holds up to five trits t0..t4 (t0 most significant) as
ceil((81 t0 + 27 t1 + 9 t2 + 3 t3 + t4) * 256 / 243); digit n comes back as ((byte * 3^n) mod 256) * 3 >> 8.
qs[0..31] hold values m + 32 n (n = 0..4), qs[32..47] hold 160 + m + 16 n, qh[0..3] hold 240 + j + 4 n
(n = 0..3). Trit t means (t - 1) * d.
"""

import numpy as np

from engine.formats.common import block_scales, check_cols_multiple, check_dims, int_values, raw_bytes

NAME = "tq1_0"
BLOCK_VALUES = 256
BLOCK_BYTES = 54
QS_BYTES = 48
QH_BYTES = 4
_POW5 = np.array((81, 27, 9, 3, 1), dtype=np.uint8)
_POW4 = np.array((81, 27, 9, 3), dtype=np.uint8)
_MUL5 = np.array((1, 3, 9, 27, 81), dtype=np.uint8)
_MUL4 = np.array((1, 3, 9, 27), dtype=np.uint8)
# (first value, trits per byte, bytes) of the three groups of a block
_GROUPS = ((0, 5, 32), (160, 5, 16), (240, 4, 4))


def expected_nbytes(rows: int, cols: int) -> int:
    """54 bytes per 256-value block."""
    check_dims(NAME, rows, cols)
    check_cols_multiple(NAME, cols, BLOCK_VALUES)
    return rows * (cols // BLOCK_VALUES) * BLOCK_BYTES


def _encode(trits: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """trits [blocks, digits, bytes] -> fixed-point bytes [blocks, bytes]."""
    number = np.zeros(trits.shape[::2], dtype=np.uint16)
    for i, w in enumerate(weights):
        number += trits[:, i, :].astype(np.uint16) * np.uint16(w)
    return ((number * np.uint16(256) + np.uint16(242)) // np.uint16(243)).astype(np.uint8)


def _decode(qbytes: np.ndarray, mults: np.ndarray) -> np.ndarray:
    """fixed-point bytes [blocks, bytes] -> trits [blocks, digits * bytes] in value order."""
    shifted = qbytes[:, None, :] * mults[None, :, None]  # uint8: the product wraps mod 256
    trits = (shifted.astype(np.uint16) * np.uint16(3)) >> np.uint16(8)
    return trits.astype(np.int8).reshape(qbytes.shape[0], -1)


def pack(values: np.ndarray, scales: np.ndarray | float | None) -> np.ndarray:
    """Ternary int8 [rows, cols] and fp16 block scales [rows, cols // 256] -> the tensor's bytes."""
    v = int_values(NAME, values, (-1, 0, 1))
    rows, cols = v.shape
    nbytes = expected_nbytes(rows, cols)
    d = block_scales(NAME, scales, (rows, cols // BLOCK_VALUES)).reshape(-1)
    trits = v.reshape(-1, BLOCK_VALUES).view(np.uint8) + np.uint8(1)  # -1, 0, 1 -> 0, 1, 2 (wraps)
    out = np.empty((d.size, BLOCK_BYTES), dtype=np.uint8)
    pos = 0
    for first, digits, nb in _GROUPS:
        group = trits[:, first : first + digits * nb].reshape(-1, digits, nb)
        out[:, pos : pos + nb] = _encode(group, _POW5 if digits == 5 else _POW4)
        pos += nb
    out[:, pos:] = d.view(np.uint8).reshape(-1, 2)
    return out.reshape(nbytes)


def unpack(raw: np.ndarray, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """The tensor's bytes -> (int8 values [rows, cols], float32 block scales [rows, cols // 256])."""
    data = raw_bytes(NAME, raw, expected_nbytes(rows, cols)).reshape(-1, BLOCK_BYTES)
    parts = []
    pos = 0
    for _, digits, nb in _GROUPS:
        parts.append(_decode(data[:, pos : pos + nb], _MUL5 if digits == 5 else _MUL4))
        pos += nb
    values = np.concatenate(parts, axis=1) - np.int8(1)
    d = np.ascontiguousarray(data[:, pos:]).view("<f2").astype(np.float32)
    return values.reshape(rows, cols), d.reshape(rows, cols // BLOCK_VALUES)


def dequantize(raw: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """float32 [rows, cols] = (trit - 1) x block scale."""
    values, d = unpack(raw, rows, cols)
    blocks = values.astype(np.float32).reshape(rows, -1, BLOCK_VALUES) * d[:, :, None]
    return blocks.reshape(rows, cols)
