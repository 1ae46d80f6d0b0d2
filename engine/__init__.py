"""The inference engine: GGUF files in, ternary numba kernels, a BitNet b1.58 model, text out.

The engine knows nothing of receipts; it exposes a model and an exact execution trace.
"""
