"""Typing and argument helpers shared by the numba `@intrinsic` kernels (avx2.py, ops.py)."""

from numba import types


def c_array(a, dtype, ndim: int) -> bool:
    """`a` is typed as a C-contiguous array of `dtype` with `ndim` dimensions."""
    return isinstance(a, types.Array) and a.dtype == dtype and a.ndim == ndim and a.layout == "C"


def integers(*values) -> bool:
    """Every one of `values` is typed as an integer."""
    return all(isinstance(v, types.Integer) for v in values)


def arg(context, builder, sig, args, i):
    """The i-th intrinsic argument: an array's data struct, or an integer cast to int64."""
    if isinstance(sig.args[i], types.Array):
        return context.make_array(sig.args[i])(context, builder, args[i])
    return context.cast(builder, args[i], sig.args[i], types.int64)
