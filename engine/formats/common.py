"""Input checks shared by the format modules, so every format rejects bad input with the same error."""

import numpy as np

from engine.errors import EngineError, TensorSizeError


class FormatError(EngineError):
    """Values, scales or dimensions that a weight format cannot represent."""


def check_dims(fmt: str, rows: int, cols: int) -> None:
    """Rows and columns must be positive integers."""
    integral = all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) for d in (rows, cols))
    if not integral or rows <= 0 or cols <= 0:
        raise FormatError(f"{fmt}: matrix dimensions must be positive integers, got {rows} x {cols}")


def check_cols_multiple(fmt: str, cols: int, block: int) -> None:
    """Row-blocked formats need whole blocks in every row."""
    if cols % block:
        raise FormatError(f"{fmt}: columns ({cols}) must be a multiple of {block}")


def int_values(fmt: str, values: np.ndarray, allowed: tuple[int, ...]) -> np.ndarray:
    """`values` as a C-contiguous 2-D int8 array, after checking every entry lies in the range `allowed`."""
    arr = np.asarray(values)
    if arr.ndim != 2:
        raise FormatError(f"{fmt}: values must be a 2-D [rows, cols] array, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise FormatError(f"{fmt}: values must be an integer array, got {arr.dtype}")
    check_dims(fmt, arr.shape[0], arr.shape[1])
    lo, hi = int(arr.min()), int(arr.max())
    if lo < min(allowed) or hi > max(allowed):
        raise FormatError(f"{fmt}: values must lie in {list(allowed)}, found range [{lo}, {hi}]")
    return np.ascontiguousarray(arr, dtype=np.int8)


def raw_bytes(fmt: str, raw: np.ndarray, expected: int) -> np.ndarray:
    """The tensor bytes as a flat uint8 array, after checking the size is exactly `expected`."""
    arr = np.asarray(raw)
    if arr.dtype != np.uint8:
        raise FormatError(f"{fmt}: raw tensor data must be uint8, got {arr.dtype}")
    arr = arr.reshape(-1)
    if arr.size != expected:
        raise TensorSizeError(f"{fmt}: tensor holds {arr.size} bytes, the layout needs {expected}")
    return arr


def block_scales(fmt: str, scales: np.ndarray | float | None, shape: tuple[int, ...]) -> np.ndarray:
    """Scales broadcast to `shape` as little-endian fp16 (a scalar means one value for every block)."""
    if scales is None:
        raise FormatError(f"{fmt}: needs block scales of shape {shape}")
    arr = np.asarray(scales, dtype=np.float64)
    try:
        arr = np.broadcast_to(arr, shape)
    except ValueError:
        raise FormatError(f"{fmt}: scales of shape {arr.shape} do not fit blocks of shape {shape}") from None
    if not np.all(np.isfinite(arr)):
        raise FormatError(f"{fmt}: scales must be finite")
    limit = float(np.finfo(np.float16).max)
    if arr.size and float(np.abs(arr).max()) > limit:
        raise FormatError(f"{fmt}: scales overflow fp16 (max {limit})")
    return np.ascontiguousarray(arr.astype("<f2"))


def ensure_codes(fmt: str, codes: np.ndarray, limit: int) -> None:
    """Decoded 2-bit codes must stay below `limit` (ternary layouts never store code 3)."""
    if codes.size and int(codes.max()) >= limit:
        raise FormatError(f"{fmt}: tensor holds 2-bit code {int(codes.max())}, which the layout never uses")
