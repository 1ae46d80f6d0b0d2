"""Model behaviour on tiny synthetic models: path consistency, kernel families, buffers, errors, `auto`."""

import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from engine import kernel_choice
from engine.constants import LAYER_MATRICES
from engine.errors import EngineError
from engine.kernels.cpu import has_avx2, has_vnni
from engine.model import load_model
from engine.synth import ensure_preset_model


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


def tiny(model_dir: Path, fmt: str = "i2s", arch: str = "bitnet-b1.58") -> Path:
    return ensure_preset_model("tiny", fmt, arch, cache_dir=model_dir)


@pytest.fixture(scope="module")
def model(model_dir: Path):
    m = load_model(tiny(model_dir), kernel="i2s")
    m.warmup()
    return m


PROMPT = [1, 17, 300, 42, 999, 5]


def test_prefill_equals_token_by_token_decode(model) -> None:
    model.reset()
    prefilled = model.prefill(PROMPT).copy()
    model.reset()
    model.prefill(PROMPT[:1])
    for t in PROMPT[1:]:
        stepped = model.decode(t)
    np.testing.assert_allclose(stepped, prefilled, rtol=1e-5, atol=1e-5)
    model.reset()
    model.prefill(PROMPT[:4])
    split = model.prefill(PROMPT[4:])
    np.testing.assert_allclose(split, prefilled, rtol=1e-5, atol=1e-5)


def test_reset_restarts_the_sequence(model) -> None:
    model.reset()
    first = model.prefill(PROMPT).copy()
    model.decode(3)
    model.reset()
    np.testing.assert_array_equal(model.prefill(PROMPT), first)


FAMILY_CASES = [("i2s", "bitnet-b1.58"), ("tq2_0", "bitnet"), ("bitnet32", "bitnet")]


@pytest.mark.parametrize(("fmt", "arch"), FAMILY_CASES)
def test_kernel_families_agree(model_dir: Path, fmt: str, arch: str) -> None:
    """i2s, tl1 and tl2 compute the same exact integer sums: identical logits and greedy tokens."""
    runs = {}
    for family in ("i2s", "tl1", "tl2"):
        m = load_model(tiny(model_dir, fmt, arch), kernel=family)
        assert {m.kernel_choices[f"blk.0.{n}.weight"].split("_")[0] for n in LAYER_MATRICES} == {family}
        logits = m.prefill(PROMPT)
        tokens = []
        for _ in range(32):
            tokens.append(int(np.argmax(logits)))
            logits = m.decode(tokens[-1])
        runs[family] = (tokens, logits.copy())
    assert runs["i2s"][0] == runs["tl1"][0] == runs["tl2"][0]
    np.testing.assert_array_equal(runs["i2s"][1], runs["tl1"][1])
    np.testing.assert_array_equal(runs["i2s"][1], runs["tl2"][1])


def test_decode_allocates_nothing_per_token(model) -> None:
    """Traced memory after 40 more decode steps is no larger than after 10 (no per-token growth)."""
    model.reset()
    model.prefill(PROMPT)
    for t in range(5):
        model.decode(t)
    tracemalloc.start()
    try:
        for t in range(10):
            model.decode(t)
        after_10 = tracemalloc.get_traced_memory()[0]
        for t in range(40):
            model.decode(t)
        after_50 = tracemalloc.get_traced_memory()[0]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after_50 - after_10 < 1024
    assert peak < 64 * 1024  # no step allocates even a temporary vocab- or hidden-sized array


def test_warmup_resets_trace_and_cache(model) -> None:
    model.prefill(PROMPT)
    seconds = model.warmup()
    assert seconds > 0
    assert model.pos == 0
    assert model.trace.snapshot() == {}


def test_profile_reports_stages_and_layers(model) -> None:
    model.reset()
    model.prefill(PROMPT)
    profile: dict = {}
    model.decode(7, profile)
    assert set(profile) == {"embed", "forward", "logits", "layers"}
    assert len(profile["layers"]) == model.config.n_layers
    assert all(s > 0 for s in profile["layers"])
    assert profile["forward"] >= sum(profile["layers"])


