"""load_file on real files: every format, both architectures, every tensor validated, inventory and config."""

import json

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from engine.config import ModelConfig
from engine.errors import TensorSizeError, UnsupportedModelError
from engine.flavor import expected_nbytes
from engine.gguf_reader import read_gguf
from engine.loader import load_file
from harness.commands.model_inspect import register

Q = "blk.0.attn_q.weight"
UP = "blk.0.ffn_up.weight"  # (512, 256): i2s expects 32800 bytes, tolerance 32


@pytest.fixture(autouse=True)
def _permissive_env(monkeypatch):
    monkeypatch.delenv("BITNET_STRICT_MODE", raising=False)


@pytest.mark.parametrize("fmt", ["i2s", "qk256", "bitnet32", "tq2_0", "tq1_0"])
def test_every_format_loads(make_model, fmt):
    mf = load_file(make_model(fmt))
    c = mf.config
    assert (c.arch, c.n_layers, c.hidden, c.ffn, c.n_heads, c.n_kv_heads, c.head_dim) == (
        "bitnet-b1.58",
        1,
        256,
        512,
        4,
        2,
        64,
    )
    assert (c.vocab_size, c.context_length, c.rope_theta, c.ffn_act, c.weight_format) == (
        64,
        128,
        500000.0,
        "relu2",
        fmt,
    )
    assert c.rms_eps == pytest.approx(1e-5)
    assert mf.flavor(Q) == fmt and mf.flavor("token_embd.weight") == "f16"
    assert all(check.status == "ok" for check in mf.checks) and mf.warnings == []
    assert len(mf.checks) == len(mf.gguf.tensors)
    t = mf.tensor(Q)
    assert t.nbytes == len(t.data) == expected_nbytes(fmt, (256, 256))


def test_bitnet_arch_uses_silu_and_accepts_scales(make_model):
    mf = load_file(make_model("tq2_0", "bitnet", scales=True))
    assert mf.config.arch == "bitnet" and mf.config.ffn_act == "silu"
    assert mf.float_array("blk.0.attn_q.scale").shape == (1,)
    assert mf.warnings == []


def test_float_tensors_come_back_as_float32(make_model):
    mf = load_file(make_model())
    embd = mf.float_array("token_embd.weight")
    assert embd.dtype == np.float32 and embd.shape == (64, 256)
    raw = mf.tensor("token_embd.weight").data.view(np.float16).reshape(64, 256)
    np.testing.assert_array_equal(embd, raw.astype(np.float32))
    norm = mf.float_array("output_norm.weight")
    assert norm.shape == (256,) and norm.dtype == np.float32
    with pytest.raises(UnsupportedModelError, match="not a float tensor"):
        mf.float_array(Q)


def test_permissive_is_default_and_near_miss_warns_naming_the_tensor(make_model):
    path = make_model(sizes={UP: 32800 + 32})
    mf = load_file(path)
    assert any(UP in w and "+32 bytes" in w for w in mf.warnings)
    check = next(c for c in mf.checks if c.name == UP)
    assert (check.status, check.flavor, check.nbytes, check.expected_nbytes) == ("near", "i2s", 32832, 32800)
    assert len(mf.tensor(UP).data) == 32800


def test_a_short_near_miss_is_zero_padded_when_the_scale_survives(make_model):
    path = make_model(sizes={UP: 32800 - 16}, alignment=8)  # 12 of the tail's 28 stale bytes remain
    mf = load_file(path)
    assert any(UP in w and "-16 bytes" in w and "zero-padded" in w for w in mf.warnings)
    t = mf.tensor(UP)
    assert len(t.data) == 32800 and not np.any(t.data[32784:])
    np.testing.assert_array_equal(t.data[:32784], mf.gguf.tensors[UP].data)
    assert t.data[32768:32772].view("<f4")[0] == 1.0


def test_a_tensor_short_of_its_scale_is_invalid_in_every_mode(make_model):
    path = make_model(sizes={UP: 32800 - 32})
    for strict in (False, True):
        with pytest.raises(TensorSizeError, match="found 32768 bytes.*scale at byte 32768 is missing"):
            load_file(path, strict=strict)


def test_strict_rejects_a_near_miss(make_model):
    path = make_model(sizes={UP: 32800 + 32})
    with pytest.raises(TensorSizeError, match="ffn_up.*expected 32800 bytes, found 32832 bytes.*strict"):
        load_file(path, strict=True)


def test_every_tensor_is_validated_and_all_bad_ones_named(make_model):
    path = make_model(sizes={Q: 16416 - 1024, "blk.0.ffn_down.weight": 32800 + 4096})
    with pytest.raises(TensorSizeError) as info:
        load_file(path)
    message = str(info.value)
    assert "2 of 13 tensors have invalid sizes" in message
    assert "'blk.0.attn_q.weight'" in message and "'blk.0.ffn_down.weight'" in message
    assert "\n" not in message


