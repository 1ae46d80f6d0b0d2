"""Microsoft x86 I2_S (type 36): 2-bit ternary codes in 128-value blocks, one float32 scale per tensor.

Value j of a 32-byte block sits in byte j % 32 at bit shift 6 - 2 * (j // 32); codes 0, 1, 2 mean -1, 0, +1.
The float32 scale sits at byte n/4, followed by zero padding up to n/4 + 32 bytes.
"""

import numpy as np

from engine.formats.common import FormatError, check_dims, ensure_codes, int_values, raw_bytes

NAME = "i2s"
BLOCK_VALUES = 128
BLOCK_BYTES = 32
TAIL_BYTES = 32  # the float32 scale and its padding
_SHIFTS = (6, 4, 2, 0)


def expected_nbytes(rows: int, cols: int) -> int:
    """n/4 + 32 bytes, the size bitnet.cpp gives an I2_S tensor of n values."""
    check_dims(NAME, rows, cols)
    return rows * cols // 4 + TAIL_BYTES


def _check_blocks(rows: int, cols: int) -> int:
    n = rows * cols
    if n % BLOCK_VALUES:
        raise FormatError(f"{NAME}: {rows} x {cols} = {n} values is not a whole number of 128-value blocks")
    return n


def _tensor_scale(scales: np.ndarray | float | None) -> np.float32:
    if scales is None:
        raise FormatError(f"{NAME}: needs one per-tensor scale")
    arr = np.asarray(scales, dtype=np.float64).reshape(-1)
    if arr.size != 1 or not np.isfinite(arr[0]):
        raise FormatError(f"{NAME}: needs exactly one finite per-tensor scale, got {arr.size} values")
    return np.float32(arr[0])


def pack(values: np.ndarray, scales: np.ndarray | float | None) -> np.ndarray:
    """Ternary int8 [rows, cols] and one scale -> the tensor's bytes."""
    v = int_values(NAME, values, (-1, 0, 1))
    rows, cols = v.shape
    n = _check_blocks(rows, cols)
    scale = _tensor_scale(scales)
    codes = v.reshape(-1, 4, BLOCK_BYTES).view(np.uint8) + np.uint8(1)  # -1, 0, 1 -> 0, 1, 2 (wraps)
    out = np.zeros(expected_nbytes(rows, cols), dtype=np.uint8)
    body = out[: n // 4].reshape(-1, BLOCK_BYTES)
    np.left_shift(codes[:, 0], 6, out=body)
    for k in (1, 2, 3):
        body |= codes[:, k] << np.uint8(_SHIFTS[k])
    out[n // 4 : n // 4 + 4] = np.frombuffer(scale.astype("<f4").tobytes(), dtype=np.uint8)
    return out


def unpack(raw: np.ndarray, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """The tensor's bytes -> (int8 values [rows, cols], float32 scale of shape (1,))."""
    data = raw_bytes(NAME, raw, expected_nbytes(rows, cols))
    n = _check_blocks(rows, cols)
    body = data[: n // 4].reshape(-1, 1, BLOCK_BYTES)
    codes = (body >> np.array(_SHIFTS, dtype=np.uint8).reshape(1, 4, 1)) & np.uint8(3)
    ensure_codes(NAME, codes, 3)
    values = (codes.view(np.int8) - np.int8(1)).reshape(rows, cols)
    scale = np.frombuffer(data[n // 4 : n // 4 + 4].tobytes(), dtype="<f4").astype(np.float32)
    return values, scale


def dequantize(raw: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """float32 [rows, cols] = code value x the tensor scale."""
    values, scale = unpack(raw, rows, cols)
    return values.astype(np.float32) * scale[0]
