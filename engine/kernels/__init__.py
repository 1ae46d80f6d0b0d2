"""Numba kernels: ternary matmuls (i2s family, tl1, tl2), activation quantization; float ops live in ops.py.

Every kernel adds its own row of `engine.trace.Trace.counts` when its body runs (see engine/trace.py).
"""

from engine.kernels.actquant import quantize_activations
from engine.kernels.layouts import KERNELS, KernelInputError, TernaryMatrix, matmul, matvec, prepare_matrix

__all__ = [
    "KERNELS",
    "KernelInputError",
    "TernaryMatrix",
    "matmul",
    "matvec",
    "prepare_matrix",
    "quantize_activations",
]
