"""madvise() for the memory behind numpy arrays: page-level hints the engine gives the OS.

Two uses: the KV cache opts out of transparent huge pages (a touched key would otherwise map 2 MB), and the
read-only file mapping of the embedding drops its pages once the int8 copy is built (RSS falls back; the
OS re-reads a page only if it is touched again).
"""

import ctypes
import mmap

import numpy as np


def advise(arr: np.ndarray, advice: str) -> None:
    """madvise() on the whole pages inside an array's memory; skipped where the OS lacks that advice."""
    value = getattr(mmap, advice, None)
    if value is None:
        return
    page = mmap.PAGESIZE
    start = arr.ctypes.data
    lo = -(-start // page) * page
    hi = (start + arr.nbytes) // page * page
    if hi > lo:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise(ctypes.c_void_p(lo), ctypes.c_size_t(hi - lo), value)


def release_mapped_pages(arr: np.ndarray) -> None:
    """Drop a read-only file mapping's pages from this process (RSS); the kernel re-reads them if touched."""
    if isinstance(arr, np.memmap) and not arr.flags.writeable:
        advise(arr, "MADV_DONTNEED")
