"""Per-token absmax int8 activation quantization (bitnet.cpp style), the input of every ternary matmul.

Definition (float32 throughout, so numpy and numba agree bit for bit): `m = max |x|` over the token,
`s = 127 / m` (s = 1 when m == 0), `q = clip(rint(x * s), -128, 127)`; rint rounds half to even.
Inputs must be finite (the model never produces NaN/inf activations from finite weights). max |x| is taken
on the bit patterns: with the sign bit cleared, finite floats order like their int32 bits, and an integer max
reduction vectorizes (vpmaxsd) where a float one stays scalar (NaN rules); the result is exact.
"""

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from engine.errors import EngineError
from engine.trace import CALLS, ELEMENTS, ROWS, kid

_ACT = kid("act_quant_i8")


@intrinsic
def _f32_from_bits(typingctx, bits):
    """The float32 whose bit pattern is the int32 `bits`."""
    if bits != types.int32:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@njit(cache=True)
def _absmax(x, t):
    bits = x[t].view(np.int32)
    m = np.int32(0)
    for i in range(bits.shape[0]):
        m = max(m, np.int32(bits[i] & 0x7FFFFFFF))
    return _f32_from_bits(m)


@njit(cache=True)
def _quantize_token(x, t, q_out, s_out):
    m = _absmax(x, t)
    s = np.float32(127.0) / m if m > 0 else np.float32(1.0)
    s_out[t] = s
    for i in range(x.shape[1]):
        v = np.rint(x[t, i] * s)
        q_out[t, i] = np.int8(min(max(v, np.float32(-128.0)), np.float32(127.0)))


@njit(cache=True)
def _count(counts, ntok, cols):
    counts[_ACT, CALLS] += 1
    counts[_ACT, ROWS] += ntok
    counts[_ACT, ELEMENTS] += ntok * cols


@njit(cache=True)
def quantize_serial(x, q_out, s_out, counts):
    _count(counts, x.shape[0], x.shape[1])
    for t in range(x.shape[0]):
        _quantize_token(x, t, q_out, s_out)


@njit(cache=True, parallel=True)
def _quantize_parallel(x, q_out, s_out, counts):
    _count(counts, x.shape[0], x.shape[1])
    for t in prange(x.shape[0]):
        _quantize_token(x, t, q_out, s_out)


def quantize_activations(x: np.ndarray, q_out: np.ndarray, s_out: np.ndarray, counts: np.ndarray) -> None:
    """x f32[T, cols] -> q_out int8[T, cols], s_out f32[T]; one kernel call (tokens in parallel if T > 1)."""
    ok = (
        x.dtype == np.float32
        and x.ndim == 2
        and x.flags.c_contiguous
        and q_out.dtype == np.int8
        and q_out.shape == x.shape
        and s_out.dtype == np.float32
        and s_out.shape == (x.shape[0],)
    )
    if not ok:
        raise EngineError("quantize_activations: needs contiguous float32 x[T, n], int8 q[T, n], float s[T]")
    if x.shape[0] > 1:
        _quantize_parallel(x, q_out, s_out, counts)
    else:
        quantize_serial(x, q_out, s_out, counts)