def test_kernel_variants_name_the_path_of_every_kernel_that_runs(model) -> None:
    path = "avx512vnni" if has_vnni() else "avx2" if has_avx2() else "portable"
    assert model.kernel_variants() == {"i2s_gemv": path, "i2s_gemm": path, "logits_i8": model.logits_variant}


def test_profile_by_kernel_charges_every_layer_step(model) -> None:
    snapshots = []
    for by_kernel in (True, False):
        model.reset()
        model.trace.reset()
        model.prefill(PROMPT)
        profile: dict = {}
        model.decode(7, profile, by_kernel=by_kernel)
        snapshots.append(model.trace.snapshot())
        if by_kernel:
            steps = {"rmsnorm", "act_quant_i8", "rope_neox", "attention_gqa", "residual_add", "gate_act"}
            assert set(profile["kernels"]) == steps | set(LAYER_MATRICES)
            assert all(s > 0 for s in profile["kernels"].values())
            assert sum(profile["kernels"].values()) <= sum(profile["layers"])
        else:
            assert "kernels" not in profile
    assert snapshots[0] == snapshots[1]  # profiling runs exactly the kernels of a plain step
    model.trace.reset()


def test_a_profiled_prefill_runs_the_same_kernels_and_gives_the_same_logits(model) -> None:
    runs = []
    for profile in (None, {}):
        model.reset()
        model.trace.reset()
        logits = model.prefill(PROMPT, profile, by_kernel=True).copy()
        runs.append((logits, model.trace.snapshot()))
        if profile is not None:
            assert len(profile["layers"]) == model.config.n_layers
            assert set(LAYER_MATRICES) <= set(profile["kernels"])
    assert np.array_equal(runs[0][0], runs[1][0]) and runs[0][1] == runs[1][1]
    model.trace.reset()


def test_reported_numbers(model) -> None:
    cfg = model.config
    assert len(model.kernel_choices) == cfg.n_layers * len(LAYER_MATRICES)
    assert set(model.kernel_choices.values()) == {"i2s_gemv"}
    kv = cfg.n_kv_heads * cfg.head_dim
    params = cfg.n_layers * (2 * cfg.hidden * cfg.hidden + 2 * kv * cfg.hidden + 3 * cfg.ffn * cfg.hidden)
    per_tensor = cfg.n_layers * len(LAYER_MATRICES) * 4  # one float32 scale per I2_S tensor
    logits = cfg.vocab_size * cfg.hidden + 4 * cfg.vocab_size  # int8 embedding + a float32 scale per row
    path = "avx512vnni" if has_vnni() else "avx2" if has_avx2() else "portable"
    assert model.logits_variant == (path if cfg.hidden % 64 == 0 else "portable")
    logits += 4 * cfg.vocab_size if model.logits_variant == "avx512vnni" else 0  # int32 row sums, VNNI only
    assert model.weight_bytes_per_token == params // 4 + per_tensor + logits
    assert model.load_seconds > 0


def test_f32_logits_path_is_close_to_int8(model_dir: Path, model) -> None:
    f32 = load_model(tiny(model_dir), kernel="i2s", logits="f32")
    a = f32.prefill(PROMPT).astype(np.float64)
    model.reset()
    b = model.prefill(PROMPT).astype(np.float64)
    assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) > 0.999
    assert "fp32_logits" in f32.trace.snapshot() and "logits_i8" not in f32.trace.snapshot()


def test_bad_arguments_are_one_line_errors(model_dir: Path, model) -> None:
    path = tiny(model_dir)
    with pytest.raises(EngineError, match="unknown kernel"):
        load_model(path, kernel="avx")
    with pytest.raises(EngineError, match="logits"):
        load_model(path, logits="f16")
    with pytest.raises(EngineError, match="threads"):
        load_model(path, threads=0)
    model.reset()
    with pytest.raises(EngineError, match="vocabulary"):
        model.decode(model.config.vocab_size)
    with pytest.raises(EngineError, match="token ids"):
        model.prefill([-1])
    with pytest.raises(EngineError, match="at least one token"):
        model.prefill([])
    with pytest.raises(EngineError, match="exceed the context"):
        model.prefill([1] * (model.config.context_length + 1))


def test_context_full(model) -> None:
    model.reset()
    model.prefill([1] * (model.config.context_length - 1))
    model.decode(2)
    with pytest.raises(EngineError, match="context full"):
        model.decode(2)
    model.reset()


