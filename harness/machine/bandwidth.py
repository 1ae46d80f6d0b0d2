"""Measured memory read bandwidth: the floor that a memory-bound decode step is compared against."""

import time

import numba
import numpy as np

_PROBE_BYTES = 256 * 1024 * 1024
_CHUNK = 4096


@numba.njit(parallel=True, cache=True)
def _sum_chunks(words: np.ndarray) -> np.int64:
    n_chunks = words.shape[0]
    total = np.int64(0)
    for c in numba.prange(n_chunks):
        acc = np.int64(0)
        for j in range(words.shape[1]):
            acc += words[c, j]
        total += acc
    return total


def measure_read_bandwidth(nbytes: int = _PROBE_BYTES, passes: int = 7) -> float:
    """Best-of-passes read bandwidth in GB/s (1e9 bytes) over a buffer larger than any cache."""
    words = np.ones((max(nbytes // 8 // _CHUNK, 1), _CHUNK), dtype=np.int64)
    _sum_chunks(words[:1])
    best = float("inf")
    for _ in range(passes):
        start = time.perf_counter()
        _sum_chunks(words)
        best = min(best, time.perf_counter() - start)
    return words.nbytes / best / 1e9
