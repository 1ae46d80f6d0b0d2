"""llama.cpp's activation quantization for TQ1_0/TQ2_0 dot products (Q8_K), and the matching ternary matvec.

bitnet.cpp quantizes a token's activations with one scale for the whole row (`actquant.py`). Upstream
llama.cpp's TQ1_0/TQ2_0 kernels take their activations as Q8_K instead: every 256-value block gets its own
scale. For one block (ggml's `quantize_row_q8_K_ref`): `max` is the value of largest magnitude (first one on
ties), `iscale = -127 / max` in float32, `q = min(127, rint(iscale * x))`, `d = 1 / iscale` (all-zero
block: q = 0, d = 0). A row's output is then `sum_b d_w[b] * d_a[b] * sum_j w_j q_j`, integer sums per block.

`BlockMatrix` holds a ternary matrix as int8 values with float32 per-256 weight scales (any ternary format:
per-tensor scales are repeated per block). It is the parity path, not a fast path: one int8 byte per weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from engine.errors import EngineError
from engine.formats import FORMATS
from engine.trace import CALLS, ELEMENTS, ROWS, kid

QK_K = 256
_NEG127 = np.float32(-127.0)
_ONE = np.float32(1.0)
_QUANT = kid("act_quant_q8k")
_GEMV = kid("i2s_q8k_gemv")


@numba.njit(cache=True, nogil=True)
def _quantize_row(x, q, d):
    nb = x.size // QK_K
    for b in range(nb):
        o = b * QK_K
        amax = np.float32(0.0)
        vmax = np.float32(0.0)
        for j in range(QK_K):
            ax = abs(x[o + j])
            if ax > amax:
                amax = ax
                vmax = x[o + j]
        if amax == 0:
            d[b] = 0
            for j in range(QK_K):
                q[o + j] = 0
            continue
        iscale = np.float32(_NEG127 / vmax)
        for j in range(QK_K):
            v = np.rint(np.float32(iscale * x[o + j]))
            q[o + j] = 127 if v > 127 else np.int8(v)
        d[b] = np.float32(_ONE / iscale)


@numba.njit(cache=True, nogil=True)
def _quantize_rows(x, q, d, counts):
    counts[_QUANT, CALLS] += 1
    counts[_QUANT, ROWS] += x.shape[0]
    counts[_QUANT, ELEMENTS] += x.size
    for t in range(x.shape[0]):
        _quantize_row(x[t], q[t], d[t])


def quantize_blocks(x: np.ndarray, q_out: np.ndarray, d_out: np.ndarray, counts: np.ndarray) -> None:
    """Q8_K-quantize float32 rows x[T, cols] into int8 q_out[T, cols] and block scales d_out[T, cols/256]."""
    if x.ndim != 2 or x.shape[1] % QK_K:
        raise EngineError(f"block activation quantization needs [T, k*{QK_K}] rows, got {x.shape}")
    if q_out.shape != x.shape or d_out.shape != (x.shape[0], x.shape[1] // QK_K):
        raise EngineError("block activation quantization: output buffers do not match the input shape")
    _quantize_rows(x, q_out, d_out, counts)


@numba.njit(cache=True, nogil=True, parallel=True)
def _matvec_blocks(w, ws, q, d, out, counts):
    rows, cols = w.shape
    counts[_GEMV, CALLS] += 1
    counts[_GEMV, ROWS] += rows
    counts[_GEMV, ELEMENTS] += rows * cols
    nb = cols // QK_K
    for r in numba.prange(rows):
        acc = np.float32(0.0)
        for b in range(nb):
            o = b * QK_K
            isum = 0
            for j in range(QK_K):
                isum += np.int32(w[r, o + j]) * np.int32(q[o + j])
            acc += np.float32(ws[r, b] * d[b]) * np.float32(isum)
        out[r] = acc


@dataclass(frozen=True)
class BlockMatrix:
    """A ternary matrix as int8 values [rows, cols] and float32 weight scales per 256-value block."""

    values: np.ndarray
    scales: np.ndarray

    @property
    def rows(self) -> int:
        return int(self.values.shape[0])

    @property
    def cols(self) -> int:
        return int(self.values.shape[1])


def block_matrix(flavor: str, raw: np.ndarray, rows: int, cols: int) -> BlockMatrix:
    """Unpack a ternary tensor of any format into a BlockMatrix (cols must be a multiple of 256)."""
    if cols % QK_K:
        raise EngineError(f"block activation quantization needs cols % {QK_K} == 0, got {rows} x {cols}")
    module = FORMATS.get(flavor)
    if module is None:
        raise EngineError(f"block activation quantization does not support weight format {flavor!r}")
    values, scales = module.unpack(np.asarray(raw), rows, cols)
    nb = cols // QK_K
    s = np.asarray(scales, dtype=np.float32)
    if s.size == 1:
        per_block = np.full((rows, nb), s.reshape(-1)[0], np.float32)
    elif s.shape == (rows, nb):
        per_block = s
    else:
        raise EngineError(
            f"block activation quantization needs one scale per tensor or per 256-value block; "
            f"{flavor} has scales of shape {s.shape}"
        )
    return BlockMatrix(np.ascontiguousarray(values, dtype=np.int8), np.ascontiguousarray(per_block))


def matvec_blocks(m: BlockMatrix, q: np.ndarray, d: np.ndarray, out: np.ndarray, counts: np.ndarray) -> None:
    """out[rows] = W x for one Q8_K-quantized token (q[cols] int8, d[cols/256] float32)."""
    if q.shape != (m.cols,) or d.shape != (m.cols // QK_K,) or out.shape != (m.rows,):
        raise EngineError("block matvec: activation or output shape does not match the matrix")
    _matvec_blocks(m.values, m.scales, q, d, out, counts)
