"""I2_S QK256 flavor (type 36): 256-value blocks of exactly 64 bytes, no scale anywhere in the tensor.

Byte = e0 | e1 << 2 | e2 << 4 | e3 << 6 for four consecutive values (low bits first); code c means
[-2, -1, +1, +2][c]. Blocks never cross rows: a row whose length is not a multiple of 256 is padded to whole
blocks. Padding bytes are 0x00 (code 0 everywhere); they decode to nothing, since unpack returns exactly
[rows, cols], and a kernel must stop at `cols` (or multiply the padding by zero activations).
"""

import numpy as np

from engine.formats.common import FormatError, check_dims, int_values, raw_bytes

NAME = "qk256"
BLOCK_VALUES = 256
BLOCK_BYTES = 64
PAD_CODE = 0  # padding bytes are 0x00
TABLE = np.array((-2, -1, 1, 2), dtype=np.int8)
_SHIFTS = np.array((0, 2, 4, 6), dtype=np.uint8)


def blocks_per_row(cols: int) -> int:
    return -(-cols // BLOCK_VALUES)


def expected_nbytes(rows: int, cols: int) -> int:
    """rows x ceil(cols / 256) x 64 bytes."""
    check_dims(NAME, rows, cols)
    return rows * blocks_per_row(cols) * BLOCK_BYTES


def pack(values: np.ndarray, scales: np.ndarray | float | None = None) -> np.ndarray:
    """Values int8 [rows, cols] in {-2, -1, 1, 2} -> the tensor's bytes (the format has no scales)."""
    if scales is not None and np.asarray(scales).size:
        raise FormatError(f"{NAME}: the format stores no scales; pass None")
    v = int_values(NAME, values, (-2, -1, 0, 1, 2))
    if not v.all():
        raise FormatError(f"{NAME}: values must be in [-2, -1, 1, 2]; 0 cannot be stored")
    rows, cols = v.shape
    padded = blocks_per_row(cols) * BLOCK_VALUES
    codes = np.full((rows, padded), PAD_CODE, dtype=np.uint8)
    codes[:, :cols] = v.view(np.uint8) + np.uint8(2) - (v > 0).view(np.uint8)  # -2, -1, 1, 2 -> 0, 1, 2, 3
    quads = codes.reshape(-1, 4)
    out = quads[:, 0].copy()
    for k in (1, 2, 3):
        out |= quads[:, k] << _SHIFTS[k]
    return out


def unpack(raw: np.ndarray, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """The tensor's bytes -> (int8 values [rows, cols] in {-2, -1, 1, 2}, an empty float32 scale array)."""
    data = raw_bytes(NAME, raw, expected_nbytes(rows, cols))
    codes = (data[:, None] >> _SHIFTS[None, :]) & np.uint8(3)
    values = TABLE[codes.reshape(rows, -1)[:, :cols]]
    return values, np.empty(0, dtype=np.float32)


def dequantize(raw: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """float32 [rows, cols] through the table [-2, -1, +1, +2]."""
    values, _ = unpack(raw, rows, cols)
    return values.astype(np.float32)