RSS_PROBE = """
import sys
from engine.model import load_model
m = load_model(sys.argv[1], kernel="i2s")
m.warmup()
m.prefill(list(range(1, 33)))
for t in range(16):
    m.decode(t + 5)
rss = 0
for line in open("/proc/self/status"):
    if line.startswith("VmRSS"):
        rss = int(line.split()[1]) * 1024
print(rss)
"""


@pytest.mark.slow
def test_2b4t_resident_memory_stays_near_file_size() -> None:
    """Weights stay memory-mapped (no float copies); the F16 embedding's pages are released once in int8."""
    path = ensure_preset_model("2b-4t")
    probe = [sys.executable, "-c", RSS_PROBE, str(path)]
    out = subprocess.run(probe, capture_output=True, text=True, check=True)
    rss = int(out.stdout.strip().splitlines()[-1])
    assert rss <= 1.3 * path.stat().st_size, f"RSS {rss >> 20} MiB vs file {path.stat().st_size >> 20} MiB"


def _fake_prefetch_timings(monkeypatch, answers: dict[tuple[str, int], list[dict[int, float]]]) -> list:
    """avx2.time_prefetch replaced by the next of `answers[(kind, cols)]`; returns the list of calls."""
    from engine.kernels import avx2

    calls = []

    def fake_time_prefetch(kind, cols):
        calls.append((kind, cols))
        return answers[(kind, cols)].pop(0)

    monkeypatch.setattr(avx2, "time_prefetch", fake_time_prefetch)
    monkeypatch.setattr(kernel_choice, "_prefetch", {})
    return calls


@pytest.mark.skipif(not has_avx2(), reason="host has no AVX2")
def test_prefetch_distance_is_measured_per_row_width_cached_and_applied(tmp_path: Path, monkeypatch) -> None:
    """Each row width gets its own distance, from timings on this host: the fastest (a shorter one within
    3 % of it wins), written to the cache once, then read back; the plan array carries it."""
    narrow = {0: 5.0, 1024: 9.0, 4096: 9.2, 8192: 10.0}
    wide = {0: 5.0, 2048: 6.0, 4096: 9.9, 8192: 10.0}
    answers = {("matrix", 2560): [narrow] * 4, ("matrix", 6912): [wide] * 2}
    calls = _fake_prefetch_timings(monkeypatch, answers)
    first = kernel_choice.prefetch_choice("matrix", 2560, cache_dir=tmp_path)
    assert (first.distance, first.cached, first.plan.tolist()) == (8192, False, [8192])
    assert kernel_choice.prefetch_choice("matrix", 2560, cache_dir=tmp_path) is first  # one plan per width
    other = kernel_choice.prefetch_choice("matrix", 6912, cache_dir=tmp_path)
    assert (other.distance, other.plan.tolist()) == (4096, [4096])  # within 3 %: the shorter one
    assert calls == [("matrix", 2560)] * 2 + [("matrix", 6912)] * 2
    assert first.as_dict()["timings_gb_per_s"] == {"0": 5.0, "1024": 9.0, "4096": 9.2, "8192": 10.0}
    monkeypatch.setattr(kernel_choice, "_prefetch", {})
    again = kernel_choice.prefetch_choice("matrix", 2560, cache_dir=tmp_path)
    assert again.cached and again.distance == 8192 and len(calls) == 4  # read back, not measured again
    record = kernel_choice.prefetch_record([again, kernel_choice.prefetch_choice("matrix", 6912, tmp_path)])
    assert [(t["kind"], t["cols"], t["bytes"]) for t in record["targets"]] == [
        ("matrix", 2560, 8192),
        ("matrix", 6912, 4096),
    ]
    assert record["cached"] and len(calls) == 4
    narrow[4096] = 9.8
    (tmp_path / kernel_choice.PREFETCH_FILE).unlink()
    monkeypatch.setattr(kernel_choice, "_prefetch", {})
    assert kernel_choice.prefetch_choice("matrix", 2560, cache_dir=tmp_path).distance == 4096
    assert len(calls) == 6


