"""Throughput of one ternary GEMV / GEMM on random weights (a measurement helper, not a test)."""

import time

import numpy as np

from engine.formats import FORMATS
from engine.kernels.layouts import matmul, matvec, prepare_matrix
from engine.trace import Trace


def _random_raw(flavor: str, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    if flavor == "qk256":
        return FORMATS[flavor].pack(rng.choice(np.array([-2, -1, 1, 2], np.int8), size=(rows, cols)), None)
    values = rng.integers(-1, 2, size=(rows, cols), dtype=np.int8)
    if flavor == "i2s":
        return FORMATS[flavor].pack(values, 0.5)
    nscales = (rows, cols // 256) if flavor in ("tq2_0", "tq1_0") else (-(-rows * cols // 32),)
    return FORMATS[flavor].pack(values, np.full(nscales, 0.5, np.float16))


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
