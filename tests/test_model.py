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


@pytest.mark.skipif(not has_avx2(), reason="host has no AVX2")
def test_prefetch_distance_is_measured_cached_and_applied(tmp_path: Path, monkeypatch) -> None:
    """The AVX2 prefetch distances come from timings on this host: the fastest (a shorter one within 3 % of
    it wins), written to the cache once, then read back; the kernels' schedule array carries them."""
    from engine.kernels import avx2

    measured = {"matrix": {0: 5.0, 1024: 9.0, 4096: 9.2, 8192: 10.0}, "logits": {0: 8.0, 2048: 7.0}}
    calls = []

    def fake_time_prefetch():
        calls.append(1)
        return measured

    monkeypatch.setattr(avx2, "time_prefetch", fake_time_prefetch)
    monkeypatch.setattr(kernel_choice, "_prefetch", {})
    monkeypatch.setattr(avx2, "SCHEDULE", np.zeros_like(avx2.SCHEDULE))
    first = kernel_choice.prefetch_choice(cache_dir=tmp_path)
    assert (first.matrix, first.logits, first.cached) == (8192, 0, False)
    assert avx2.SCHEDULE.tolist() == [8192, 0]
    assert kernel_choice.applied_prefetch() is first
    assert first.as_dict()["timings_gb_per_s"]["matrix"] == {"0": 5.0, "1024": 9.0, "4096": 9.2, "8192": 10.0}
    measured["matrix"][4096] = 9.8  # within 3 % of the fastest: the shorter distance is chosen
    monkeypatch.setattr(kernel_choice, "_prefetch", {})
    again = kernel_choice.prefetch_choice(cache_dir=tmp_path)
    assert again.cached and again.matrix == 8192 and len(calls) == 2  # read back, not measured again
    (tmp_path / kernel_choice.PREFETCH_FILE).unlink()
    monkeypatch.setattr(kernel_choice, "_prefetch", {})
    assert kernel_choice.prefetch_choice(cache_dir=tmp_path).matrix == 4096 and len(calls) == 4


@pytest.mark.skipif(not has_avx2(), reason="host has no AVX2")
def test_retune_measures_the_prefetch_distances_again(tmp_path: Path, monkeypatch) -> None:
    """`--retune` (kernel_choice.choose(retune=True)) also replaces cached prefetch distances: a choice
    cached from a bad moment must not outlive the user's request to time again."""
    from engine.kernels import avx2

    answers = [
        {"matrix": {0: 9.0, 16384: 10.0}, "logits": {0: 9.0, 1024: 10.0}},
        {"matrix": {0: 9.0, 16384: 10.0}, "logits": {0: 9.0, 1024: 10.0}},
        {"matrix": {0: 9.0, 4096: 20.0, 16384: 10.0}, "logits": {0: 20.0, 1024: 10.0}},
        {"matrix": {0: 9.0, 4096: 20.0, 16384: 10.0}, "logits": {0: 20.0, 1024: 10.0}},
    ]
    monkeypatch.setattr(avx2, "time_prefetch", lambda: answers.pop(0))
    monkeypatch.setattr(kernel_choice, "_prefetch", {})
    monkeypatch.setattr(avx2, "SCHEDULE", np.zeros_like(avx2.SCHEDULE))
    assert kernel_choice.prefetch_choice(cache_dir=tmp_path).matrix == 16384
    monkeypatch.setattr(kernel_choice, "_prefetch", {})
    assert kernel_choice.prefetch_choice(cache_dir=tmp_path).cached  # read back
    kernel_choice.choose({}, cache_dir=tmp_path, retune=True)
    again = kernel_choice.prefetch_choice(cache_dir=tmp_path)
    assert (again.matrix, again.logits, again.cached) == (4096, 0, False) and not answers
    monkeypatch.setattr(kernel_choice, "_prefetch", {})
    assert kernel_choice.prefetch_choice(cache_dir=tmp_path).matrix == 4096  # the new one is cached


@pytest.mark.skipif(not has_avx2(), reason="host has no AVX2")
def test_prefetch_timings_from_a_slow_spell_are_not_cached(tmp_path: Path, monkeypatch) -> None:
    """Two measurements whose best GB/s disagree by more than 10 % (one fell in a slow spell of a shared
    host) give the best of both for this process, and the next process measures again."""
    from engine.kernels import avx2

    steady = {"matrix": {0: 10.0, 4096: 20.0, 16384: 19.0}, "logits": {0: 20.0, 4096: 26.0}}
    spell = {"matrix": {0: 4.0, 4096: 9.0, 16384: 15.0}, "logits": {0: 9.0, 4096: 8.0}}
    answers = [steady, spell, steady, steady]
    monkeypatch.setattr(avx2, "time_prefetch", lambda: answers.pop(0))
    monkeypatch.setattr(kernel_choice, "_prefetch", {})
    monkeypatch.setattr(avx2, "SCHEDULE", np.zeros_like(avx2.SCHEDULE))
    first = kernel_choice.prefetch_choice(cache_dir=tmp_path)
    assert (first.matrix, first.logits, first.cached) == (4096, 4096, False)
    assert not (tmp_path / kernel_choice.PREFETCH_FILE).exists()
    monkeypatch.setattr(kernel_choice, "_prefetch", {})
    second = kernel_choice.prefetch_choice(cache_dir=tmp_path)
    assert not second.cached and not answers and (tmp_path / kernel_choice.PREFETCH_FILE).exists()


@pytest.mark.skipif(not has_avx2(), reason="host has no AVX2")
def test_prefetch_timing_streams_every_distance() -> None:
    from engine.kernels import avx2

    got = avx2.time_prefetch(distances=(0, 4096), rounds=2, nbytes=8 << 20)
    assert set(got) == {"matrix", "logits"}
    assert all(set(v) == {0, 4096} and all(x > 0 for x in v.values()) for v in got.values())
