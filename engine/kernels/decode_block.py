"""One transformer block of a decode step in one compiled call, for models whose matrices all run i2s.

A decode step called about 20 numba kernels per layer from Python; at 2B-4T shapes the calls' own cost
(argument checks, views, dispatch) came to several milliseconds of a 40-50 ms step. Here the block's steps
run in the order of `engine.model.Model._layer`, calling the same kernels with the same arguments from
compiled code, so results, kernel choice and trace counts are those of the step-by-step path; only the
Python between the calls is gone. It serves every matrix of the one-scale i2s layout (I2_S, and TQ2_0 /
TQ1_0 files whose block scales are one per tensor) with one GEMV variant; other layouts run step by step.

The GEMV variant is a string literal fixed per entry point (`DECODE_BLOCKS`), so each compiled block holds
one variant's kernel and a host never compiles instructions it lacks.
"""

import numpy as np
from numba import njit
from numba.core import types
from numba.extending import overload

from engine.kernels import actquant, avx2, cpu, ops, ternary, vnni
from engine.kernels.ir_digest import require_ir_digest

# numba's cache keys this module's blocks on this file alone, never on the kernels they call and link in:
# this names the sources of those kernels and of their choice (cpu.py), so an edit to any of them fails the
# import until this changes.
KERNELS_SHA256 = "a1609f4016059d94ad6dec10428592d3e26c19ff21ae50b7ffa054605e2635bc"
require_ir_digest((actquant, avx2, cpu, ops, ternary, vnni), KERNELS_SHA256, "engine/kernels/decode_block.py")


def _i2s_gemv(variant, w, scale, q, s, out, cols, counts, plan):
    """The i2s GEMV of `variant` (engine.kernels.cpu.select_i2s); only the avx2 one takes the prefetch plan.
    Compiled callers get the same choice made once, at typing, by the overload below."""
    gemv = cpu.select_i2s(variant)[0]
    gemv(w, scale, q, s, out, cols, counts, *((plan,) if variant == "avx2" else ()))


@overload(_i2s_gemv, prefer_literal=True)
def _i2s_gemv_variant(variant, w, scale, q, s, out, cols, counts, plan):
    if not isinstance(variant, types.StringLiteral) or variant.literal_value not in DECODE_BLOCKS:
        return None
    gemv = cpu.select_i2s(variant.literal_value)[0]
    if variant.literal_value == "avx2":
        return lambda variant, w, scale, q, s, out, cols, counts, plan: gemv(
            w, scale, q, s, out, cols, counts, plan
        )
    return lambda variant, w, scale, q, s, out, cols, counts, plan: gemv(w, scale, q, s, out, cols, counts)


@njit(cache=True)
def _project(variant, w, scale, out_scale, plan, q, s, out, counts):
    """out[0] = W q[0] / s[0], the tensor's output scale dividing the activation scale in float32 as
    engine.model's projection does."""
    cols = q.shape[1]
    s0 = s[0] if out_scale == 1.0 else s[0] / out_scale
    _i2s_gemv(variant, w, scale, q[0].reshape(cols // 128, 4, 32), s0, out[0], cols, counts, plan)


@njit(cache=True)
def _block(
    variant, bufs, norms, weights, scales, out_scales, plans, kv, rope, shape, pos, eps, relu2, counts
):
    """The steps of Model._layer for one token (see there); `shape` is (n_heads, n_kv_heads, head_dim)."""
    x, xn, q_h, s_h, q, k, v, att, proj, gate, up, act, act_n, q_f, s_f = bufs
    attn_norm, attn_sub_norm, ffn_norm, ffn_sub_norm = norms
    n_heads, n_kv, head_dim = shape
    cos, sin, scores = rope
    # attention
    ops.rmsnorm(x, attn_norm, eps, xn, counts)
    actquant.quantize_serial(xn, q_h, s_h, counts)
    _project(variant, weights[0], scales[0], out_scales[0], plans[0], q_h, s_h, q, counts)
    _project(variant, weights[1], scales[1], out_scales[1], plans[1], q_h, s_h, k, counts)
    _project(variant, weights[2], scales[2], out_scales[2], plans[2], q_h, s_h, v, counts)
    ops.rope_neox(q, n_heads, head_dim, pos, cos, sin, counts)
    ops.rope_neox(k, n_kv, head_dim, pos, cos, sin, counts)
    ops.attention_gqa(q, k, v, kv[0], kv[1], pos, n_heads, scores, att, counts)
    ops.rmsnorm(att, attn_sub_norm, eps, xn, counts)
    actquant.quantize_serial(xn, q_h, s_h, counts)
    _project(variant, weights[3], scales[3], out_scales[3], plans[3], q_h, s_h, proj, counts)
    ops.residual_add(x, proj, counts)
    # feed-forward
    ops.rmsnorm(x, ffn_norm, eps, xn, counts)
    actquant.quantize_serial(xn, q_h, s_h, counts)
    _project(variant, weights[4], scales[4], out_scales[4], plans[4], q_h, s_h, gate, counts)
    _project(variant, weights[5], scales[5], out_scales[5], plans[5], q_h, s_h, up, counts)
    if relu2:
        ops.relu2_gate(gate, up, act, counts)
    else:
        ops.silu_gate(gate, up, act, counts)
    ops.rmsnorm(act, ffn_sub_norm, eps, act_n, counts)
    actquant.quantize_serial(act_n, q_f, s_f, counts)
    _project(variant, weights[6], scales[6], out_scales[6], plans[6], q_f, s_f, proj, counts)
    ops.residual_add(x, proj, counts)


@njit(cache=True)
def block_portable(bufs, norms, weights, scales, out_scales, plans, kv, rope, shape, pos, eps, relu2, counts):
    _block(
        "portable", bufs, norms, weights, scales, out_scales, plans, kv, rope, shape, pos, eps, relu2, counts
    )


@njit(cache=True)
def block_avx2(bufs, norms, weights, scales, out_scales, plans, kv, rope, shape, pos, eps, relu2, counts):
    _block("avx2", bufs, norms, weights, scales, out_scales, plans, kv, rope, shape, pos, eps, relu2, counts)


@njit(cache=True)
def block_vnni(bufs, norms, weights, scales, out_scales, plans, kv, rope, shape, pos, eps, relu2, counts):
    _block(
        "avx512vnni",
        bufs,
        norms,
        weights,
        scales,
        out_scales,
        plans,
        kv,
        rope,
        shape,
        pos,
        eps,
        relu2,
        counts,
    )


# the i2s GEMV variant (engine.kernels.cpu.select_i2s) -> the block that calls it
DECODE_BLOCKS = {"portable": block_portable, "avx2": block_avx2, "avx512vnni": block_vnni}
NO_PLAN = np.zeros(1, np.int64)  # the plan argument of variants without software prefetch
