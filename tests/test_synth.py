"""Synthetic models: every format and architecture loads, files are deterministic, inventories match 2B-4T."""

import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFReader
from typer.testing import CliRunner

from engine.constants import ARCHITECTURES, WEIGHT_FORMATS, GGMLType
from engine.errors import EngineError
from engine.formats import FORMATS
from engine.gguf_reader import read_gguf
from engine.loader import load_file
from engine.model import load_model
from engine.presets import PRESETS
from engine.synth import (
    CACHE_ENV,
    TERNARY_NONZERO,
    ensure_preset_model,
    model_metadata,
    synthesize,
    tensor_specs,
)
from harness.cli import app

ONE_MB = 1 << 20


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("fmt", WEIGHT_FORMATS)
def test_tiny_writes_loads_and_is_deterministic(tmp_path: Path, fmt: str, arch: str) -> None:
    first = synthesize("tiny", fmt, arch, 0, tmp_path / "a.gguf")
    again = synthesize("tiny", fmt, arch, 0, tmp_path / "b.gguf")
    other = synthesize("tiny", fmt, arch, 1, tmp_path / "c.gguf")
    assert first.stat().st_size < ONE_MB
    assert first.read_bytes() == again.read_bytes()
    assert first.read_bytes() != other.read_bytes()
    model = load_file(first, strict=True)
    assert {c.status for c in model.checks} == {"ok"}
    assert model.config.weight_format == fmt
    assert model.config.arch == arch
    assert model.config.ffn_act == ("relu2" if arch == "bitnet-b1.58" else "silu")
    p = PRESETS["tiny"]
    assert (model.config.n_layers, model.config.hidden, model.config.ffn) == (p.n_layers, p.hidden, p.ffn)
    assert (model.config.n_heads, model.config.n_kv_heads, model.config.vocab_size) == (4, 2, 1024)


def test_tiny_inventory_and_metadata(tmp_path: Path) -> None:
    path = synthesize("tiny", "i2s", "bitnet-b1.58", 7, tmp_path / "m.gguf")
    gguf = read_gguf(path)
    types = Counter(t.ggml_type for t in gguf.tensors.values())
    assert len(gguf.tensors) == 24
    assert types == {GGMLType.I2_S: 14, GGMLType.F32: 9, GGMLType.F16: 1}
    assert "output.weight" not in gguf.tensors
    assert gguf.tensors["token_embd.weight"].shape == (1024, 256)
    assert gguf.tensors["blk.1.attn_k.weight"].shape == (128, 256)
    assert gguf.tensors["blk.0.ffn_down.weight"].shape == (256, 512)
    assert gguf.tensors["blk.0.ffn_sub_norm.weight"].shape == (512,)
    meta = gguf.metadata
    assert meta["general.architecture"] == "bitnet-b1.58"
    assert meta["general.file_type"] == 40
    assert meta["bitnet-b1.58.rope.dimension_count"] == 64
    assert meta["bitnet-b1.58.attention.head_count_kv"] == 2
    assert meta["bitnet-b1.58.rope.freq_base"] == 500000.0
    assert meta["bitnet_harness.preset"] == "tiny" and meta["bitnet_harness.seed"] == 7
    assert meta["tokenizer.ggml.model"] == "gpt2"
    assert len(meta["tokenizer.ggml.tokens"]) == 1024
    assert not any(str(tmp_path) in str(v) for v in meta.values())


