"""Throughput of the kernels on random weights (measurement helpers for `probe` and `bench-kernels`)."""

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from engine.formats import FORMATS
from engine.kernels.cpu import select_logits
from engine.kernels.layouts import matmul, matvec, prepare_matrix
from engine.trace import Trace


def _random_raw(flavor: str, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    if flavor == "qk256":
        return FORMATS[flavor].pack(rng.choice(np.array([-2, -1, 1, 2], np.int8), size=(rows, cols)), None)
    values = rng.integers(-1, 2, size=(rows, cols), dtype=np.int8)
    if flavor == "i2s":
        return FORMATS[flavor].pack(values, 0.5)
    nscales = (rows, cols // 256) if flavor in ("tq2_0", "tq1_0") else (-(-rows * cols // 32),)
    # scales that differ per block: blocks under one scale would run as I2_S (engine.kernels.layouts)
    return FORMATS[flavor].pack(values, rng.uniform(0.25, 1.0, nscales).astype(np.float16))


def gemv_throughput(
    rows: int,
    cols: int,
    *,
    flavor: str = "i2s",
    kernel: str = "i2s",
    tokens: int = 1,
    threads: int | None = None,
    seconds: float = 1.0,
) -> dict[str, float | str]:
    """GMAC/s and weight GB/s of matvec (tokens == 1) or one matmul of `tokens` tokens, best run."""
    import numba

    if threads is not None:
        numba.set_num_threads(threads)
    rng = np.random.default_rng(0)
    m = prepare_matrix(flavor, _random_raw(flavor, rows, cols, rng), rows, cols, kernel=kernel)
    q = rng.integers(-127, 128, size=(tokens, cols), dtype=np.int8)
    s = np.ones(tokens, dtype=np.float32)
    out = np.empty((tokens, rows), dtype=np.float32)
    counts = Trace().counts

    def once() -> None:
        if tokens == 1:
            matvec(m, q[0], 1.0, out[0], counts)
        else:
            matmul(m, q, s, out, counts)

    once()
    best = float("inf")
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        once()
        best = min(best, time.perf_counter() - t0)
    return {
        "kernel_id": m.gemv_id if tokens == 1 else m.gemm_id,
        "variant": m.variant,
        "seconds": best,
        "gmac_per_s": rows * cols * tokens / best / 1e9,
        "weight_gb_per_s": m.nbytes_read / best / 1e9,
    }


# ---------------------------------------------------------------- per-kernel cold / warm throughput
_EVICT_BYTES = 320 * 1024 * 1024


@njit(cache=True, parallel=True)
def touch(words):
    """Read every word of a buffer (to push other data out of the caches); returns their sum."""
    total = np.int64(0)
    for c in prange(words.shape[0]):
        acc = np.int64(0)
        for j in range(words.shape[1]):
            acc += words[c, j]
        total += acc
    return total


@dataclass
class KernelTiming:
    """One kernel on one shape: medians of a cold call (caches flushed first) and of back-to-back calls."""

    name: str  # "i2s" | "tl1" | "tl2" | "logits"
    kernel_id: str
    variant: str
    rows: int
    cols: int
    nbytes: int  # bytes the kernel reads per call (weights, scales, row sums)
    cold_seconds: float
    warm_seconds: float
    samples: list[float]  # the cold samples

    def as_dict(self) -> dict:
        macs = self.rows * self.cols
        return {
            "name": self.name,
            "kernel_id": self.kernel_id,
            "variant": self.variant,
            "shape": [self.rows, self.cols],
            "bytes": self.nbytes,
            "cold_seconds": self.cold_seconds,
            "warm_seconds": self.warm_seconds,
            "cold_gb_per_s": self.nbytes / self.cold_seconds / 1e9,
            "warm_gb_per_s": self.nbytes / self.warm_seconds / 1e9,
            "cold_gmac_per_s": macs / self.cold_seconds / 1e9,
            "warm_gmac_per_s": macs / self.warm_seconds / 1e9,
            "cold_samples": self.samples,
        }


def _time(call: Callable[[], None], repeats: int, evict: np.ndarray | None) -> list[float]:
    out = []
    for _ in range(repeats):
        if evict is not None:
            touch(evict)
        t0 = time.perf_counter()
        call()
        out.append(time.perf_counter() - t0)
    return out


def time_kernel(
    name: str,
    kernel_id: str,
    variant: str,
    rows: int,
    cols: int,
    nbytes: int,
    call: Callable[[], None],
    repeats: int,
    evict: np.ndarray,
) -> KernelTiming:
    """Median cold time (a cache-flushing read of `evict` before each call, as in a decode step where every
    weight was last touched a whole model ago) and median warm time (calls back to back)."""
    call()
    cold = _time(call, repeats, evict)
    warm = _time(call, max(repeats, 5), None)
    return KernelTiming(
        name, kernel_id, variant, rows, cols, nbytes, float(np.median(cold)), float(np.median(warm)), cold
    )


def eviction_buffer(nbytes: int = _EVICT_BYTES) -> np.ndarray:
    """A buffer larger than the last-level cache share, read before every cold sample."""
    words = np.ones((max(nbytes // 8 // 4096, 1), 4096), dtype=np.int64)
    touch(words[:1])
    return words


# bench-kernels family -> (weight format, kernel): "tq2_0" is the i2s kernel family on TQ2_0 weights whose
# per-256 scales differ (i2s_blk); a TQ2_0 file whose blocks share one scale runs as "i2s"
MATRIX_FAMILIES = {
    "i2s": ("i2s", "i2s"),
    "tq2_0": ("tq2_0", "i2s"),
    "tl1": ("i2s", "tl1"),
    "tl2": ("i2s", "tl2"),
}


def time_matrix(
    family: str, rows: int, cols: int, repeats: int, evict: np.ndarray, variant: str = "auto", seed: int = 0
) -> KernelTiming:
    """One GEMV (`matvec`) of random ternary weights of a MATRIX_FAMILIES family (i2s, tq2_0, tl1 or tl2)."""
    flavor, kernel = MATRIX_FAMILIES[family]
    rng = np.random.default_rng(seed)
    m = prepare_matrix(
        flavor, _random_raw(flavor, rows, cols, rng), rows, cols, kernel=kernel, variant=variant
    )
    q = rng.integers(-127, 128, size=cols, dtype=np.int8)
    out = np.empty(rows, dtype=np.float32)
    counts = Trace().counts
    return time_kernel(
        family,
        m.gemv_id,
        m.variant,
        rows,
        cols,
        m.nbytes_read,
        lambda: matvec(m, q, 1.0, out, counts),
        repeats,
        evict,
    )


def time_logits(
    vocab: int, hidden: int, repeats: int, evict: np.ndarray, variant: str = "auto", seed: int = 0
) -> KernelTiming:
    """The int8 logits over a random [vocab, hidden] int8 embedding, through the kernel the model selects."""
    rng = np.random.default_rng(seed)
    emb_q = rng.integers(-127, 128, size=(vocab, hidden), dtype=np.int8)
    emb_s = np.ones(vocab, np.float32)
    emb_sum = emb_q.sum(axis=1, dtype=np.int32)
    q = rng.integers(-127, 128, size=hidden, dtype=np.int8)
    u = np.zeros(hidden, np.uint8)
    out = np.empty(vocab, np.float32)
    counts = Trace().counts
    fn, chosen = select_logits(hidden, variant)
    nbytes = emb_q.nbytes + emb_s.nbytes + (emb_sum.nbytes if chosen == "avx512vnni" else 0)

    def call() -> None:
        fn(emb_q, emb_s, emb_sum, q, np.float32(1.0), u, out, counts)

    return time_kernel("logits", "logits_i8", chosen, vocab, hidden, nbytes, call, repeats, evict)
