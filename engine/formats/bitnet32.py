"""BitNet-32 I2_S flavor (type 36): 32-value blocks of 10 bytes over the flattened tensor.

Each block is 8 bytes of 2-bit codes, byte b = e[4b] | e[4b+1] << 2 | e[4b+2] << 4 | e[4b+3] << 6 (low bits
first, like QK256), then the block's fp16 scale. Codes 0, 1, 2 mean -1, 0, +1 times the scale. A last partial
block is padded with value 0 (code 1, so padding bytes are 0x55) and unpack drops the padding.
"""

import numpy as np

from engine.formats.common import block_scales, check_dims, ensure_codes, int_values, raw_bytes

NAME = "bitnet32"
BLOCK_VALUES = 32
BLOCK_BYTES = 10
CODE_BYTES = 8
PAD_CODE = 1
_SHIFTS = np.array((0, 2, 4, 6), dtype=np.uint8)


def n_blocks(rows: int, cols: int) -> int:
    return -(-(rows * cols) // BLOCK_VALUES)


def expected_nbytes(rows: int, cols: int) -> int:
    """ceil(n / 32) x 10 bytes."""
    check_dims(NAME, rows, cols)
    return n_blocks(rows, cols) * BLOCK_BYTES


def pack(values: np.ndarray, scales: np.ndarray | float | None) -> np.ndarray:
    """Ternary int8 [rows, cols] and fp16 scales, one per 32-value block (ceil(n / 32),) -> bytes."""
    v = int_values(NAME, values, (-1, 0, 1))
    rows, cols = v.shape
    nb = n_blocks(rows, cols)
    d = block_scales(NAME, scales, (nb,))
    codes = np.full(nb * BLOCK_VALUES, PAD_CODE, dtype=np.uint8)
    codes[: v.size] = v.reshape(-1).view(np.uint8) + np.uint8(1)  # -1, 0, 1 -> 0, 1, 2 (wraps)
    quads = codes.reshape(nb, CODE_BYTES, 4)
    out = np.empty((nb, BLOCK_BYTES), dtype=np.uint8)
    qs = out[:, :CODE_BYTES]
    qs[...] = quads[:, :, 0]
    for k in (1, 2, 3):
        qs |= quads[:, :, k] << _SHIFTS[k]
    out[:, CODE_BYTES:] = d.view(np.uint8).reshape(nb, 2)
    return out.reshape(-1)


def unpack(raw: np.ndarray, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """The tensor's bytes -> (int8 values [rows, cols], float32 block scales (ceil(n / 32),))."""
    data = raw_bytes(NAME, raw, expected_nbytes(rows, cols)).reshape(-1, BLOCK_BYTES)
    codes = (data[:, :CODE_BYTES, None] >> _SHIFTS[None, None, :]) & np.uint8(3)
    codes = codes.reshape(-1)[: rows * cols]
    ensure_codes(NAME, codes, 3)
    values = (codes.view(np.int8) - np.int8(1)).reshape(rows, cols)
    d = np.ascontiguousarray(data[:, CODE_BYTES:]).view("<f2").astype(np.float32).reshape(-1)
    return values, d


def dequantize(raw: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """float32 [rows, cols] = code value x the scale of its 32-value block."""
    values, d = unpack(raw, rows, cols)
    n = rows * cols
    flat = values.reshape(-1).astype(np.float32) * np.repeat(d, BLOCK_VALUES)[:n]
    return flat.reshape(rows, cols)