@pytest.mark.parametrize("fmt", WEIGHT_FORMATS)
def test_tiny_weights_are_ternary_with_sensible_scales(tmp_path: Path, fmt: str) -> None:
    """About 55 % nonzero ternary codes; effective weight RMS ~ 1/sqrt(cols) (qk256 via its norm)."""
    path = synthesize("tiny", fmt, "bitnet-b1.58", 0, tmp_path / "m.gguf")
    gguf = read_gguf(path)
    tensor = gguf.tensors["blk.0.ffn_up.weight"]
    rows, cols = tensor.shape
    values, _ = FORMATS[fmt].unpack(tensor.data, rows, cols)
    dense = FORMATS[fmt].dequantize(tensor.data, rows, cols).astype(np.float64)
    norm = np.asarray(gguf.tensors["blk.0.ffn_norm.weight"].data).view(np.float32)
    if fmt == "qk256":
        assert set(np.unique(values)) == {-2, -1, 1, 2}
        effective_rms = np.sqrt(np.mean(dense**2)) * np.sqrt(np.mean(norm.astype(np.float64) ** 2))
    else:
        assert set(np.unique(values)) == {-1, 0, 1}
        assert abs(np.count_nonzero(values) / values.size - TERNARY_NONZERO) < 0.01
        assert 0.8 < float(norm.mean()) < 1.2
        effective_rms = np.sqrt(np.mean(dense**2))
    assert effective_rms * np.sqrt(cols) == pytest.approx(1.0, rel=0.1)


@pytest.mark.parametrize("fmt", ["tq1_0", "tq2_0"])
def test_tq_files_load_in_gguf_py(tmp_path: Path, fmt: str) -> None:
    path = synthesize("tiny", fmt, "bitnet-b1.58", 0, tmp_path / "m.gguf")
    reader = GGUFReader(path)
    ours = read_gguf(path)
    assert [t.name for t in reader.tensors] == list(ours.tensors)
    for tensor in reader.tensors:
        mine = ours.tensors[tensor.name]
        assert int(tensor.tensor_type) == mine.ggml_type
        assert bytes(tensor.data.reshape(-1).view(np.uint8)) == bytes(np.asarray(mine.data))


def test_progress_reports_every_tensor_in_order(tmp_path: Path) -> None:
    seen: list[tuple[int, int, str]] = []
    synthesize(
        "tiny", "tq2_0", "bitnet", 0, tmp_path / "m.gguf", progress=lambda d, t, n: seen.append((d, t, n))
    )
    assert [d for d, _, _ in seen] == list(range(1, 25))
    assert {t for _, t, _ in seen} == {24}
    assert seen[0][2] == "token_embd.weight" and seen[-1][2] == "output_norm.weight"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("huge", "i2s", "bitnet-b1.58", 0), "unknown preset"),
        (("tiny", "q4_0", "bitnet-b1.58", 0), "unknown weight format"),
        (("tiny", "i2s", "llama", 0), "unknown architecture"),
        (("tiny", "i2s", "bitnet", -1), "seed must be"),
        (("tiny", "i2s", "bitnet", 2**32), "seed must be"),
    ],
)
def test_bad_choices_raise_engine_errors(tmp_path: Path, args: tuple, message: str) -> None:
    with pytest.raises(EngineError, match=message):
        synthesize(*args, tmp_path / "m.gguf")
    assert not list(tmp_path.iterdir())


def test_output_path_that_is_a_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="is a folder"):
        synthesize("tiny", "i2s", "bitnet", 0, tmp_path)


def test_ensure_preset_model_writes_once_and_reuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    path = ensure_preset_model("tiny")
    assert path.parent == tmp_path / "cache" / "models"
    stamp = path.stat().st_mtime_ns
    assert ensure_preset_model("tiny") == path
    assert path.stat().st_mtime_ns == stamp
    explicit = ensure_preset_model("tiny", "qk256", "bitnet", 3, cache_dir=tmp_path / "elsewhere")
    assert explicit.parent == tmp_path / "elsewhere"
    assert read_gguf(explicit).metadata["bitnet_harness.seed"] == 3
    assert [p.name for p in (tmp_path / "cache" / "models").iterdir()] == [path.name]


def test_cli_synth_writes_and_summarizes(tmp_path: Path) -> None:
    out = tmp_path / "cli.gguf"
    result = CliRunner().invoke(
        app, ["model", "synth", "--out", str(out), "--format", "bitnet32", "--seed", "5"]
    )
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output and "24 tensors" in result.output
    assert (
        out.read_bytes()
        == synthesize("tiny", "bitnet32", "bitnet-b1.58", 5, tmp_path / "api.gguf").read_bytes()
    )


