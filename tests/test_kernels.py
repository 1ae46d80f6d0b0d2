"""Ternary kernels against plain integer numpy dots: every flavor, every kernel, GEMV and GEMM, exact."""

from pathlib import Path

import numpy as np
import pytest

from engine.errors import EngineError
from engine.formats import FORMATS
from engine.kernels import KernelInputError, matmul, matvec, prepare_matrix, quantize_activations
from engine.kernels.aligned import LINE, aligned_zeros
from engine.kernels.cpu import has_avx2, has_permw, has_vnni
from engine.kernels.lut import CANON3
from engine.trace import Trace, kid

# (flavor, rows, cols): ragged rows everywhere; cols as each format allows. i2s and qk256 also take
# 1024 / 1152 / 1920 columns: whole 8-block groups of the AVX2 GEMV alone, with one block, with 4 + 2 + 1
SHAPES = {
    "i2s": [(1, 128), (7, 384), (33, 640), (130, 256), (9, 1024), (6, 1152), (5, 1920)],
    "tq2_0": [(1, 256), (5, 512), (31, 768)],
    "tq1_0": [(3, 256), (17, 512)],
    "bitnet32": [(2, 32), (9, 96), (13, 160), (4, 416)],
    "qk256": [(1, 1), (6, 100), (11, 256), (3, 300), (5, 513), (5, 1920)],
}
# tl1 / tl2 also take per-tensor rows of any width (the i2s format only needs whole 128-value blocks overall)
TL_EXTRA = [("i2s", 64, 6), ("i2s", 128, 5), ("i2s", 32, 4), ("i2s", 128, 1)]
TERNARY = ("i2s", "tq2_0", "tq1_0", "bitnet32")
GEMV_ID = {
    "i2s": "i2s_gemv",
    "tq2_0": "i2s_blk_gemv",
    "tq1_0": "i2s_blk_gemv",
    "bitnet32": "i2s_b32_gemv",
    "qk256": "i2s_qk256_gemv",
}


# "avx2" asks for the AVX2 path of the i2s family even where AVX-512 VNNI exists (skipped without AVX2)
VARIANTS = [
    "portable",
    "auto",
    pytest.param("avx2", marks=pytest.mark.skipif(not has_avx2(), reason="host has no AVX2")),
]


def _path(variant, flavor, kernel):
    """The instruction-set path prepare_matrix should take for this request on this host."""
    if kernel == "i2s" and flavor != "bitnet32" and variant != "portable":
        if variant == "avx2":
            return "avx2"
        return "avx512vnni" if has_vnni() else "avx2" if has_avx2() else "portable"
    return "avx512bw" if variant == "auto" and kernel != "i2s" and has_permw() else "portable"


