"""Zeroed arrays that start on a cache line: a 32-byte vector load from them never straddles two lines.

numpy only promises 16-byte alignment, and a [tokens, width] int8 buffer of a prompt lands 16 or 32 bytes
past a line depending on the allocator. At 16 every other 32-byte load of the AVX2 GEMM splits across two
lines, which costs it about a sixth of its speed.
"""

import numpy as np

LINE = 64


def aligned_zeros(shape: tuple[int, ...], dtype: type, align: int = LINE) -> np.ndarray:
    """np.zeros(shape, dtype) whose data starts at a multiple of `align` bytes (a cache line by default)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = np.zeros(nbytes + align, np.uint8)
    start = -raw.ctypes.data % align
    return raw[start : start + nbytes].view(dtype).reshape(shape)
