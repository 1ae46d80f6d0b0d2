"""Per-token absmax int8 activation quantization (bitnet.cpp style), the input of every ternary matmul.

Definition (float32 throughout, so numpy and numba agree bit for bit): `m = max |x|` over the token,
`s = 127 / m` (s = 1 when m == 0), `q = clip(rint(x * s), -128, 127)`; rint rounds half to even.
Inputs must be finite (the model never produces NaN/inf activations from finite weights).
"""

import numpy as np
from numba import njit

from engine.trace import CALLS, ELEMENTS, ROWS, kid

_ACT = kid("act_quant_i8")


@njit(cache=True)
def quantize_activations(x, q_out, s_out, counts):
    """x f32[T, cols] -> q_out int8[T, cols], s_out f32[T]; one call quantizes every token."""
    ntok, cols = x.shape
    counts[_ACT, CALLS] += 1
    counts[_ACT, ROWS] += ntok
    counts[_ACT, ELEMENTS] += ntok * cols
    for t in range(ntok):
        m = np.float32(0.0)
        for i in range(cols):
            m = max(m, abs(x[t, i]))
        s = np.float32(127.0) / m if m > 0 else np.float32(1.0)
        s_out[t] = s
        for i in range(cols):
            v = np.rint(x[t, i] * s)
            q_out[t, i] = np.int8(min(max(v, np.float32(-128.0)), np.float32(127.0)))
