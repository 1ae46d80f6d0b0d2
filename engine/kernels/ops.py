"""Float kernels of the transformer around the ternary matmuls: norms, RoPE, attention, gates, logits.

Every kernel takes the trace counter array (`engine.trace.Trace.counts`) as its last argument and adds to
its own row when its body runs: calls += 1, rows += tokens processed (output rows x tokens for logits),
elements += values produced (multiply-adds for attention and logits; see each docstring). None of them
allocates: outputs and scratch space are preallocated by the caller.

Embedding tables arrive as stored: F16 / BF16 as raw `uint16` bits (numba has no float16) converted through a
65536-entry lookup table (`half_lut()` / `bf16_lut()`), or F32 as is.
"""

import math

import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic, overload

from engine.kernels import attention_ir
from engine.kernels.intrinsic_args import arg, c_array, integers
from engine.kernels.ir_digest import require_ir_digest
from engine.trace import CALLS, ELEMENTS, ROWS, kid

# numba's cache cannot see edits to attention_ir.py: this file names the emitters it was built with.
IR_SHA256 = "4552fe1f1ebead0f9be235daa95b416999984676a59df95f7f03ba746f6fd5df"
require_ir_digest(attention_ir, IR_SHA256, "engine/kernels/ops.py")

_EMBED = kid("embed_lookup")
_RMSNORM = kid("rmsnorm")
_ROPE = kid("rope_neox")
_ATTN = kid("attention_gqa")
_RELU2 = kid("relu2_gate")
_SILU = kid("silu_gate")
_RESID = kid("residual_add")
_LOGITS_I8 = kid("logits_i8")
_LOGITS_F32 = kid("fp32_logits")


def half_lut() -> np.ndarray:
    """float32 value of every float16 bit pattern: exact conversion of F16 tables inside numba kernels."""
    return np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)


def bf16_lut() -> np.ndarray:
    """float32 value of every bfloat16 bit pattern (the top half of a float32)."""
    return (np.arange(65536, dtype=np.uint32) << np.uint32(16)).view(np.float32)


def _to_f32(value, lut):  # pragma: no cover - replaced by the numba overload below
    raise NotImplementedError


@overload(_to_f32)
def _to_f32_impl(value, lut):
    """One table element as float32: F16 bits go through the lookup table, floats are cast."""
    if isinstance(value, types.Integer):
        return lambda value, lut: lut[value]
    if isinstance(value, types.Float):
        return lambda value, lut: np.float32(value)
    return None


@njit(cache=True)
def _count(counts, k, rows, elements):
    counts[k, CALLS] += 1
    counts[k, ROWS] += rows
    counts[k, ELEMENTS] += elements


@njit(cache=True)
def embed_lookup(table, lut, tokens, out, counts):
    """out[t] = table[tokens[t]] as float32. rows = T, elements = T * hidden."""
    n_tok = tokens.shape[0]
    hidden = table.shape[1]
    for t in range(n_tok):
        row = tokens[t]
        for c in range(hidden):
            out[t, c] = _to_f32(table[row, c], lut)
    _count(counts, _EMBED, n_tok, n_tok * hidden)


@njit(cache=True)
def _rmsnorm_scale(x, t, acc, weight, eps, out):
    """out[t] from x[t] and its float64 sum of squares `acc`."""
    n = x.shape[1]
    inv = np.float32(1.0 / math.sqrt(acc / n + eps))
    for c in range(n):
        out[t, c] = x[t, c] * inv * weight[c]


@njit(cache=True)
def _rmsnorm_token(x, t, weight, eps, out):
    acc = 0.0
    for c in range(x.shape[1]):
        v = np.float64(x[t, c])
        acc += v * v
    _rmsnorm_scale(x, t, acc, weight, eps, out)


RMSNORM_GROUP = 4  # tokens per _rmsnorm_group call: its four float64 chains


@njit(cache=True)
def _rmsnorm_group(x, t0, weight, eps, out):
    """_rmsnorm_token for tokens t0 .. t0 + 3: one float64 sum per token, each in column order as alone,
    four independent chains in one loop (a single chain waits on every add's latency)."""
    a0 = a1 = a2 = a3 = 0.0
    for c in range(x.shape[1]):
        v0 = np.float64(x[t0, c])
        v1 = np.float64(x[t0 + 1, c])
        v2 = np.float64(x[t0 + 2, c])
        v3 = np.float64(x[t0 + 3, c])
        a0 += v0 * v0
        a1 += v1 * v1
        a2 += v2 * v2
        a3 += v3 * v3
    _rmsnorm_scale(x, t0, a0, weight, eps, out)
    _rmsnorm_scale(x, t0 + 1, a1, weight, eps, out)
    _rmsnorm_scale(x, t0 + 2, a2, weight, eps, out)
    _rmsnorm_scale(x, t0 + 3, a3, weight, eps, out)