@pytest.mark.skipif(not has_avx2(), reason="host has no AVX2")
def test_retune_measures_the_prefetch_distances_again(tmp_path: Path, monkeypatch) -> None:
    """`--retune` (kernel_choice.choose(retune=True)) also replaces cached prefetch distances: a choice
    cached from a bad moment must not outlive the user's request to time again."""
    bad, good = {0: 9.0, 16384: 10.0}, {0: 9.0, 4096: 20.0, 16384: 10.0}
    answers = {("logits", 2560): [bad, bad, good, good]}
    _fake_prefetch_timings(monkeypatch, answers)
    assert kernel_choice.prefetch_choice("logits", 2560, cache_dir=tmp_path).distance == 16384
    monkeypatch.setattr(kernel_choice, "_prefetch", {})
    assert kernel_choice.prefetch_choice("logits", 2560, cache_dir=tmp_path).cached  # read back
    kernel_choice.choose({}, cache_dir=tmp_path, retune=True)
    again = kernel_choice.prefetch_choice("logits", 2560, cache_dir=tmp_path)
    assert (again.distance, again.cached) == (4096, False) and not answers[("logits", 2560)]
    monkeypatch.setattr(kernel_choice, "_prefetch", {})
    assert kernel_choice.prefetch_choice("logits", 2560, cache_dir=tmp_path).distance == 4096  # cached


@pytest.mark.skipif(not has_avx2(), reason="host has no AVX2")
def test_prefetch_timings_from_a_slow_spell_are_not_cached(tmp_path: Path, monkeypatch) -> None:
    """Two measurements whose best GB/s disagree by more than 10 % (one fell in a slow spell of a shared
    host) give the best of both for this process, and the next process measures again."""
    steady = {0: 10.0, 4096: 20.0, 16384: 19.0}
    spell = {0: 4.0, 4096: 9.0, 16384: 15.0}
    answers = {("matrix", 6912): [steady, spell, steady, steady]}
    _fake_prefetch_timings(monkeypatch, answers)
    first = kernel_choice.prefetch_choice("matrix", 6912, cache_dir=tmp_path)
    assert (first.distance, first.cached) == (4096, False)
    assert not (tmp_path / kernel_choice.PREFETCH_FILE).exists()
    monkeypatch.setattr(kernel_choice, "_prefetch", {})
    second = kernel_choice.prefetch_choice("matrix", 6912, cache_dir=tmp_path)
    assert not second.cached and not answers[("matrix", 6912)]
    assert (tmp_path / kernel_choice.PREFETCH_FILE).exists()


@pytest.mark.skipif(not has_avx2(), reason="host has no AVX2")
def test_prefetch_timing_streams_every_distance() -> None:
    from engine.kernels import avx2

    for kind, cols in (("matrix", 384), ("logits", 192)):
        got = avx2.time_prefetch(kind, cols, distances=(0, 4096), rounds=2, nbytes=8 << 20)
        assert set(got) == {0, 4096} and all(x > 0 for x in got.values())


@pytest.mark.skipif(not has_avx2(), reason="host has no AVX2")
def test_avx2_matrices_run_with_the_distance_of_their_row_width(tmp_path: Path, monkeypatch) -> None:
    """A model's AVX2 matrices of each width hold that width's choice (whose plan their kernels take), and
    its receipt record lists one target per kind and width, the logits' among them."""
    from engine.kernels import avx2

    monkeypatch.setattr(avx2, "time_prefetch", lambda kind, cols: {0: 1.0, cols * 4: 2.0})
    monkeypatch.setattr(kernel_choice, "_prefetch", {})
    monkeypatch.setenv(kernel_choice.CACHE_ENV, str(tmp_path))
    model = load_model(ensure_preset_model("tiny", cache_dir=tmp_path), kernel="i2s")
    if "avx2" not in model.kernel_variants().values():
        pytest.skip("this host runs the model on another path")
    cfg = model.config
    for m in model._matrices.values():
        assert m.prefetch.cols == m.cols and m.prefetch.distance == 4 * m.cols
    record = kernel_choice.prefetch_record(model.prefetch_choices())
    assert {(t["kind"], t["cols"]) for t in record["targets"]} == {
        ("matrix", cfg.hidden),
        ("matrix", cfg.ffn),
        ("logits", cfg.hidden),
    }