def test_size_mismatch_error_components(make_model):
    path = make_model("bitnet32", sizes={UP: 40960 - 640})
    with pytest.raises(TensorSizeError) as info:
        load_file(path)
    message = str(info.value)
    for part in (UP, "bitnet32", "expected 40960 bytes", "found 40320 bytes", "-1.562%", "re-export"):
        assert part in message


def test_fixed_type_size_error(make_model):
    with pytest.raises(
        TensorSizeError, match="output_norm.*expected 1024 bytes, found 1056 bytes \\(deviation \\+32"
    ):
        load_file(make_model(sizes={"output_norm.weight": 1056}))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"drop": ("blk.0.ffn_down.weight",)}, "missing tensor 'blk.0.ffn_down.weight'"),
        ({"metadata": {"bitnet-b1.58.block_count": 2}}, "tensor inventory problems.*blk.1"),
        ({"metadata": {"general.architecture": "llama"}}, "unsupported architecture 'llama'"),
        ({"metadata": {"bitnet-b1.58.attention.head_count": 3}}, "not a multiple of"),
        ({"metadata": {"bitnet-b1.58.attention.head_count_kv": 3}}, "head_count_kv"),
        ({"metadata": {"bitnet-b1.58.vocab_size": 65}}, "token_embd.weight has 64 rows"),
        ({"metadata": {"bitnet-b1.58.embedding_length": "x"}}, "embedding_length.*not a positive integer"),
        ({"metadata": {"bitnet-b1.58.rope.freq_base": -1.0}}, "freq_base.*not a positive number"),
        ({"metadata": {"bitnet-b1.58.rope.dimension_count": 32}}, "= 32 is below the head dimension 64"),
        ({"metadata": {"bitnet-b1.58.rope.dimension_count": 128}}, "= 128 does not fit the head dim"),
        ({"metadata": {"bitnet-b1.58.rope.dimension_count": 63}}, "must be even"),
    ],
)
def test_unsupported_models(make_model, kwargs, match):
    with pytest.raises(UnsupportedModelError, match=match):
        load_file(make_model(**kwargs))


def test_rope_dimension_count_equal_to_the_head_dimension_loads(make_model):
    mf = load_file(make_model(metadata={"bitnet-b1.58.rope.dimension_count": 64}), strict=True)
    assert mf.config.head_dim == 64


def test_missing_key_is_named(make_model):
    path = make_model()
    f = read_gguf(path)
    meta = {k: v for k, v in f.metadata.items() if k != "bitnet-b1.58.feed_forward_length"}
    with pytest.raises(
        UnsupportedModelError, match="missing metadata key 'bitnet-b1.58.feed_forward_length'"
    ):
        ModelConfig.from_metadata(meta, f.tensors)


def test_config_defaults_and_vocab_fallbacks(make_model):
    f = read_gguf(make_model())
    meta = dict(f.metadata)
    for key in (
        "rope.freq_base",
        "attention.layer_norm_rms_epsilon",
        "vocab_size",
        "attention.head_count_kv",
    ):
        del meta[f"bitnet-b1.58.{key}"]
    c = ModelConfig.from_metadata(meta, f.tensors)
    assert (c.rope_theta, c.rms_eps, c.vocab_size, c.n_kv_heads) == (10000.0, 1e-5, 64, 4)
    meta["tokenizer.ggml.tokens"] = [f"t{i}" for i in range(64)]
    assert ModelConfig.from_metadata(meta, f.tensors).vocab_size == 64
    meta["tokenizer.ggml.tokens"] = [f"t{i}" for i in range(65)]
    meta["bitnet-b1.58.vocab_size"] = 64
    with pytest.raises(UnsupportedModelError, match="65 tokens"):
        ModelConfig.from_metadata(meta, f.tensors)


def test_unused_tensors_are_noted(make_model):
    mf = load_file(make_model(n_layers=2, metadata={"bitnet-b1.58.block_count": 1}))
    assert mf.config.n_layers == 1
    assert "tensor 'blk.1.attn_q.weight' is not used by the model" in mf.warnings
    assert len(mf.warnings) == 11


def _inspect_app():
    app = typer.Typer()
    model_app = typer.Typer()
    app.add_typer(model_app, name="model")
    register(model_app)
    return app


def test_inspect_shows_every_tensor_and_exits_1_on_invalid(make_model):
    runner = CliRunner()
    good = runner.invoke(_inspect_app(), ["model", "inspect", str(make_model())], env={"COLUMNS": "200"})
    assert good.exit_code == 0, good.output
    assert "blk.0.ffn_down.weight" in good.output and "13 tensors" in good.output
    bad_path = make_model(name="bad.gguf", sizes={Q: 8000, UP: 32800 + 32})
    bad = runner.invoke(_inspect_app(), ["model", "inspect", str(bad_path), "--json"])
    assert bad.exit_code == 1
    doc = json.loads(bad.output)
    status = {t["name"]: t["status"] for t in doc["tensors"]}
    assert status[Q] == "invalid" and status[UP] == "near" and len(status) == 13
    assert doc["loadable"] is False and doc["config"]["weight_format"] == "i2s"
    assert doc["totals"]["status"] == {"ok": 11, "invalid": 1, "near": 1}
