"""The `trained` preset: committed ternary weights, exported deterministically, and a model that learned.

The weights come from scripts/train_fixture.py (pydoc_data.topics, quantization-aware training); these tests
need only the engine: the exports hold exactly the committed values, and the engine's own predictions show
what training gave (text from the corpus, peaked logits, a held-out loss far below chance).
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from engine.constants import (
    ARCH_BITNET,
    ARCH_BITNET_B158,
    FORMAT_BITNET32,
    FORMAT_I2S,
    FORMAT_QK256,
    FORMAT_TQ1_0,
    FORMAT_TQ2_0,
)
from engine.errors import EngineError
from engine.loader import load_file
from engine.model import load_model
from engine.model_io import read_weights
from engine.synth import ensure_preset_model, synthesize
from engine.tokenizer import Tokenizer
from engine.trained import TRAIN_FRACTION, TRAINED_PRESET, source_path, training_corpus, training_keys
from harness.cli import app

ARCHS = (ARCH_BITNET_B158, ARCH_BITNET)


def corpus_words() -> set[str]:
    return {w.lower() for w in re.findall(r"[A-Za-z]+", training_corpus())}


@pytest.mark.parametrize("arch", ARCHS)
def test_committed_files_are_small_i2s_models_with_their_provenance(arch: str) -> None:
    path = source_path(arch)
    assert path.stat().st_size < 2_100_000
    model = load_file(path, strict=True)
    assert model.config.weight_format == FORMAT_I2S and model.config.arch == arch
    keys = training_keys(model)
    assert keys["corpus"] == "pydoc_data.topics" and keys["steps"] > 0
    assert keys["held_out_loss"] < 5.0  # chance is ln(2048) = 7.6


@pytest.mark.parametrize("fmt", [FORMAT_TQ2_0, FORMAT_TQ1_0, FORMAT_BITNET32, FORMAT_I2S])
def test_every_export_holds_the_committed_ternary_values(tmp_path: Path, fmt: str) -> None:
    source = read_weights(load_file(source_path(ARCH_BITNET)))
    out = synthesize(TRAINED_PRESET, fmt, ARCH_BITNET, 0, tmp_path / "a.gguf")
    again = synthesize(TRAINED_PRESET, fmt, ARCH_BITNET, 0, tmp_path / "b.gguf")
    assert out.read_bytes() == again.read_bytes()
    exported = read_weights(load_file(out, strict=True))
    for name, weight in source.items():
        a, b = weight.load(), exported[name].load()
        if isinstance(a, tuple):
            assert np.array_equal(a[0], b[0]), name
            assert b[1] == pytest.approx(a[1], rel=0 if fmt == FORMAT_I2S else 2**-11), name
        else:
            assert np.array_equal(a, b), name
    if fmt == FORMAT_I2S:  # the i2s export is the committed file itself, byte for byte
        assert out.read_bytes() == source_path(ARCH_BITNET).read_bytes()


def test_trained_preset_refuses_seeds_and_scale_free_formats() -> None:
    with pytest.raises(EngineError, match="fixed weights"):
        ensure_preset_model(TRAINED_PRESET, FORMAT_I2S, ARCH_BITNET_B158, 3)
    with pytest.raises(EngineError, match="qk256"):
        ensure_preset_model(TRAINED_PRESET, FORMAT_QK256, ARCH_BITNET_B158, 0)


def held_out_ids(tokenizer: Tokenizer, n: int) -> list[int]:
    ids = tokenizer.encode(training_corpus(), add_bos=False)
    start = int(len(ids) * TRAIN_FRACTION) + 100  # the part training never saw
    return [tokenizer.bos_id, *ids[start : start + n - 1]]


@pytest.mark.parametrize("arch", ARCHS)
def test_engine_predicts_held_out_text_with_peaked_logits(arch: str) -> None:
    model = load_model(ensure_preset_model(TRAINED_PRESET, FORMAT_I2S, arch, 0), logits="f32")
    ids = held_out_ids(model.tokenizer, 128)
    model.reset()
    nll, margins = [], []
    for here, following in zip(ids[:-1], ids[1:], strict=True):
        logits = model.decode(here).astype(np.float64)
        top2 = np.sort(logits)[-2:]
        margins.append(top2[1] - top2[0])
        shifted = logits - logits.max()
        nll.append(math.log(np.exp(shifted).sum()) - shifted[following])
    assert np.mean(nll) < 5.0, np.mean(nll)  # chance: 7.6 nats
    assert np.median(margins) > 0.5, np.median(margins)


def test_run_prints_text_that_resembles_the_corpus() -> None:
    result = CliRunner().invoke(
        app, ["run", "--preset", TRAINED_PRESET, "--prompt", "The for statement", "-n", "48"]
    )
    assert result.exit_code == 0, result.output
    text = "\n".join(line for line in result.stdout.splitlines() if not line.startswith("prefill "))
    words = re.findall(r"[A-Za-z]+", text)
    known = corpus_words()
    assert len(words) >= 15 and sum(w.lower() in known for w in words) / len(words) > 0.9, text


@pytest.mark.slow
def test_training_is_deterministic(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="training needs the reference extra (torch)")
    script = Path(__file__).resolve().parents[1] / "scripts" / "train_fixture.py"
    outs = []
    for run in ("a", "b"):
        cmd = [
            sys.executable,
            str(script),
            "--steps",
            "2",
            "--twin-steps",
            "1",
            "--out-dir",
            str(tmp_path / run),
        ]
        subprocess.run(cmd, check=True, capture_output=True, timeout=900)
        outs.append([(tmp_path / run / source_path(a).name).read_bytes() for a in ARCHS])
    assert outs[0] == outs[1]