def _random_weights(rng, flavor, rows, cols):
    """(values int8, scales as the format takes them, scales as float32 per row block or None)."""
    if flavor == "qk256":
        values = rng.choice(np.array([-2, -1, 1, 2], dtype=np.int8), size=(rows, cols))
        return values, None
    values = rng.integers(-1, 2, size=(rows, cols), dtype=np.int8)
    if flavor == "i2s":
        return values, np.float32(rng.uniform(0.1, 3.0))
    if flavor in ("tq2_0", "tq1_0"):
        return values, rng.uniform(0.01, 2.0, size=(rows, cols // 256)).astype(np.float16)
    return values, rng.uniform(0.01, 2.0, size=(-(-rows * cols // 32),)).astype(np.float16)


def _activations(rng, t, cols):
    q = rng.integers(-128, 128, size=(t, cols), dtype=np.int8)
    q[0, : min(cols, 3)] = -128  # the extreme value sits in every test
    s = rng.uniform(0.5, 200.0, size=t).astype(np.float32)
    return q, s


def _expected(flavor, values, scales, q, s):
    """y[t, r] from exact int64 dots, then the float32 scaling in the documented order."""
    rows, cols = values.shape
    t = q.shape[0]
    v = values.astype(np.int64)
    qq = q.astype(np.int64)
    if flavor in ("i2s", "qk256"):
        dots = (qq @ v.T).astype(np.float32)  # [t, rows]
        y = dots / s[:, None]
        return y * np.float32(scales) if flavor == "i2s" else y
    block = 256 if flavor in ("tq2_0", "tq1_0") else 32
    d = np.asarray(scales, dtype=np.float32).reshape(rows, cols // block)
    y = np.zeros((t, rows), dtype=np.float32)
    for b in range(cols // block):
        sl = slice(b * block, (b + 1) * block)
        ib = (qq[:, sl] @ v[:, sl].T).astype(np.float32)
        y = y + d[None, :, b] * ib
    return y / s[:, None]


def _cases():
    for flavor, shapes in SHAPES.items():
        for rows, cols in shapes:
            yield flavor, "i2s", rows, cols
            if flavor in TERNARY:
                yield flavor, "tl1", rows, cols
                yield flavor, "tl2", rows, cols
    for flavor, rows, cols in TL_EXTRA:
        yield flavor, "tl1", rows, cols
        yield flavor, "tl2", rows, cols


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("flavor", ["tq2_0", "tq1_0"])
def test_blocks_under_one_scale_run_as_i2s(flavor, variant):
    """Every block holding a weight under one scale: the I2_S kernels with that scale; a block under scale 0
    adds nothing whatever its codes; a second scale keeps the per-block kernels."""
    rng = np.random.default_rng(7)
    rows, cols = 37, 768
    values = rng.integers(-1, 2, size=(rows, cols), dtype=np.int8)
    scales = np.full((rows, cols // 256), 0.37, np.float16)
    scales[4, 1] = 0  # nonzero codes under a zero scale
    live = values.copy()
    live[4, 256:512] = 0
    m = prepare_matrix(flavor, FORMATS[flavor].pack(values, scales), rows, cols, variant=variant)
    assert (m.gemv_id, m.gemm_id, m.flavor) == ("i2s_gemv", "i2s_gemm", flavor)
    assert m.nbytes_read == rows * cols // 4 + 4
    q, s = _activations(rng, 9, cols)
    want = _expected("i2s", live, np.float32(scales[0, 0]), q, s)
    out = np.full((9, rows), np.nan, np.float32)
    matmul(m, q, s, out, Trace().counts)
    np.testing.assert_array_equal(out, want)
    y = np.full(rows, np.nan, np.float32)
    matvec(m, np.ascontiguousarray(q[2]), float(s[2]), y, Trace().counts)
    np.testing.assert_array_equal(y, want[2])
    scales[7, 2] = 0.5
    m = prepare_matrix(flavor, FORMATS[flavor].pack(values, scales), rows, cols, variant=variant)
    assert m.gemv_id == "i2s_blk_gemv"
    matmul(m, q, s, out, Trace().counts)
    np.testing.assert_array_equal(out, _expected(flavor, values, scales, q, s))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(("flavor", "kernel", "rows", "cols"), list(_cases()))
def test_gemv_and_gemm_exact(flavor, kernel, rows, cols, variant):
    rng = np.random.default_rng(rows * 1000 + cols)
    values, scales = _random_weights(rng, flavor, rows, cols)
    raw = FORMATS[flavor].pack(values, scales)
    m = prepare_matrix(flavor, raw, rows, cols, kernel=kernel, variant=variant)
    assert m.variant == _path(variant, flavor, kernel)
    assert (m.rows, m.cols, m.kernel, m.flavor) == (rows, cols, kernel, flavor)
    # a TQ2_0 / TQ1_0 tensor of a single block has one scale: it runs as I2_S
    one_scale = kernel == "i2s" and flavor in ("tq2_0", "tq1_0") and rows * cols == 256
    family_id = GEMV_ID[flavor] if kernel == "i2s" else f"{kernel}_gemv"
    assert m.gemv_id == ("i2s_gemv" if one_scale else family_id)
    assert m.gemm_id == m.gemv_id.replace("_gemv", "_gemm")
    trace = Trace()
    for t in (1, 3, 19):  # 19 crosses the tl token chunk of 16
        q, s = _activations(rng, t, cols)
        if one_scale:
            want = _expected("i2s", values, np.float32(np.asarray(scales).reshape(-1)[0]), q, s)
        else:
            want = _expected(flavor, values, scales, q, s)
        out = np.full((t, rows), np.nan, dtype=np.float32)
        before = trace.counts.copy()
        matmul(m, q, s, out, trace.counts)
        np.testing.assert_array_equal(out, want)
        delta = trace.counts - before
        assert delta[kid(m.gemm_id)].tolist() == [1, rows * t, rows * cols * t]
        assert np.count_nonzero(delta) == 3
        for i in range(t):
            y = np.full(rows, np.nan, dtype=np.float32)
            before = trace.counts.copy()
            matvec(m, np.ascontiguousarray(q[i]), float(s[i]), y, trace.counts)
            np.testing.assert_array_equal(y, want[i])
            delta = trace.counts - before
            assert delta[kid(m.gemv_id)].tolist() == [1, rows, rows * cols]
            assert np.count_nonzero(delta) == 3


def test_i2s_is_zero_copy_over_the_raw_bytes():
    rng = np.random.default_rng(1)
    values, scale = _random_weights(rng, "i2s", 8, 256)
    raw = FORMATS["i2s"].pack(values, scale)
    m = prepare_matrix("i2s", raw, 8, 256)
    assert np.shares_memory(m.arrays["w"], raw)
    assert m.nbytes_read == 8 * 256 // 4 + 4
    assert m.variant in ("portable", "avx512vnni", "avx2")


def test_i2s_zero_copy_reads_a_memmap(tmp_path):
    rng = np.random.default_rng(2)
    values, scale = _random_weights(rng, "i2s", 5, 384)
    path = tmp_path / "w.bin"
    path.write_bytes(b"\0" * 32 + FORMATS["i2s"].pack(values, scale).tobytes())
    raw = np.memmap(path, dtype=np.uint8, mode="r", offset=32)
    m = prepare_matrix("i2s", raw, 5, 384)
    q, s = _activations(rng, 1, 384)
    y = np.zeros(5, dtype=np.float32)
    matvec(m, q[0], float(s[0]), y, Trace().counts)
    np.testing.assert_array_equal(y, _expected("i2s", values, scale, q, s)[0])


def test_tl2_canonical_triples_cover_every_ternary_triple_once_up_to_sign():
    seen = set()
    for t in CANON3.tolist():
        seen.add(tuple(t))
        seen.add(tuple(-x for x in t))
    assert len(CANON3) == 14 and len(seen) == 27


def _numpy_quantize(x):
    m = np.abs(x).max(axis=1)
    safe = np.where(m > 0, m, np.float32(1.0))
    s = np.where(m > 0, np.float32(127.0) / safe, np.float32(1.0)).astype(np.float32)
    q = np.clip(np.rint(x * s[:, None]), -128, 127).astype(np.int8)
    return q, s


def test_quantize_activations_matches_numpy_exactly():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 300)).astype(np.float32) * np.float32(3.0)
    x[1] = 0.0  # all-zero token: s = 1, q = 0
    x[2, :6] = [127.0, 0.5, 1.5, 2.5, -0.5, -2.5]  # ties at s == 1: half to even
    x[2, 6:] = 0.0
    x[3] *= np.float32(1e-30)  # tiny values still map max |x| to 127
    x[4, :] = -7.25  # a constant negative token
    q = np.zeros_like(x, dtype=np.int8)
    s = np.zeros(6, dtype=np.float32)
    trace = Trace()
    quantize_activations(x, q, s, trace.counts)
    want_q, want_s = _numpy_quantize(x)
    np.testing.assert_array_equal(s, want_s)
    np.testing.assert_array_equal(q, want_q)
    assert q[1].tolist() == [0] * 300 and s[1] == 1.0
    assert q[2, :6].tolist() == [127, 0, 2, 2, 0, -2]
    assert q[4].tolist() == [-127] * 300
    assert trace.snapshot() == {"act_quant_i8": {"calls": 1, "rows": 6, "elements": 1800}}
    for t in range(6):  # one token at a time takes the serial kernel: same bits
        q1 = np.zeros((1, 300), np.int8)
        s1 = np.zeros(1, np.float32)
        quantize_activations(np.ascontiguousarray(x[t : t + 1]), q1, s1, trace.counts)
        np.testing.assert_array_equal(q1[0], want_q[t])
        assert s1[0] == want_s[t]
    assert trace.snapshot() == {"act_quant_i8": {"calls": 7, "rows": 12, "elements": 3600}}
    with pytest.raises(EngineError, match="quantize_activations"):
        quantize_activations(x[:, ::2], q[:, :150], s, trace.counts)


def test_errors_are_engine_errors_with_one_line_messages():
    rng = np.random.default_rng(4)
    values, _ = _random_weights(rng, "qk256", 4, 256)
    raw = FORMATS["qk256"].pack(values, None)
    for kernel in ("tl1", "tl2"):
        with pytest.raises(KernelInputError, match="ternary"):
            prepare_matrix("qk256", raw, 4, 256, kernel=kernel)
    with pytest.raises(KernelInputError, match="unknown kernel"):
        prepare_matrix("qk256", raw, 4, 256, kernel="tl3")
    with pytest.raises(KernelInputError, match="unknown weight format"):
        prepare_matrix("q4_0", raw, 4, 256)
    # i2s read in place needs whole 128-value blocks per row
    v, sc = _random_weights(rng, "i2s", 128, 5)
    with pytest.raises(KernelInputError, match="cols % 128"):
        prepare_matrix("i2s", FORMATS["i2s"].pack(v, sc), 128, 5)
    # code 3 never occurs in ternary I2_S
    v, sc = _random_weights(rng, "i2s", 2, 128)
    bad = FORMATS["i2s"].pack(v, sc)
    bad[5] = 0xFF
    with pytest.raises(KernelInputError, match="code 3"):
        prepare_matrix("i2s", bad, 2, 128)
    with pytest.raises(KernelInputError, match="at least"):
        prepare_matrix("i2s", bad[:40], 2, 128)
    # BitNet-32 blocks that straddle rows
    v, sc = _random_weights(rng, "bitnet32", 4, 40)
    with pytest.raises(KernelInputError, match="straddle"):
        prepare_matrix("bitnet32", FORMATS["bitnet32"].pack(v, sc), 4, 40)
    # wrong activation shapes never reach a kernel
    m = prepare_matrix("i2s", FORMATS["i2s"].pack(*_random_weights(rng, "i2s", 2, 128)), 2, 128)
    counts = Trace().counts
    with pytest.raises(KernelInputError, match="int8"):
        matvec(m, np.zeros(64, np.int8), 1.0, np.zeros(2, np.float32), counts)
    with pytest.raises(KernelInputError, match="float32"):
        matvec(m, np.zeros(128, np.int8), 1.0, np.zeros(3, np.float32), counts)
    with pytest.raises(KernelInputError, match="s must be"):
        matmul(m, np.zeros((2, 128), np.int8), np.ones(3, np.float32), np.zeros((2, 2), np.float32), counts)
    assert not counts.any()
    assert issubclass(KernelInputError, EngineError)


@pytest.mark.parametrize("variant", VARIANTS)
def test_i2s_variants_agree_exactly(variant):
    rng = np.random.default_rng(5)
    rows, cols = 37, 1152
    values, scale = _random_weights(rng, "i2s", rows, cols)
    m = prepare_matrix("i2s", FORMATS["i2s"].pack(values, scale), rows, cols, variant=variant)
    assert m.variant == _path(variant, "i2s", "i2s")
    q, s = _activations(rng, 4, cols)
    q[1] = 127  # the largest sums either way
    q[2] = -128
    want = _expected("i2s", values, scale, q, s)
    trace = Trace()
    for i in range(4):
        y = np.zeros(rows, np.float32)
        matvec(m, q[i], float(s[i]), y, trace.counts)
        np.testing.assert_array_equal(y, want[i])
    out = np.zeros((4, rows), np.float32)
    matmul(m, q, s, out, trace.counts)
    np.testing.assert_array_equal(out, want)
    assert trace.snapshot() == {
        "i2s_gemv": {"calls": 4, "rows": 4 * rows, "elements": 4 * rows * cols},
        "i2s_gemm": {"calls": 1, "rows": 4 * rows, "elements": 4 * rows * cols},
    }


@pytest.mark.parametrize(("rows", "cols"), [(2560, 6912), (6912, 2560)])
def test_real_2b4t_shapes_are_exact(rows, cols):
    rng = np.random.default_rng(rows)
    values, scale = _random_weights(rng, "i2s", rows, cols)
    raw = FORMATS["i2s"].pack(values, scale)
    q, s = _activations(rng, 5, cols)
    q[1] = 127  # all-extreme tokens: the largest block sums
    q[2] = -128
    dots = (q.astype(np.float64) @ values.T.astype(np.float64)).astype(np.float32)  # exact: |sum| < 2**53
    want = dots / s[:, None] * np.float32(scale)
    counts = Trace().counts
    for kernel in ("i2s", "tl1", "tl2"):
        for variant in ("portable", "auto", "avx2") if has_avx2() else ("portable", "auto"):
            m = prepare_matrix("i2s", raw, rows, cols, kernel=kernel, variant=variant)
            out = np.zeros((5, rows), np.float32)
            matmul(m, q, s, out, counts)
            np.testing.assert_array_equal(out, want)
            y = np.zeros(rows, np.float32)
            matvec(m, q[2], float(s[2]), y, counts)
            np.testing.assert_array_equal(y, want[2])


@pytest.mark.parametrize("flavor", list(SHAPES))
@pytest.mark.parametrize("fill", [-128, 127])
@pytest.mark.parametrize("cols", [512, 2048, 4352])
def test_extreme_sums_do_not_overflow(flavor, fill, cols):
    """Every weight at its largest code and every activation at an extreme: the int16 block sums' limits
    (row tiles and lone rows, token groups of the GEMMs and lone tokens; 2048 columns fill whole 8-block
    groups of the AVX2 GEMV and one whole 16-block group of the AVX2 GEMM, whose int16 sums then reach
    -32768 at q = -128 and 32512 at q = 127)."""
    rows, tokens = 7, 9
    top = 2 if flavor == "qk256" else 1
    values = np.full((rows, cols), top, dtype=np.int8)
    values[1::2] = -top
    _, scales = _random_weights(np.random.default_rng(6), flavor, rows, cols)
    raw = FORMATS[flavor].pack(values, scales)
    q = np.full((tokens, cols), fill, dtype=np.int8)
    s = np.full(tokens, 0.75, dtype=np.float32)
    want = _expected(flavor, values, scales, q, s)
    kernels = ("i2s",) if flavor == "qk256" else ("i2s", "tl1", "tl2")
    for kernel in kernels:
        for variant in ("portable", "auto", "avx2") if has_avx2() else ("portable", "auto"):
            m = prepare_matrix(flavor, raw, rows, cols, kernel=kernel, variant=variant)
            y = np.zeros(rows, np.float32)
            matvec(m, q[0], float(s[0]), y, Trace().counts)
            np.testing.assert_array_equal(y, want[0])
            out = np.zeros((tokens, rows), np.float32)
            matmul(m, q, s, out, Trace().counts)
            np.testing.assert_array_equal(out, want)


@pytest.mark.skipif(not has_avx2(), reason="host has no AVX2")
def test_avx2_logits_alone_take_the_measured_prefetch(monkeypatch):
    """A model whose matrices run no AVX2 kernel (tl1, say) still gets its AVX2 logits' prefetch distance,
    measured for the logits' own row width."""
    from engine import kernel_choice
    from engine.kernels import cpu

    calls = []

    def fake_choice(kind, cols):
        calls.append((kind, cols))
        return kernel_choice.PrefetchChoice(kind, cols, 1024, {"1024": 1.0}, 1)

    monkeypatch.setattr(cpu, "has_vnni", lambda: False)
    monkeypatch.setattr(kernel_choice, "prefetch_choice", fake_choice)
    fn, variant = cpu.select_logits(256)
    assert variant == "avx2" and calls == [("logits", 256)] and fn.keywords["plan"].tolist() == [1024]


def test_avx2_variant_is_refused_without_avx2(monkeypatch):
    """Asking for a path the CPU lacks is an error, never an illegal instruction."""
    from engine.kernels import cpu

    monkeypatch.setattr(cpu, "host_features", lambda: frozenset({"sse2"}))
    raw = FORMATS["i2s"].pack(np.zeros((4, 128), np.int8), np.float32(1.0))
    with pytest.raises(EngineError, match="AVX2"):
        prepare_matrix("i2s", raw, 4, 128, variant="avx2")
    assert prepare_matrix("i2s", raw, 4, 128).variant == "portable"


def test_vnni_variant_is_refused_without_vnni(monkeypatch):
    """The decode block asks for its GEMV by variant name: AVX-512 VNNI on a CPU without it is an error."""
    from engine.kernels import cpu

    monkeypatch.setattr(cpu, "host_features", lambda: frozenset({"avx2"}))
    with pytest.raises(EngineError, match="AVX-512 VNNI"):
        cpu.select_i2s("avx512vnni")
    assert cpu.select_i2s("avx2")[2] == "avx2"


@pytest.mark.parametrize("where", [0, 7, 8, 4095, 65536 * 8 + 3, 65536 * 8 + 12])
def test_code3_is_found_wherever_it_sits(where):
    """The load-time check reads 64-bit words, then the bytes past the last whole word."""
    from engine.kernels.ternary import has_code3

    rng = np.random.default_rng(where)
    raw = rng.choice(np.array([0x00, 0x55, 0xAA, 0x15, 0x92], np.uint8), size=65536 * 8 + 13)
    assert not has_code3(raw)
    for field in range(4):
        bad = raw.copy()
        bad[where] = (bad[where] & ~np.uint8(3 << (2 * field))) | np.uint8(3 << (2 * field))
        assert has_code3(bad)
    assert not has_code3(raw[1:])  # an unaligned start reads the same


def test_an_edited_ir_emitter_module_fails_the_kernel_import(tmp_path) -> None:
    """numba's cache cannot see emitter edits, so a kernel module refuses emitters it was not built with."""
    import types

    from engine.kernels import avx2, avx2_ir, vnni, vnni_ir
    from engine.kernels.ir_digest import require_ir_digest

    require_ir_digest(avx2_ir, avx2.IR_SHA256, "avx2.py")
    require_ir_digest(vnni_ir, vnni.IR_SHA256, "vnni.py")
    edited = tmp_path / "emitters.py"
    edited.write_text(Path(vnni_ir.__file__).read_text() + "\n# edited\n")
    stand_in = types.ModuleType("engine.kernels.vnni_ir")
    stand_in.__file__ = str(edited)
    with pytest.raises(ImportError, match="set the digest in vnni.py"):
        require_ir_digest(stand_in, vnni.IR_SHA256, "vnni.py")


@pytest.mark.parametrize("flavor", ["i2s", "tq2_0", "tq1_0"])
def test_gemm_row_tiles_and_column_chunks_are_exact(flavor):
    """Shapes that exercise every part of the AVX2 GEMM's schedule: 37 rows (two whole 16-row tiles and a
    partial one), 4352 columns (two whole 16-block column chunks and a 2-block one), 19 tokens (two 8-token
    groups and three lone tokens), extreme activations in some tokens."""
    rng = np.random.default_rng(37)
    rows, cols = 37, 4352
    values, scales = _random_weights(rng, flavor, rows, cols)
    raw = FORMATS[flavor].pack(values, scales)
    q, s = _activations(rng, 19, cols)
    q[4] = 127
    q[9] = -128
    q[17] = -128
    want = _expected(flavor, values, scales, q, s)
    for variant in ("portable", "auto", "avx2") if has_avx2() else ("portable", "auto"):
        m = prepare_matrix(flavor, raw, rows, cols, variant=variant)
        out = np.full((19, rows), np.nan, np.float32)
        matmul(m, q, s, out, Trace().counts)
        np.testing.assert_array_equal(out, want)


def test_aligned_zeros_start_on_a_cache_line():
    for shape, dtype in [
        ((128, 2560), np.int8),
        ((3, 6912), np.int8),
        ((5, 7), np.float32),
        ((1,), np.int32),
    ]:
        for _ in range(4):
            a = aligned_zeros(shape, dtype)
            assert a.ctypes.data % LINE == 0
            assert a.shape == shape and a.dtype == dtype and a.flags["C_CONTIGUOUS"] and a.flags["WRITEABLE"]
            assert not a.any()