@pytest.mark.parametrize("bad", [["--preset", "huge"], ["--format", "q4"], ["--arch", "x"], ["--seed", "-3"]])
def test_cli_synth_bad_choices_exit_2(tmp_path: Path, bad: list[str]) -> None:
    result = CliRunner().invoke(app, ["model", "synth", "--out", str(tmp_path / "m.gguf"), *bad])
    assert result.exit_code == 2
    assert not (tmp_path / "m.gguf").exists()


def test_2b4t_i2s_inventory_from_specs() -> None:
    """The 2B-4T shape, counted without writing: 332 tensors, 210 I2_S, 121 F32, 1 F16."""
    specs = tensor_specs("2b-4t", "i2s", "bitnet-b1.58", 0, token_types=[1] * 128256)
    assert len(specs) == 332
    assert Counter(s.ggml_type for s in specs) == {GGMLType.I2_S: 210, GGMLType.F32: 121, GGMLType.F16: 1}
    by_name = {s.name: s for s in specs}
    assert by_name["token_embd.weight"].shape == (128256, 2560)
    assert by_name["blk.29.attn_q.weight"].nbytes == 1638432
    assert by_name["blk.0.attn_k.weight"].shape == (640, 2560)
    assert by_name["blk.0.ffn_down.weight"].shape == (2560, 6912)
    assert by_name["blk.0.ffn_down.weight"].nbytes == 2560 * 6912 // 4 + 32
    meta = model_metadata("2b-4t", "i2s", "bitnet-b1.58", 0)
    assert meta["tokenizer.ggml.bos_token_id"] == 128000
    assert meta["bitnet-b1.58.rope.dimension_count"] == 128
    assert meta["bitnet-b1.58.context_length"] == 4096


def test_preset_shapes() -> None:
    assert 90e6 < PRESETS["small"].n_params() < 110e6
    assert 2.0e9 < PRESETS["2b-4t"].n_params() < 2.5e9
    for preset in PRESETS.values():
        assert preset.hidden % 256 == 0 and preset.ffn % 256 == 0
        assert preset.hidden == preset.n_heads * preset.head_dim


@pytest.mark.slow
def test_2b4t_i2s_real_write_under_two_minutes(tmp_path: Path) -> None:
    start = time.perf_counter()
    path = synthesize("2b-4t", "i2s", "bitnet-b1.58", 0, tmp_path / "2b.gguf")
    seconds = time.perf_counter() - start
    assert seconds < 120, f"2b-4t i2s write took {seconds:.1f} s"
    model = load_file(path, strict=True)
    assert len(model.checks) == 332
    assert {c.status for c in model.checks} == {"ok"}
    types = Counter(c.ggml_type for c in model.checks)
    assert types == {GGMLType.I2_S: 210, GGMLType.F32: 121, GGMLType.F16: 1}
    assert model.config.vocab_size == 128256 and model.config.n_layers == 30


@pytest.mark.parametrize("fmt", WEIGHT_FORMATS)
def test_tiny_greedy_decoding_is_varied(tmp_path: Path, fmt: str) -> None:
    """The weight and norm scales give spread-out logits and greedy text that is not one token repeated."""
    model = load_model(synthesize("tiny", fmt, "bitnet-b1.58", 0, tmp_path / "m.gguf"))
    logits = model.prefill([model.tokenizer.bos_id, 100, 200, 300])
    assert 2.0 < float(logits.std()) < 8.0
    tokens = []
    for _ in range(24):
        tokens.append(int(logits.argmax()))
        logits = model.decode(tokens[-1])
    assert len(set(tokens)) >= 6
    assert max(tokens) < model.tokenizer.bos_id  # no special token wins: EOS never cuts generation short
