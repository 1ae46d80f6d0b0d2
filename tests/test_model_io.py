"""The format-independent weight writer and reader: ternary values and scales survive every scaled format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.constants import (
    ARCH_BITNET,
    FORMAT_BITNET32,
    FORMAT_I2S,
    FORMAT_QK256,
    FORMAT_TQ1_0,
    FORMAT_TQ2_0,
)
from engine.errors import EngineError
from engine.loader import load_file
from engine.model import load_model
from engine.model_io import (
    Floats,
    Ternary,
    architecture_metadata,
    is_matrix,
    read_weights,
    tensor_names,
    ternary_values,
    write_model,
)
from engine.presets import Preset
from engine.synth import ensure_preset_model
from engine.tokenizer_data import tokenizer_metadata

SHAPE = Preset(
    "unit", n_layers=1, hidden=256, ffn=512, n_heads=4, n_kv_heads=2, vocab_size=512, context_length=64
)


def random_weights(seed: int = 0) -> dict[str, Ternary | Floats]:
    rng = np.random.default_rng(seed)
    shapes = SHAPE.matrix_shapes()
    out: dict[str, Ternary | Floats] = {}
    for name in tensor_names(SHAPE.n_layers):
        part = name.split(".")[-2]
        if is_matrix(name):
            values = rng.integers(-1, 2, size=shapes[part]).astype(np.int8)
            out[name] = Ternary.of(values, float(rng.uniform(0.01, 0.1)))
        elif name == "token_embd.weight":
            out[name] = Floats.of(rng.standard_normal((SHAPE.vocab_size, SHAPE.hidden)).astype(np.float32))
        else:
            size = SHAPE.ffn if part == "ffn_sub_norm" else SHAPE.hidden
            out[name] = Floats.of(rng.uniform(0.5, 1.5, size).astype(np.float32))
    return out


def write(tmp_path: Path, fmt: str, weights: dict[str, Ternary | Floats]) -> Path:
    meta = architecture_metadata(ARCH_BITNET, SHAPE, fmt, "unit")
    meta.update(tokenizer_metadata(SHAPE.vocab_size))
    return write_model(tmp_path / f"m-{fmt}.gguf", meta, weights, SHAPE.n_layers, fmt)


@pytest.mark.parametrize("fmt", [FORMAT_I2S, FORMAT_TQ2_0, FORMAT_TQ1_0, FORMAT_BITNET32])
def test_values_and_scales_survive_every_scaled_format(tmp_path: Path, fmt: str) -> None:
    weights = random_weights()
    path = write(tmp_path, fmt, weights)
    model = load_file(path, strict=True)
    assert model.config.weight_format == fmt and model.config.arch == ARCH_BITNET
    back = read_weights(model)
    for name, weight in weights.items():
        if isinstance(weight, Ternary):
            values, scale = back[name].load()
            want_values, want_scale = weight.load()
            assert np.array_equal(values, want_values), name
            # I2_S keeps the float32 scale; the block formats store it as fp16 in every block.
            tolerance = 0 if fmt == FORMAT_I2S else 2**-11
            assert scale == pytest.approx(np.float32(want_scale), rel=tolerance, abs=0), name
        else:
            want = weight.load().astype(np.float16 if name == "token_embd.weight" else np.float32)
            assert np.array_equal(back[name].load(), want.astype(np.float32)), name
    load_model(path).decode(1)  # the engine runs it


def test_the_writer_is_deterministic(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    assert (
        write(a, FORMAT_I2S, random_weights(1)).read_bytes()
        == write(b, FORMAT_I2S, random_weights(1)).read_bytes()
    )


def test_qk256_cannot_hold_scaled_ternary_weights(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="qk256.*cannot hold ternary weights"):
        write(tmp_path, FORMAT_QK256, random_weights())


@pytest.mark.parametrize(
    ("values", "scale", "message"),
    [
        (np.full((4, 4), 2, np.int8), 1.0, "outside"),
        (np.zeros((4, 4), np.int8), 0.0, "not a positive finite"),
        (np.zeros((4, 4), np.int8), float("nan"), "not a positive finite"),
        (np.zeros((4, 3), np.int8), 1.0, "declared"),
    ],
)
def test_ternary_values_are_checked(values: np.ndarray, scale: float, message: str) -> None:
    weight = Ternary((4, 4), lambda: (values, scale))
    with pytest.raises(EngineError, match=message):
        ternary_values("blk.0.attn_q.weight", weight)


def test_a_missing_tensor_is_named(tmp_path: Path) -> None:
    weights = random_weights()
    del weights["blk.0.ffn_up.weight"]
    with pytest.raises(EngineError, match="blk.0.ffn_up.weight"):
        write(tmp_path, FORMAT_I2S, weights)


def test_block_formats_with_several_scales_are_not_one_ternary_matrix() -> None:
    model = load_file(ensure_preset_model("tiny", FORMAT_TQ2_0, ARCH_BITNET, 0))
    weight = read_weights(model)["blk.0.attn_q.weight"]
    with pytest.raises(EngineError, match="distinct block scales"):
        weight.load()