@njit(cache=True)
def rmsnorm(x, weight, eps, out, counts):
    """out[t] = x[t] / sqrt(mean(x[t]^2) + eps) * weight, sum of squares in float64.

    Token after token: decode's single token opens no parallel region. rows = T, elements = T * n.
    """
    n_tok, n = x.shape
    for t in range(n_tok):
        _rmsnorm_token(x, t, weight, eps, out)
    _count(counts, _RMSNORM, n_tok, n_tok * n)


@njit(cache=True, parallel=True)
def rmsnorm_tokens(x, weight, eps, out, counts):
    """`rmsnorm` with the tokens spread over the threads (prefill) in groups of RMSNORM_GROUP; every
    token's values are the same."""
    n_tok, n = x.shape
    for g in prange((n_tok + RMSNORM_GROUP - 1) // RMSNORM_GROUP):
        t0 = g * RMSNORM_GROUP
        if t0 + RMSNORM_GROUP <= n_tok:
            _rmsnorm_group(x, t0, weight, eps, out)
        else:
            for t in range(t0, n_tok):
                _rmsnorm_token(x, t, weight, eps, out)
    _count(counts, _RMSNORM, n_tok, n_tok * n)


@njit(cache=True)
def rope_neox(x, n_heads, head_dim, pos0, cos_tab, sin_tab, counts):
    """Rotate every head of x[t] (position pos0 + t) in place, NeoX split-half pairs (i, i + head_dim/2).

    cos_tab/sin_tab are [context, head_dim/2] tables of cos/sin(pos * theta^(-2i/head_dim)).
    rows = T, elements = T * n_heads * head_dim.
    """
    n_tok = x.shape[0]
    half = head_dim // 2
    for t in range(n_tok):
        cos_row = cos_tab[pos0 + t]
        sin_row = sin_tab[pos0 + t]
        for h in range(n_heads):
            # the two halves as views: LLVM then vectorizes the loop (indexing x twice, it did not)
            first = x[t, h * head_dim : h * head_dim + half]
            second = x[t, h * head_dim + half : (h + 1) * head_dim]
            for i in range(half):
                a = first[i]
                b = second[i]
                first[i] = a * cos_row[i] - b * sin_row[i]
                second[i] = a * sin_row[i] + b * cos_row[i]
    _count(counts, _ROPE, n_tok, n_tok * n_heads * head_dim)


def _at(builder, ary, row, col):
    """Pointer to element [row, col] of a C-contiguous 2-D array's data."""
    return builder.gep(ary.data, [builder.add(builder.mul(row, builder.extract_value(ary.shape, 1)), col)])


def _cache_group(builder, cache, g):
    """(head_dim, floats from one position to the next, pointer to KV head g at position 0) of a cache
    [n_kv, context, head_dim]: a KV head's positions follow one another."""
    head_dim = builder.extract_value(cache.shape, 2)
    per_group = builder.mul(builder.extract_value(cache.shape, 1), head_dim)
    return head_dim, head_dim, builder.gep(cache.data, [builder.mul(g, per_group)])


def _scores_intrinsic(heads: int):
    """scores[h + i, j] = scale * (q[t, head h + i] . k_cache[g, j]) for i < `heads` and j < n_ctx, the
    heads sharing each load of k; returns each head's largest score (a tuple of `heads`)."""
    ret = types.UniTuple(types.float32, heads)

    def typer(typingctx, q, t, h, k_cache, g, n_ctx, scale, scores):
        ok = (
            c_array(q, types.float32, 2)
            and c_array(k_cache, types.float32, 3)
            and c_array(scores, types.float32, 2)
        )
        if not (ok and integers(t, h, g, n_ctx) and scale == types.float32):
            return None

        def codegen(context, builder, sig, args):
            qa, t, h, ka, g, n_ctx = (arg(context, builder, sig, args, i) for i in range(6))
            sa = arg(context, builder, sig, args, 7)
            head_dim, stride, kptr = _cache_group(builder, ka, g)
            heads_at = [builder.add(h, attention_ir.I64(i)) for i in range(heads)]
            qptrs = [_at(builder, qa, t, builder.mul(hi, head_dim)) for hi in heads_at]
            sptrs = [_at(builder, sa, hi, attention_ir.I64(0)) for hi in heads_at]
            best = attention_ir.scores(builder, qptrs, kptr, stride, n_ctx, head_dim, args[6], sptrs)
            return context.make_tuple(builder, ret, best)

        return ret(q, t, h, k_cache, g, n_ctx, scale, scores), codegen

    return intrinsic(typer)


def _weighted_sum_intrinsic(heads: int):
    """out[t, head h + i] = sum_j (scores[h + i, j] * invs[i]) * v_cache[g, j] over j < n_ctx for i <
    `heads` (`invs` a tuple of `heads` floats), the heads sharing each load of v."""

    def typer(typingctx, scores, h, invs, v_cache, g, n_ctx, out, t):
        ok = (
            c_array(scores, types.float32, 2)
            and c_array(v_cache, types.float32, 3)
            and c_array(out, types.float32, 2)
        )
        if not (ok and integers(h, g, n_ctx, t) and invs == types.UniTuple(types.float32, heads)):
            return None

        def codegen(context, builder, sig, args):
            sa, h = (arg(context, builder, sig, args, i) for i in range(2))
            va, g, n_ctx, oa, t = (arg(context, builder, sig, args, i) for i in range(3, 8))
            head_dim, stride, vptr = _cache_group(builder, va, g)
            heads_at = [builder.add(h, attention_ir.I64(i)) for i in range(heads)]
            pptrs = [_at(builder, sa, hi, attention_ir.I64(0)) for hi in heads_at]
            optrs = [_at(builder, oa, t, builder.mul(hi, head_dim)) for hi in heads_at]
            invs = [builder.extract_value(args[2], i) for i in range(heads)]
            attention_ir.weighted_sum(builder, pptrs, invs, vptr, stride, n_ctx, head_dim, optrs)
            return context.get_dummy_value()

        return types.none(scores, h, invs, v_cache, g, n_ctx, out, t), codegen

    return intrinsic(typer)


_attention_scores, _attention_scores2 = _scores_intrinsic(1), _scores_intrinsic(2)
_attention_weighted_sum, _attention_weighted_sum2 = _weighted_sum_intrinsic(1), _weighted_sum_intrinsic(2)


@intrinsic
def _attention_softmax(typingctx, scores, h, n_ctx, best):
    """scores[h, j] = exp(scores[h, j] - best) for j < n_ctx; returns their sum."""
    if not (c_array(scores, types.float32, 2) and integers(h, n_ctx) and best == types.float32):
        return None

    def codegen(context, builder, sig, args):
        sa, h, n_ctx = (arg(context, builder, sig, args, i) for i in range(3))
        sptr = _at(builder, sa, h, attention_ir.I64(0))
        return attention_ir.softmax_weights(builder, sptr, n_ctx, args[3])

    return types.float32(scores, h, n_ctx, best), codegen


@njit(cache=True, parallel=True)
def attention_gqa(q, k, v, k_cache, v_cache, pos0, n_heads, scores, out, counts):
    """Store k/v of T new tokens at positions pos0.. of the cache, then causal grouped-query attention.

    q: [T, n_heads*head_dim]; k, v: [T, n_kv*head_dim]; caches: [n_kv, context, head_dim]; scores: scratch
    [n_heads, context]; out: [T, n_heads*head_dim]. Query t sees positions 0..pos0+t; softmax in float32 with
    the max subtracted; scale 1/sqrt(head_dim). Heads run in parallel, in pairs where two query heads share
    a KV head (each load of the cache serves both); q.k, the softmax and the weighted sum of v run as
    attention_ir emits them, in one order on every host, alone or paired. rows = T, elements = 2 * n_heads *
    head_dim * sum_t(pos0+t+1) (the multiply-adds of q.k and p.v).
    """
    n_tok = q.shape[0]
    n_kv, _, head_dim = k_cache.shape
    group = n_heads // n_kv
    for t in range(n_tok):
        for g in range(n_kv):
            for d in range(head_dim):
                k_cache[g, pos0 + t, d] = k[t, g * head_dim + d]
                v_cache[g, pos0 + t, d] = v[t, g * head_dim + d]
    scale = np.float32(1.0 / math.sqrt(head_dim))
    pair = 2 if group % 2 == 0 else 1  # heads of one KV head that share each load of the cache
    for u in prange(n_heads // pair):
        h = u * pair
        g = h // group
        for t in range(n_tok):
            n_ctx = pos0 + t + 1
            if pair == 2:
                b0, b1 = _attention_scores2(q, t, h, k_cache, g, n_ctx, scale, scores)
                inv0 = np.float32(1.0) / _attention_softmax(scores, h, n_ctx, b0)
                inv1 = np.float32(1.0) / _attention_softmax(scores, h + 1, n_ctx, b1)
                _attention_weighted_sum2(scores, h, (inv0, inv1), v_cache, g, n_ctx, out, t)
            else:
                (best,) = _attention_scores(q, t, h, k_cache, g, n_ctx, scale, scores)
                inv = np.float32(1.0) / _attention_softmax(scores, h, n_ctx, best)
                _attention_weighted_sum(scores, h, (inv,), v_cache, g, n_ctx, out, t)
    attended = n_tok * pos0 + n_tok * (n_tok + 1) // 2
    _count(counts, _ATTN, n_tok, 2 * n_heads * head_dim * attended)


@njit(cache=True)
def _relu2_token(gate, up, out, t):
    for c in range(gate.shape[1]):
        g = gate[t, c]
        out[t, c] = g * g * up[t, c] if g > 0 else np.float32(0.0)


@njit(cache=True)
def relu2_gate(gate, up, out, counts):
    """out = relu(gate)^2 * up (bitnet-b1.58 FFN). rows = T, elements = T * ffn."""
    n_tok, n = gate.shape
    for t in range(n_tok):
        _relu2_token(gate, up, out, t)
    _count(counts, _RELU2, n_tok, n_tok * n)


@njit(cache=True, parallel=True)
def relu2_gate_tokens(gate, up, out, counts):
    """`relu2_gate` with the tokens spread over the threads (prefill)."""
    n_tok, n = gate.shape
    for t in prange(n_tok):
        _relu2_token(gate, up, out, t)
    _count(counts, _RELU2, n_tok, n_tok * n)


@njit(cache=True)
def _silu_token(gate, up, out, t):
    for c in range(gate.shape[1]):
        g = gate[t, c]
        out[t, c] = g / (np.float32(1.0) + np.float32(math.exp(-g))) * up[t, c]


@njit(cache=True)
def silu_gate(gate, up, out, counts):
    """out = silu(gate) * up (bitnet FFN). rows = T, elements = T * ffn."""
    n_tok, n = gate.shape
    for t in range(n_tok):
        _silu_token(gate, up, out, t)
    _count(counts, _SILU, n_tok, n_tok * n)


@njit(cache=True, parallel=True)
def silu_gate_tokens(gate, up, out, counts):
    """`silu_gate` with the tokens spread over the threads (prefill)."""
    n_tok, n = gate.shape
    for t in prange(n_tok):
        _silu_token(gate, up, out, t)
    _count(counts, _SILU, n_tok, n_tok * n)


@njit(cache=True)
def residual_add(x, y, counts):
    """x += y in place (the residual stream). rows = T, elements = T * n."""
    n_tok, n = x.shape
    for t in range(n_tok):
        for c in range(n):
            x[t, c] += y[t, c]
    _count(counts, _RESID, n_tok, n_tok * n)


@njit(cache=True, parallel=True)
def logits_i8(emb_q, emb_s, emb_sum, q, s, u, out, counts):
    """out[v] = emb_s[v] * (emb_q[v] . q) / s with int32 accumulation.

    emb_q: int8 [vocab, hidden], one float scale per row (row absmax / 127); q: the int8 hidden state
    quantized per token with scale s (q = x * s). rows = vocab, elements = vocab * hidden. The signature is
    the VNNI twin's (vnni.logits_i8_vnni), whose extra inputs this kernel does not need: emb_sum (int32 row
    sums of emb_q) and u (uint8[hidden] scratch).
    """
    vocab, hidden = emb_q.shape
    inv = np.float32(1.0) / np.float32(s)
    for r in prange(vocab):
        acc = np.int32(0)
        for c in range(hidden):
            acc += np.int32(emb_q[r, c]) * np.int32(q[c])
        out[r] = np.float32(acc) * emb_s[r] * inv
    _count(counts, _LOGITS_I8, vocab, vocab * hidden)


@njit(cache=True, parallel=True)
def fp32_logits(table, lut, x, out, counts):
    """out[v] = table[v] . x in float32 over the stored (F16 or F32) embedding: the fallback logits path.

    rows = vocab, elements = vocab * hidden.
    """
    vocab, hidden = table.shape
    for r in prange(vocab):
        acc = np.float32(0.0)
        for c in range(hidden):
            acc += _to_f32(table[r, c], lut) * x[c]
        out[r] = acc
    _count(counts, _LOGITS_F32, vocab, vocab * hidden)


@njit(cache=True, parallel=True)
def quantize_embedding_rows(table, lut, q_out, s_out, sum_out):
    """Per-row absmax int8 copy of an embedding block (load time, not a traced kernel): row = q * s.

    sum_out[r] = the int32 sum of row r's int8 values (the VNNI logits kernel subtracts 128 times it).
    """
    n_rows, hidden = table.shape
    for r in prange(n_rows):
        amax = np.float32(0.0)
        for c in range(hidden):
            a = abs(_to_f32(table[r, c], lut))
            if a > amax:
                amax = a
        scale = amax / np.float32(127.0) if amax > 0 else np.float32(1.0)
        inv = np.float32(127.0) / amax if amax > 0 else np.float32(1.0)
        total = np.int32(0)
        for c in range(hidden):
            val = np.int8(min(max(np.rint(_to_f32(table[r, c], lut) * inv), -127.0), 127.0))
            q_out[r, c] = val
            total += np.int32(val)
        s_out[r] = scale
        sum_out[r] = total
