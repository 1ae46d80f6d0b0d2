"""TQ2_0 (type 35, ggml upstream): 256-value blocks of 66 bytes, 2-bit codes then an fp16 scale d.

Inside each 32-byte half of a block, value m + 32 * k sits at bit shift 2 * k of byte m (low bits first);
code c means (c - 1) * d. Blocks never cross rows, so columns must be a multiple of 256.
"""

import numpy as np

from engine.formats.common import (
    block_scales,
    check_cols_multiple,
    check_dims,
    ensure_codes,
    int_values,
    raw_bytes,
)

NAME = "tq2_0"
BLOCK_VALUES = 256
BLOCK_BYTES = 66
CODE_BYTES = 64
_SHIFTS = np.array((0, 2, 4, 6), dtype=np.uint8)


def expected_nbytes(rows: int, cols: int) -> int:
    """66 bytes per 256-value block."""
    check_dims(NAME, rows, cols)
    check_cols_multiple(NAME, cols, BLOCK_VALUES)
    return rows * (cols // BLOCK_VALUES) * BLOCK_BYTES


def pack(values: np.ndarray, scales: np.ndarray | float | None) -> np.ndarray:
    """Ternary int8 [rows, cols] and fp16 block scales [rows, cols // 256] -> the tensor's bytes."""
    v = int_values(NAME, values, (-1, 0, 1))
    rows, cols = v.shape
    nbytes = expected_nbytes(rows, cols)
    d = block_scales(NAME, scales, (rows, cols // BLOCK_VALUES)).reshape(-1)
    codes = v.reshape(-1, 2, 4, 32).view(np.uint8) + np.uint8(1)  # -1, 0, 1 -> 0, 1, 2 (wraps)
    out = np.empty((d.size, BLOCK_BYTES), dtype=np.uint8)
    qs = out[:, :CODE_BYTES].reshape(-1, 2, 32)
    qs[...] = codes[:, :, 0]
    for k in (1, 2, 3):
        qs |= codes[:, :, k] << _SHIFTS[k]
    out[:, CODE_BYTES:] = d.view(np.uint8).reshape(-1, 2)
    return out.reshape(nbytes)


def unpack(raw: np.ndarray, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """The tensor's bytes -> (int8 values [rows, cols], float32 block scales [rows, cols // 256])."""
    data = raw_bytes(NAME, raw, expected_nbytes(rows, cols)).reshape(-1, BLOCK_BYTES)
    qs = data[:, :CODE_BYTES].reshape(-1, 2, 1, 32)
    codes = (qs >> _SHIFTS.reshape(1, 1, 4, 1)) & np.uint8(3)
    ensure_codes(NAME, codes, 3)
    d = np.ascontiguousarray(data[:, CODE_BYTES:]).view("<f2").astype(np.float32)
    values = (codes.view(np.int8) - np.int8(1)).reshape(rows, cols)
    return values, d.reshape(rows, cols // BLOCK_VALUES)


def dequantize(raw: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """float32 [rows, cols] = (code - 1) x block scale."""
    values, d = unpack(raw, rows, cols)
    blocks = values.astype(np.float32).reshape(rows, -1, BLOCK_VALUES) * d[:, :, None]
    return blocks.reshape(rows, cols)
