"""`--kernel auto`: interleaved rounds, the verdict's noise check, the cache and its key, `--retune`, and the
receipt's record of how each family was chosen."""

import json
from pathlib import Path

import numba
import numpy as np
import pytest
from jsonschema import Draft202012Validator

from engine import kernel_choice
from engine.errors import EngineError
from engine.formats import FORMATS
from engine.kernel_choice import ROUNDS, ShapeTiming, _verdict, choose, time_families
from engine.model import load_model
from engine.synth import ensure_preset_model
from harness.receipts.build import kernel_choice_section
from harness.receipts.schema import load_schema
from tests.archive_factory import fresh_app, invoke


def _raw(rows: int = 16, cols: int = 256) -> np.ndarray:
    values = np.random.default_rng(3).integers(-1, 2, (rows, cols)).astype(np.int8)
    return FORMATS["i2s"].pack(values, 0.5)


def _rounds(i2s: list[float], tl1: list[float], tl2: list[float] | None = None) -> dict[str, list[float]]:
    out = {"i2s": i2s, "tl1": tl1}
    if tl2 is not None:
        out["tl2"] = tl2
    return out


BASE = [1.00, 1.02, 0.99, 1.01, 1.00, 0.98, 1.01]


def test_another_family_wins_only_in_every_round_and_by_the_margin() -> None:
    clear = _verdict(_rounds(BASE, [0.8 * t for t in BASE], [1.5] * ROUNDS), {}, 10)
    assert clear.choice == "tl1" and not clear.noisy
    assert clear.reason == "faster than i2s in all 7 rounds, by 20% in the median"
    one_loss = [0.8 * t for t in BASE]
    one_loss[3] = 1.2
    kept = _verdict(_rounds(BASE, one_loss), {}, 10)
    assert kept.choice == "i2s" and "in 6 of 7 rounds: within noise" in kept.reason
    small = _verdict(_rounds(BASE, [0.97 * t for t in BASE]), {}, 10)
    assert small.choice == "i2s" and "ahead by 3%" in small.reason
    slower = _verdict(_rounds(BASE, [1.3 * t for t in BASE]), {}, 10)
    assert slower.choice == "i2s" and slower.reason == "fastest in the median round"


def test_noisy_rounds_keep_the_default_family() -> None:
    wild = [0.2, 1.5, 0.3, 2.0, 0.25, 1.8, 0.4]
    timing = _verdict(_rounds(BASE, wild), {}, 10)
    assert timing.noisy and timing.choice == "i2s"
    assert timing.reason.startswith("timings too noisy (tl1 rounds spread") and "not cached" in timing.reason


def test_rounds_are_interleaved_and_rotated(monkeypatch: pytest.MonkeyPatch) -> None:
    """A burst of outside load must hit every family alike: each round times every family once, and each
    round starts with a different family."""
    import engine.kernels as kernels

    order: list[str] = []
    real = kernels.matvec

    def spy(m, q, s, out, counts):
        order.append(m.kernel)
        real(m, q, s, out, counts)

    monkeypatch.setattr(kernels, "matvec", spy)
    timing = time_families("i2s", _raw(), 16, 256)
    assert set(timing.rounds) == set(kernel_choice.FAMILIES) and timing.errors == {}
    assert all(len(r) == ROUNDS and min(r) > 0 for r in timing.rounds.values())
    calls = timing.calls_per_round
    timed = order[2 * 3 :]  # two untimed calls each: compile, then the single call that sizes the batches
    batches = [timed[i] for i in range(0, len(timed), calls)]
    assert all(timed[i : i + calls] == [timed[i]] * calls for i in range(0, len(timed), calls))
    attempt = batches[: 3 * ROUNDS]
    families = ["i2s", "tl1", "tl2"]
    for r in range(ROUNDS):
        assert attempt[3 * r : 3 * r + 3] == families[r % 3 :] + families[: r % 3]


def test_families_that_cannot_hold_the_matrix_are_named(tmp_path: Path) -> None:
    """QK256 values {-2, -1, 1, 2} are not ternary: tl1/tl2 refuse them, so auto must keep i2s."""
    raw = FORMATS["qk256"].pack(
        np.random.default_rng(1).choice([-2, -1, 1, 2], (16, 256)).astype(np.int8), None
    )
    sel = choose({("qk256", 16, 256): raw}, cache_dir=tmp_path)
    timing = sel.shapes["qk256:16x256"]
    assert set(timing.rounds) == {"i2s"} and timing.choice == "i2s"
    assert set(timing.errors) == {"tl1", "tl2"} and all(
        e.startswith("unsupported") for e in timing.errors.values()
    )


