"""The float kernels against plain numpy, and the trace row each one updates."""

import numpy as np
import pytest
from numba import njit

from engine.kernels import avx2, ops, vnni
from engine.kernels.cpu import has_avx2, has_vnni, select_logits
from engine.trace import Trace

RNG = np.random.default_rng(1234)


def _f32(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


@pytest.fixture()
def trace() -> Trace:
    return Trace()


def test_half_lut_is_exact() -> None:
    lut = ops.half_lut()
    bits = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    expected = bits.view(np.float16).astype(np.float32)
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(lut[finite], expected[finite])
    assert np.isnan(lut[~finite & np.isnan(expected)]).all()


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_embed_lookup(trace: Trace, dtype: type) -> None:
    table = _f32(50, 16).astype(dtype)
    stored = table.view(np.uint16) if dtype == np.float16 else table
    tokens = np.array([3, 0, 49, 3], dtype=np.int64)
    out = np.zeros((4, 16), np.float32)
    ops.embed_lookup(stored, ops.half_lut(), tokens, out, trace.counts)
    np.testing.assert_array_equal(out, table[tokens].astype(np.float32))
    assert trace.snapshot() == {"embed_lookup": {"calls": 1, "rows": 4, "elements": 64}}


def test_rmsnorm(trace: Trace) -> None:
    x, w = _f32(3, 64), _f32(64)
    out = np.zeros_like(x)
    ops.rmsnorm(x, w, 1e-5, out, trace.counts)
    x64 = x.astype(np.float64)
    expected = x64 / np.sqrt((x64**2).mean(axis=1, keepdims=True) + 1e-5) * w
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert trace.snapshot() == {"rmsnorm": {"calls": 1, "rows": 3, "elements": 192}}


def _rope_tables(ctx: int, head_dim: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    freqs = theta ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    ang = np.arange(ctx, dtype=np.float64)[:, None] * freqs[None, :]
    return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)


def test_rope_neox_split_half(trace: Trace) -> None:
    n_heads, head_dim, pos0 = 3, 8, 5
    cos, sin = _rope_tables(16, head_dim, 10000.0)
    x = _f32(2, n_heads * head_dim)
    got = x.copy()
    ops.rope_neox(got, n_heads, head_dim, pos0, cos, sin, trace.counts)
    for t in range(2):
        for h in range(n_heads):
            v = x[t, h * head_dim : (h + 1) * head_dim].astype(np.float64)
            a, b = v[:4], v[4:]
            ang = (pos0 + t) * 10000.0 ** (-np.arange(0, 8, 2) / 8)
            expected = np.concatenate([a * np.cos(ang) - b * np.sin(ang), a * np.sin(ang) + b * np.cos(ang)])
            got_head = got[t, h * head_dim : (h + 1) * head_dim]
            np.testing.assert_allclose(got_head, expected, rtol=1e-5, atol=1e-5)
    assert trace.snapshot() == {"rope_neox": {"calls": 1, "rows": 2, "elements": 48}}


def test_rope_neox_rounds_each_product_in_float32(trace: Trace) -> None:
    """Vectorized or not, every value is float32(float32(a c) - float32(b s)) (and the sum likewise):
    no fused multiply-add, so the result does not depend on the host's instructions."""
    n_heads, head_dim, pos0 = 5, 128, 7
    cos, sin = _rope_tables(64, head_dim, 500000.0)
    x = _f32(9, n_heads * head_dim) * 3
    got = x.copy()
    ops.rope_neox(got, n_heads, head_dim, pos0, cos, sin, trace.counts)
    heads = x.reshape(9, n_heads, 2, head_dim // 2)
    a, b = heads[:, :, 0], heads[:, :, 1]
    c, s = cos[pos0 : pos0 + 9, None, :], sin[pos0 : pos0 + 9, None, :]
    want = np.stack([a * c - b * s, a * s + b * c], axis=2).reshape(x.shape)
    np.testing.assert_array_equal(got, want)


def _attention_numpy(q, keys, values, pos0, n_heads):
    """float64 causal GQA over full key/value histories [n_kv, n_pos, head_dim]."""
    n_tok = q.shape[0]
    n_kv, _, head_dim = keys.shape
    out = np.zeros((n_tok, n_heads * head_dim))
    for t in range(n_tok):
        for h in range(n_heads):
            g = h // (n_heads // n_kv)
            qh = q[t, h * head_dim : (h + 1) * head_dim].astype(np.float64)
            sc = keys[g, : pos0 + t + 1] @ qh / np.sqrt(head_dim)
            p = np.exp(sc - sc.max())
            p /= p.sum()
            out[t, h * head_dim : (h + 1) * head_dim] = p @ values[g, : pos0 + t + 1]
    return out


@pytest.mark.parametrize(
    ("n_heads", "n_kv", "head_dim", "pos0", "n_tok"),
    [
        (4, 2, 8, 3, 4),
        (4, 1, 12, 13, 11),
        (8, 2, 64, 13, 11),
        (8, 2, 76, 13, 11),
        (20, 5, 128, 13, 11),
        (4, 4, 16, 9, 3),
        (6, 2, 24, 9, 3),
    ],
)
def test_attention_block_matches_numpy_and_stores_cache(
    trace: Trace, n_heads: int, n_kv: int, head_dim: int, pos0: int, n_tok: int
) -> None:
    """Head sizes with 64-value blocks, a lone 8-value vector and single values; queries whose contexts end
    inside and at the end of the 8-position steps; heads paired over a KV head (groups of 2 and 4) and alone
    (groups of 1 and 3)."""
    ctx = pos0 + n_tok + 5
    k_cache = np.zeros((n_kv, ctx, head_dim), np.float32)
    v_cache = np.zeros_like(k_cache)
    k_cache[:, :pos0], v_cache[:, :pos0] = _f32(n_kv, pos0, head_dim), _f32(n_kv, pos0, head_dim)
    q, k, v = _f32(n_tok, n_heads * head_dim), _f32(n_tok, n_kv * head_dim), _f32(n_tok, n_kv * head_dim)
    scores = np.zeros((n_heads, ctx), np.float32)
    out = np.zeros((n_tok, n_heads * head_dim), np.float32)
    ops.attention_gqa(q, k, v, k_cache, v_cache, pos0, n_heads, scores, out, trace.counts)
    new = slice(pos0, pos0 + n_tok)
    np.testing.assert_array_equal(k_cache[:, new], k.reshape(n_tok, n_kv, head_dim).swapaxes(0, 1))
    np.testing.assert_array_equal(v_cache[:, new], v.reshape(n_tok, n_kv, head_dim).swapaxes(0, 1))
    seen = slice(0, pos0 + n_tok)
    expected = _attention_numpy(q, k_cache[:, seen], v_cache[:, seen], pos0, n_heads)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
    attended = sum(pos0 + t + 1 for t in range(n_tok))
    elements = 2 * n_heads * head_dim * attended
    assert trace.snapshot() == {"attention_gqa": {"calls": 1, "rows": n_tok, "elements": elements}}


def test_attention_block_equals_token_by_token(trace: Trace) -> None:
    n_heads, n_kv, head_dim, ctx, n_tok = 4, 1, 8, 8, 5
    q, k, v = _f32(n_tok, n_heads * head_dim), _f32(n_tok, n_kv * head_dim), _f32(n_tok, n_kv * head_dim)
    scores = np.zeros((n_heads, ctx), np.float32)
    caches = [np.zeros((n_kv, ctx, head_dim), np.float32) for _ in range(4)]
    block = np.zeros((n_tok, n_heads * head_dim), np.float32)
    ops.attention_gqa(q, k, v, caches[0], caches[1], 0, n_heads, scores, block, trace.counts)
    step = np.zeros((1, n_heads * head_dim), np.float32)
    for t in range(n_tok):
        ops.attention_gqa(
            q[t : t + 1],
            k[t : t + 1],
            v[t : t + 1],
            caches[2],
            caches[3],
            t,
            n_heads,
            scores,
            step,
            trace.counts,
        )
        np.testing.assert_array_equal(step[0], block[t])


@njit
def _scores_of(q, k_cache, g, n_ctx, scores, paired):
    """Head 1's scores and largest score, computed alone or beside head 2 (which shares its KV head)."""
    if paired:
        return ops._attention_scores2(q, 0, 1, k_cache, g, n_ctx, np.float32(0.25), scores)[0]
    return ops._attention_scores(q, 0, 1, k_cache, g, n_ctx, np.float32(0.25), scores)[0]


@njit
def _weighted_sum_of(scores, inv, v_cache, g, n_ctx, out, paired):
    """Head 1's weighted sum, alone or beside head 2 (weights scores[2] * 0.5)."""
    if paired:
        ops._attention_weighted_sum2(scores, 1, (inv, np.float32(0.5)), v_cache, g, n_ctx, out, 0)
    else:
        ops._attention_weighted_sum(scores, 1, (inv,), v_cache, g, n_ctx, out, 0)


def _fma32(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """float32 a * b + c rounded once (the float64 product is exact; the float64 sum rounds first, which
    changes the float32 result only at an exact float32 midpoint)."""
    return (a.astype(np.float64) * b.astype(np.float64) + c.astype(np.float64)).astype(np.float32)


@pytest.mark.parametrize("paired", [False, True])
@pytest.mark.parametrize("head_dim", [12, 16, 128])
def test_attention_scores_sum_in_the_documented_lane_order(head_dim: int, paired: bool) -> None:
    """Lane l sums d = l, l + 8, ... by FMA, lanes add as ((0+4)+(2+6))+((1+5)+(3+7)), the last head_dim % 8
    values follow by FMA: the scores equal that order emulated in numpy, bit for bit, for positions inside
    and after the 8-position (4 when paired) steps, whether the head runs alone or beside another."""
    n_kv, ctx, n_ctx = 3, 24, 21
    q, k_cache = _f32(1, 3 * head_dim), _f32(n_kv, ctx, head_dim)
    scores = np.zeros((3, ctx), np.float32)
    best = _scores_of(q, k_cache, 2, n_ctx, scores, paired)
    qh, keys = q[0, head_dim : 2 * head_dim], k_cache[2, :n_ctx]
    full = head_dim - head_dim % 8
    lanes = np.zeros((n_ctx, 8), np.float32)
    for d in range(0, full, 8):
        lanes = _fma32(np.broadcast_to(qh[d : d + 8], lanes.shape), keys[:, d : d + 8], lanes)
    half = lanes[:, :4] + lanes[:, 4:]
    quarter = half[:, :2] + half[:, 2:]
    dots = quarter[:, 0] + quarter[:, 1]
    for d in range(full, head_dim):
        dots = _fma32(np.full(n_ctx, qh[d]), keys[:, d], dots)
    expected = dots * np.float32(0.25)
    np.testing.assert_array_equal(scores[1, :n_ctx], expected)
    assert best == expected.max()
    assert scores[2, :n_ctx].any() == paired  # the second head's row, written only when paired


@njit
def _softmax_of(scores, n_ctx, best, h=0):
    return ops._attention_softmax(scores, h, n_ctx, best)


def test_attention_exp_is_within_one_ulp_and_zero_below_the_normal_range() -> None:
    """exp(x) for x <= 0 against float64: under 1 ulp wherever the result is a normal float32, 0 below
    ln(2^-126) and at -inf, exactly 1 at 0, NaN kept."""
    rng = np.random.default_rng(7)
    x = np.concatenate(
        [-rng.random(200_000) * 90, np.linspace(-88.0, 0.0, 20_001), [-87.33654, -87.3366, -1e-30, -0.0]]
    ).astype(np.float32)
    special = np.array([-np.inf, np.nan], np.float32)  # in an 8-lane step and in the tail
    scores = np.concatenate([special, x, special]).astype(np.float32).reshape(1, -1)
    _softmax_of(scores, scores.shape[1], np.float32(0.0))
    got, exact = scores[0, 2 : 2 + x.size].astype(np.float64), np.exp(x.astype(np.float64))
    normal = exact >= np.finfo(np.float32).tiny
    ulps = np.abs(got[normal] - exact[normal]) / np.spacing(exact[normal].astype(np.float32))
    assert ulps.max() < 1.0
    assert not got[~normal].any() and (~normal).sum() > 1000
    assert got[-1] == 1.0 and got[-2] == 1.0
    for at in (0, scores.shape[1] - 2):
        assert scores[0, at] == 0.0 and np.isnan(scores[0, at + 1])


def test_attention_softmax_sums_in_the_documented_lane_order() -> None:
    """The weights' sum: lane l over j = l, l + 8, ..., the lanes as the scores add theirs, then the last
    n % 8 in order (float32 adds emulated in numpy, bit for bit, for 20 rows whose weights span 1e-9 .. 1);
    the weights are exp(s - best) within 1 ulp."""
    n_ctx, rows = 45, 20
    scores = (_f32(rows, 48) * 5).astype(np.float32)
    raw = scores.copy()
    for h in range(rows):
        best = np.float32(raw[h, :n_ctx].max())
        total = _softmax_of(scores, n_ctx, best, h)
        weights = scores[h, :n_ctx]
        exact = np.exp((raw[h, :n_ctx] - best).astype(np.float64))  # of the float32 difference
        assert (np.abs(weights - exact) < np.spacing(exact.astype(np.float32))).all()
        assert (scores[h, n_ctx:] == raw[h, n_ctx:]).all()  # positions past n_ctx untouched
        lanes = np.zeros(8, np.float32)
        for j in range(0, n_ctx - n_ctx % 8, 8):
            lanes = lanes + weights[j : j + 8]
        half = lanes[:4] + lanes[4:]
        quarter = half[:2] + half[2:]
        expected = quarter[0] + quarter[1]
        for j in range(n_ctx - n_ctx % 8, n_ctx):
            expected = expected + weights[j]
        assert total == expected, h


@pytest.mark.parametrize("paired", [False, True])
@pytest.mark.parametrize("head_dim", [12, 40, 72, 128])
def test_attention_weighted_sum_adds_positions_in_order(head_dim: int, paired: bool) -> None:
    """out[d] = fma(p[j] * inv, v[j, d], out[d]) for j = 0, 1, ... from 0: equal, bit for bit, to that
    order emulated in numpy, for the 64-value (32 when paired) blocks, lone 8-value vectors and single
    values, whether the head runs alone or beside another."""
    n_kv, ctx, n_ctx = 2, 16, 13
    scores, v_cache = np.abs(_f32(3, ctx)), _f32(n_kv, ctx, head_dim)
    inv = np.float32(1.0) / scores[1, :n_ctx].sum()
    out = np.zeros((1, 3 * head_dim), np.float32)
    _weighted_sum_of(scores, inv, v_cache, 1, n_ctx, out, paired)
    for h, scale in ((1, inv), (2, np.float32(0.5))):
        expected = np.zeros(head_dim, np.float32)
        for j in range(n_ctx):
            weight = np.full(head_dim, scores[h, j] * scale)
            expected = _fma32(weight, v_cache[1, j], expected)
        got = out[0, h * head_dim : (h + 1) * head_dim]
        if h == 1 or paired:
            np.testing.assert_array_equal(got, expected)
        else:
            assert not got.any()  # head 2's columns, written only when paired
    assert not out[0, :head_dim].any()  # head 0's columns are untouched


def test_gates(trace: Trace) -> None:
    gate, up = _f32(2, 32), _f32(2, 32)
    out = np.zeros_like(gate)
    ops.relu2_gate(gate, up, out, trace.counts)
    np.testing.assert_allclose(out, np.maximum(gate, 0) ** 2 * up, rtol=1e-6)
    ops.silu_gate(gate, up, out, trace.counts)
    g64 = gate.astype(np.float64)
    np.testing.assert_allclose(out, g64 / (1 + np.exp(-g64)) * up, rtol=1e-5, atol=1e-7)
    assert trace.snapshot() == {
        "relu2_gate": {"calls": 1, "rows": 2, "elements": 64},
        "silu_gate": {"calls": 1, "rows": 2, "elements": 64},
    }


@pytest.mark.parametrize(
    ("serial", "spread", "inputs"),
    [
        (ops.rmsnorm, ops.rmsnorm_tokens, lambda x, y: (x, np.abs(y[0]), 1e-5)),
        (ops.relu2_gate, ops.relu2_gate_tokens, lambda x, y: (x, y)),
        (ops.silu_gate, ops.silu_gate_tokens, lambda x, y: (x, y)),
    ],
)
def test_prefill_versions_spread_tokens_with_the_same_values(serial, spread, inputs) -> None:
    """Prefill's kernels run the tokens on several threads; every value and count equals token by token."""
    x, y = _f32(37, 96) * 4, _f32(37, 96)
    out_serial, out_spread = np.zeros_like(x), np.zeros_like(x)
    traces = Trace(), Trace()
    serial(*inputs(x, y), out_serial, traces[0].counts)
    spread(*inputs(x, y), out_spread, traces[1].counts)
    np.testing.assert_array_equal(out_spread, out_serial)
    assert traces[1].snapshot() == traces[0].snapshot()


def test_residual_add(trace: Trace) -> None:
    x, y = _f32(2, 16), _f32(2, 16)
    expected = x + y
    ops.residual_add(x, y, trace.counts)
    np.testing.assert_array_equal(x, expected)
    assert trace.snapshot() == {"residual_add": {"calls": 1, "rows": 2, "elements": 32}}


def test_int8_logits_and_embedding_copy(trace: Trace) -> None:
    vocab, hidden = 40, 64
    table = _f32(vocab, hidden).astype(np.float16)
    lut = ops.half_lut()
    emb_q = np.zeros((vocab, hidden), np.int8)
    emb_s = np.zeros(vocab, np.float32)
    emb_sum = np.zeros(vocab, np.int32)
    ops.quantize_embedding_rows(table.view(np.uint16), lut, emb_q, emb_s, emb_sum)
    t32 = table.astype(np.float32)
    amax = np.abs(t32).max(axis=1)
    np.testing.assert_allclose(emb_s, amax / 127, rtol=1e-6)
    np.testing.assert_array_equal(emb_q, np.clip(np.rint(t32 * (127 / amax)[:, None]), -127, 127))
    np.testing.assert_array_equal(emb_sum, emb_q.astype(np.int64).sum(axis=1))
    q = RNG.integers(-127, 128, hidden).astype(np.int8)
    out = np.zeros(vocab, np.float32)
    ops.logits_i8(emb_q, emb_s, emb_sum, q, 2.5, np.zeros(hidden, np.uint8), out, trace.counts)
    exact = (emb_q.astype(np.int64) @ q.astype(np.int64)) * emb_s.astype(np.float64) / 2.5
    np.testing.assert_allclose(out, exact, rtol=1e-5)
    x = _f32(hidden)
    ops.fp32_logits(table.view(np.uint16), lut, x, out, trace.counts)
    np.testing.assert_allclose(out, t32.astype(np.float64) @ x, rtol=1e-4, atol=1e-4)
    assert trace.snapshot() == {
        "logits_i8": {"calls": 1, "rows": vocab, "elements": vocab * hidden},
        "fp32_logits": {"calls": 1, "rows": vocab, "elements": vocab * hidden},
    }


@pytest.mark.skipif(not has_vnni(), reason="host has no AVX-512 VNNI")
@pytest.mark.parametrize("vocab", [1, 4, 43])
def test_vnni_logits_equal_portable_exactly(vocab: int) -> None:
    """The vpdpbusd logits (u = q + 128, minus 128 * row sum) give the portable kernel's exact floats."""
    hidden = 192  # three 64-byte steps
    emb_q = RNG.integers(-127, 128, (vocab, hidden)).astype(np.int8)
    emb_q[0] = -127  # extreme rows and activations: the largest int32 sums either way
    emb_s = RNG.random(vocab).astype(np.float32) + np.float32(0.01)
    emb_sum = emb_q.astype(np.int32).sum(axis=1, dtype=np.int32)
    fn, variant = select_logits(hidden)
    assert variant == "avx512vnni" and fn is vnni.logits_i8_vnni
    u = np.zeros(hidden, np.uint8)
    for q in (RNG.integers(-127, 128, hidden).astype(np.int8), np.full(hidden, -128, np.int8)):
        want = np.zeros(vocab, np.float32)
        got = np.full(vocab, np.nan, np.float32)
        trace = Trace()
        ops.logits_i8(emb_q, emb_s, emb_sum, q, np.float32(2.5), u, want, trace.counts)
        vnni.logits_i8_vnni(emb_q, emb_s, emb_sum, q, np.float32(2.5), u, got, trace.counts)
        np.testing.assert_array_equal(got, want)
        row = {"calls": 2, "rows": 2 * vocab, "elements": 2 * vocab * hidden}
        assert trace.snapshot() == {"logits_i8": row}


@pytest.mark.skipif(not has_avx2(), reason="host has no AVX2")
@pytest.mark.parametrize("vocab", [1, 4, 43])
def test_avx2_logits_equal_portable_exactly(vocab: int) -> None:
    """vpsignb + vpmaddubsw logits (|q| times e * sign(q)) give the portable kernel's exact floats."""
    hidden = 192
    emb_q = RNG.integers(-127, 128, (vocab, hidden)).astype(np.int8)
    emb_q[0] = -127  # the extreme rows the int8 copy holds, against q = -128: the largest pair sums
    emb_q[-1, ::2] = 127
    emb_s = RNG.random(vocab).astype(np.float32) + np.float32(0.01)
    emb_sum = emb_q.astype(np.int32).sum(axis=1, dtype=np.int32)
    fn, variant = select_logits(hidden, "avx2")
    assert variant == "avx2" and fn.func is avx2.logits_i8_avx2
    u = np.zeros(hidden, np.uint8)
    for q in (RNG.integers(-128, 128, hidden).astype(np.int8), np.full(hidden, -128, np.int8)):
        want = np.zeros(vocab, np.float32)
        got = np.full(vocab, np.nan, np.float32)
        trace = Trace()
        ops.logits_i8(emb_q, emb_s, emb_sum, q, np.float32(2.5), u, want, trace.counts)
        fn(emb_q, emb_s, emb_sum, q, np.float32(2.5), u, got, trace.counts)
        np.testing.assert_array_equal(got, want)
        row = {"calls": 2, "rows": 2 * vocab, "elements": 2 * vocab * hidden}
        assert trace.snapshot() == {"logits_i8": row}


def test_logits_selection_needs_whole_64_byte_rows() -> None:
    assert select_logits(100) == (ops.logits_i8, "portable")
    assert select_logits(128, "portable") == (ops.logits_i8, "portable")
