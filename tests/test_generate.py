"""Generation: greedy is argmax decoding, seeded sampling repeats, EOS and context limits, the run command."""

import math
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from engine.errors import EngineError
from engine.generate import Sampler, SamplingParams, generate
from engine.model import load_model
from engine.synth import ensure_preset_model
from harness.commands import run
from harness.errors import HarnessError


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory):
    path = ensure_preset_model("tiny", cache_dir=tmp_path_factory.mktemp("gen-models"))
    m = load_model(path, kernel="i2s")
    m.warmup()
    return m


class ScriptedModel:
    """Stands in for Model: returns logits whose argmax follows a script, to drive generate's control flow."""

    def __init__(self, script: list[int], vocab: int = 8, context: int = 64, eos: int = 7) -> None:
        self.config = SimpleNamespace(context_length=context, vocab_size=vocab)
        self.tokenizer = SimpleNamespace(eos_id=eos)
        self.script = script
        self.calls: list[object] = []

    def _logits(self) -> np.ndarray:
        logits = np.zeros(self.config.vocab_size, np.float32)
        logits[self.script[min(len(self.calls) - 1, len(self.script) - 1)]] = 5.0
        return logits

    def reset(self) -> None:
        self.calls = []

    def prefill(self, tokens: list[int]) -> np.ndarray:
        self.calls.append(list(tokens))
        return self._logits()

    def decode(self, token: int) -> np.ndarray:
        self.calls.append(token)
        return self._logits()


def test_greedy_equals_argmax_decoding(model) -> None:
    prompt = [1, 50, 60, 70]
    seen: list[int] = []
    result = generate(model, prompt, 20, SamplingParams(), on_token=seen.append)
    model.reset()
    logits = model.prefill(prompt)
    expected = []
    for _ in range(20):
        expected.append(int(np.argmax(logits)))
        logits = model.decode(expected[-1])
    assert result.tokens == expected == seen
    assert len(result.decode_seconds) == 19 and result.prefill_seconds > 0
    assert not result.stopped_on_eos


def test_same_seed_same_tokens(model) -> None:
    params = SamplingParams(temperature=1.5, top_k=50, top_p=0.95, seed=11)
    first = generate(model, [1, 2, 3], 24, params).tokens
    again = generate(model, [1, 2, 3], 24, params).tokens
    other = generate(
        model, [1, 2, 3], 24, SamplingParams(temperature=1.5, top_k=50, top_p=0.95, seed=12)
    ).tokens
    assert first == again
    assert first != other


def test_top_k_one_is_greedy(model) -> None:
    greedy = generate(model, [1, 9], 16, SamplingParams()).tokens
    assert generate(model, [1, 9], 16, SamplingParams(temperature=2.0, top_k=1, seed=5)).tokens == greedy
    assert generate(model, [1, 9], 16, SamplingParams(temperature=2.0, top_p=1e-6, seed=5)).tokens == greedy


def test_sampler_follows_the_distribution() -> None:
    logits = np.array([0.0, math.log(3.0), -50.0], np.float32)  # p = 1/4, 3/4, ~0
    sampler = Sampler(3, SamplingParams(temperature=1.0, seed=0))
    draws = np.array([sampler(logits) for _ in range(4000)])
    assert abs((draws == 1).mean() - 0.75) < 0.03
    assert (draws == 2).sum() == 0
    nucleus = Sampler(3, SamplingParams(temperature=1.0, top_p=0.7, seed=0))
    assert {nucleus(logits) for _ in range(200)} == {1}
    two = Sampler(3, SamplingParams(temperature=1.0, top_k=2, seed=0))
    assert {two(logits) for _ in range(400)} == {0, 1}


def test_sampler_allocates_nothing_per_call() -> None:
    vocab = 50_000
    logits = np.random.default_rng(0).standard_normal(vocab).astype(np.float32)
    sampler = Sampler(vocab, SamplingParams(temperature=0.8, top_k=40, top_p=0.9, seed=1))
    sampler(logits)
    tracemalloc.start()
    try:
        for _ in range(20):
            sampler(logits)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024


def test_stops_on_eos_without_emitting_it() -> None:
    fake = ScriptedModel([3, 4, 7, 5])
    result = generate(fake, [1, 2], 10)
    assert result.tokens == [3, 4]
    assert result.stopped_on_eos
    assert fake.calls == [[1, 2], 3, 4]


def test_limits_and_context() -> None:
    fake = ScriptedModel([3], context=10)
    result = generate(fake, [1] * 8, 100)
    assert result.tokens == [3, 3, 3]  # positions 8 and 9 are decoded, the third token needs no decode
    assert len(result.decode_seconds) == 2
    assert generate(ScriptedModel([3]), [1], 0).tokens == []
    with pytest.raises(EngineError, match="prompt"):
        generate(ScriptedModel([3]), [], 4)
    with pytest.raises(EngineError, match="context"):
        generate(ScriptedModel([3], context=4), [1] * 5, 4)


@pytest.mark.parametrize(
    "kwargs", [{"temperature": -1.0}, {"top_k": -2}, {"top_p": 0.0}, {"top_p": 1.5}, {"seed": -1}]
)
def test_bad_sampling_params(kwargs: dict) -> None:
    with pytest.raises(EngineError):
        SamplingParams(**kwargs)


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Test shell."""

    run.register(app)
    return app


def test_run_command_streams_text_and_speed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BITNET_HARNESS_CACHE", str(tmp_path))
    result = CliRunner().invoke(
        _app(), ["run", "--preset", "tiny", "-n", "8", "--prompt", "Hello", "--seed", "3"]
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("Hello")
    assert lines[-1].startswith("prefill ") and "decode 7 tok" in lines[-1] and "kernel " in lines[-1]


def test_run_command_reports_bad_model(tmp_path: Path) -> None:
    result = CliRunner().invoke(_app(), ["run", "--model", str(tmp_path / "missing.gguf"), "-n", "2"])
    assert isinstance(result.exception, EngineError | HarnessError)
    assert "missing.gguf" in str(result.exception)