def _fixed_timing(choice: str, noisy: bool):
    def fake(flavor: str, raw: np.ndarray, rows: int, cols: int) -> ShapeTiming:
        calls.append((flavor, rows, cols))
        return ShapeTiming(
            choice, "test verdict", noisy, {"i2s": [1.0] * ROUNDS, "tl1": [0.5] * ROUNDS}, {}, 3
        )

    calls: list[tuple[str, int, int]] = []
    return fake, calls


def test_cache_keeps_checked_verdicts_and_retune_replaces_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    samples = {("i2s", 16, 256): _raw(), ("i2s", 32, 256): _raw(32)}
    fake, calls = _fixed_timing("tl1", noisy=False)
    monkeypatch.setattr(kernel_choice, "time_families", fake)
    first = choose(samples, cache_dir=tmp_path)
    assert len(calls) == 2 and first.kernels == {"i2s:16x256": "tl1", "i2s:32x256": "tl1"}
    assert first.cached == {"i2s:16x256": False, "i2s:32x256": False}
    second = choose(samples, cache_dir=tmp_path)
    assert len(calls) == 2 and all(second.cached.values()) and second.kernels == first.kernels
    assert second.shapes["i2s:16x256"].rounds == first.shapes["i2s:16x256"].rounds
    fake2, calls2 = _fixed_timing("i2s", noisy=False)
    monkeypatch.setattr(kernel_choice, "time_families", fake2)
    again = choose(samples, cache_dir=tmp_path, retune=True)
    assert len(calls2) == 2 and again.retuned and not any(again.cached.values())
    assert set(choose(samples, cache_dir=tmp_path).kernels.values()) == {"i2s"}  # the retuned verdict stays


def test_noisy_verdicts_are_not_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, calls = _fixed_timing("i2s", noisy=True)
    monkeypatch.setattr(kernel_choice, "time_families", fake)
    samples = {("i2s", 16, 256): _raw()}
    choose(samples, cache_dir=tmp_path)
    choose(samples, cache_dir=tmp_path)
    assert len(calls) == 2  # timed again: a noisy verdict is never kept
    assert not (tmp_path / kernel_choice.CACHE_FILE).exists()


def test_cache_key_names_cpu_threads_and_engine_version() -> None:
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = kernel_choice.cache_key()
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        full = kernel_choice.cache_key()
    finally:
        numba.set_num_threads(before)
    assert set(one) == {"cpu", "flags", "threads", "numba", "engine"}
    assert one["threads"] == 1 and full["threads"] == numba.config.NUMBA_NUM_THREADS
    assert "+" in str(one["engine"]) and one["cpu"] == full["cpu"]


def test_model_load_records_the_tuning_in_the_receipt_section(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(kernel_choice.CACHE_ENV, str(tmp_path / "cache"))
    path = ensure_preset_model("tiny", cache_dir=tmp_path / "models")
    first = load_model(path, kernel="auto")
    sel = first.kernel_selection
    assert sel.mode == "auto" and not any(sel.cached.values())
    for name, gemv in first.kernel_choices.items():
        assert gemv.startswith(sel.kernel_for(first.file.flavor(name), *first.file.tensor(name).shape))
    stored = json.loads((tmp_path / "cache" / kernel_choice.CACHE_FILE).read_text())
    checked = [k for k, t in sel.shapes.items() if not t.noisy]
    assert all(k in next(iter(stored.values())) for k in checked)
    second = load_model(path, kernel="auto")
    assert {k for k, c in second.kernel_selection.cached.items() if c} == set(checked)
    section = kernel_choice_section(sel, first.kernel_variants(), set(first.trace.snapshot()) | {"i2s_gemv"})
    schema = load_schema()
    sub = {"$defs": schema["$defs"], **schema["properties"]["kernel_choice"]}
    assert list(Draft202012Validator(sub).iter_errors(section)) == []
    tuning = section["tuning"]
    assert tuning["retuned"] is False and tuning["cache_key"]["threads"] == numba.get_num_threads()
    assert {tuple(s["shape"]) for s in tuning["shapes"]} == {tuple(s["shape"]) for s in section["per_shape"]}
    assert all(len(r) == ROUNDS for s in tuning["shapes"] for r in s["rounds_seconds"].values())
    with pytest.raises(EngineError, match="retuning times the families for kernel 'auto'"):
        load_model(path, kernel="i2s", retune=True)


def test_retune_with_a_fixed_kernel_is_a_one_line_error(tmp_path: Path) -> None:
    out = invoke(fresh_app(), ["benchmark", "--preset", "tiny", "--kernel", "i2s", "--retune"])
    assert out.code == 2
    assert (
        out.stderr.strip() == "error: --retune times the kernel families for --kernel auto; this run uses i2s"
    )
