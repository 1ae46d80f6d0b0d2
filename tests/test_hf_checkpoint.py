"""Hugging Face BitNet folders to GGUF: the three matrix forms, shards, the tokenizer, and clear refusals.

Folders here are written with the `safetensors` package's numpy writer (float32/uint8; BF16 comes from torch
in tests/test_transformers_reference.py, which also checks transformers' own save_pretrained layout).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.constants import ARCH_BITNET, ARCH_BITNET_B158, FORMAT_I2S, FORMAT_TQ2_0
from engine.errors import EngineError
from engine.gguf_reader import read_gguf
from engine.hf_checkpoint import (
    LAYER_NAMES,
    absmean_ternary,
    convert_checkpoint,
    ensure_converted,
    is_checkpoint_folder,
    read_checkpoint,
    unpack_rows,
)
from engine.hf_tokenizer import metadata_from_tokenizer_json, tokenizer_json
from engine.loader import load_file
from engine.model import load_model
from engine.model_io import Ternary, architecture_metadata, is_matrix, read_weights, write_model
from engine.safetensors_reader import SafetensorsError, read_safetensors
from engine.tokenizer_data import tokenizer_metadata
from tests.test_model_io import SHAPE, random_weights

safetensors_numpy = pytest.importorskip("safetensors.numpy", reason="the test extra installs safetensors")
GGUF_PART = {part: hf for hf, part in LAYER_NAMES.items()}


def pack_rows(values: np.ndarray) -> np.ndarray:
    """The packed layout: row r + k * rows/4 in bit pair k of packed row r."""
    quarter = values.shape[0] // 4
    codes = (values + 1).astype(np.uint8)
    packed = np.zeros((quarter, values.shape[1]), np.uint8)
    for k in range(4):
        packed |= codes[k * quarter : (k + 1) * quarter] << np.uint8(2 * k)
    return packed


def hf_config(act: str = "relu2", quant: dict | None = None, **extra: object) -> dict[str, object]:
    meta = tokenizer_metadata(SHAPE.vocab_size)
    cfg = {
        "architectures": ["BitNetForCausalLM"],
        "model_type": "bitnet",
        "hidden_act": act,
        "hidden_size": SHAPE.hidden,
        "intermediate_size": SHAPE.ffn,
        "num_hidden_layers": SHAPE.n_layers,
        "num_attention_heads": SHAPE.n_heads,
        "num_key_value_heads": SHAPE.n_kv_heads,
        "max_position_embeddings": SHAPE.context_length,
        "rms_norm_eps": SHAPE.rms_eps,
        "rope_theta": SHAPE.rope_theta,
        "vocab_size": SHAPE.vocab_size,
        "tie_word_embeddings": True,
        "bos_token_id": meta["tokenizer.ggml.bos_token_id"],
        "eos_token_id": meta["tokenizer.ggml.eos_token_id"],
    }
    if quant is not None:
        cfg["quantization_config"] = {"quant_method": "bitnet", **quant}
    cfg.update(extra)
    return cfg


def hf_tensors(weights: dict, form: str) -> dict[str, np.ndarray]:
    """GGUF-named weights as a Hugging Face state dict in one of the three matrix forms."""
    out = {}
    for name, weight in weights.items():
        if name == "token_embd.weight":
            out["model.embed_tokens.weight"] = weight.load()
        elif name == "output_norm.weight":
            out["model.norm.weight"] = weight.load()
        else:
            _, layer, part, _ = name.split(".")
            prefix = f"model.layers.{layer}.{GGUF_PART[part]}"
            if not is_matrix(name):
                out[f"{prefix}.weight"] = weight.load()
                continue
            values, scale = weight.load()
            if form == "packed":
                out[f"{prefix}.weight"] = pack_rows(values)
                out[f"{prefix}.weight_scale"] = np.array([1.0 / scale], np.float32)
            elif form == "multiplier":
                out[f"{prefix}.weight"] = values.astype(np.float32)
                out[f"{prefix}.weight_scale"] = np.array([scale], np.float32)
            else:
                out[f"{prefix}.weight"] = (values * np.float32(scale)).astype(np.float32)
    return out


def make_folder(path: Path, tensors: dict[str, np.ndarray], config: dict, shards: int = 1) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config))
    (path / "tokenizer.json").write_text(json.dumps(tokenizer_json(tokenizer_metadata(SHAPE.vocab_size))))
    names = sorted(tensors)
    if shards == 1:
        safetensors_numpy.save_file(tensors, str(path / "model.safetensors"))
        return path
    weight_map = {}
    for i in range(shards):
        part = {n: tensors[n] for n in names[i::shards]}
        file = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        safetensors_numpy.save_file(part, str(path / file))
        weight_map.update(dict.fromkeys(part, file))
    (path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return path


def power_of_two_weights() -> dict:
    """Random weights whose scales are powers of two, so 1 / (1 / scale) is exact in float32."""
    weights = random_weights(3)
    for name, weight in list(weights.items()):
        if isinstance(weight, Ternary):
            values, scale = weight.load()
            weights[name] = Ternary.of(values, 2.0 ** np.round(np.log2(scale)))
    return weights


def direct_gguf(tmp_path: Path, weights: dict, arch: str, name: str) -> Path:
    meta = architecture_metadata(arch, SHAPE, FORMAT_I2S, name)
    meta.update(tokenizer_metadata(SHAPE.vocab_size))
    return write_model(tmp_path / "direct.gguf", meta, weights, SHAPE.n_layers, FORMAT_I2S)


@pytest.mark.parametrize("shards", [1, 3])
def test_packed_folder_converts_to_the_same_bytes_as_writing_directly(tmp_path: Path, shards: int) -> None:
    weights = power_of_two_weights()
    folder = make_folder(
        tmp_path / "ckpt",
        hf_tensors(weights, "packed"),
        hf_config(quant={"linear_class": "bitlinear"}),
        shards,
    )
    out = convert_checkpoint(folder, tmp_path / "converted.gguf")
    assert out.read_bytes() == direct_gguf(tmp_path, weights, ARCH_BITNET_B158, "ckpt").read_bytes()


def test_autobitlinear_offline_scale_multiplies(tmp_path: Path) -> None:
    weights = random_weights(4)
    quant = {"linear_class": "autobitlinear", "quantization_mode": "offline"}
    folder = make_folder(tmp_path / "ckpt", hf_tensors(weights, "multiplier"), hf_config("silu", quant))
    model = load_file(convert_checkpoint(folder, tmp_path / "c.gguf", FORMAT_TQ2_0))
    assert model.config.arch == ARCH_BITNET and model.config.weight_format == FORMAT_TQ2_0
    values, scale = read_weights(model)["blk.0.ffn_down.weight"].load()
    want_values, want_scale = weights["blk.0.ffn_down.weight"].load()
    assert np.array_equal(values, want_values) and scale == pytest.approx(want_scale, rel=2**-11)


def test_master_weights_are_absmean_quantized(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    weights = random_weights(5)
    tensors = hf_tensors(weights, "master")
    master = rng.standard_normal((SHAPE.hidden, SHAPE.hidden)).astype(np.float32) * 0.02
    tensors["model.layers.0.self_attn.q_proj.weight"] = master
    folder = make_folder(tmp_path / "ckpt", tensors, hf_config())
    model = load_file(convert_checkpoint(folder, tmp_path / "c.gguf"))
    values, scale = read_weights(model)["blk.0.attn_q.weight"].load()
    want_values, want_scale = absmean_ternary(master)
    assert scale == pytest.approx(float(np.abs(master).mean()), rel=1e-6)
    assert np.array_equal(values, want_values) and scale == np.float32(want_scale)
    assert set(np.unique(values)) == {-1, 0, 1}


def test_converted_model_runs_and_its_vocabulary_round_trips(tmp_path: Path) -> None:
    weights = power_of_two_weights()
    folder = make_folder(tmp_path / "ckpt", hf_tensors(weights, "packed"), hf_config(quant={}))
    out = convert_checkpoint(folder, tmp_path / "c.gguf")
    meta = read_gguf(out).metadata
    want = tokenizer_metadata(SHAPE.vocab_size)
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id"):
        assert meta[key] == want[key], key
    assert "tokenizer.ggml.pre" not in meta  # the official file's key set
    model = load_model(out)
    assert model.tokenizer.encode("def f(x): return x", add_bos=False)
    model.decode(model.tokenizer.bos_id)


def test_the_cached_conversion_is_reused_and_redone_when_the_folder_changes(tmp_path: Path) -> None:
    weights = random_weights(6)
    folder = make_folder(tmp_path / "ckpt", hf_tensors(weights, "packed"), hf_config(quant={}))
    assert is_checkpoint_folder(folder) and not is_checkpoint_folder(tmp_path)
    first = ensure_converted(folder, tmp_path / "cache")
    assert ensure_converted(folder, tmp_path / "cache") == first
    (folder / "config.json").write_text(json.dumps(hf_config("silu", quant={})))
    second = ensure_converted(folder, tmp_path / "cache")
    assert second != first and load_file(second).config.arch == ARCH_BITNET


def test_unpack_rows_reads_bit_pairs_as_row_quarters() -> None:
    packed = np.array([[0b10_01_00_10]], np.uint8)  # pairs from low bits: 2, 0, 1, 2 -> +1, -1, 0, +1
    assert unpack_rows(packed).reshape(-1).tolist() == [1, -1, 0, 1]
    with pytest.raises(EngineError, match="code 3"):
        unpack_rows(np.array([[0b11]], np.uint8))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model_type": "llama"}, "model_type is 'llama'"),
        ({"hidden_act": "gelu"}, "hidden_act 'gelu'"),
        ({"rope_scaling": {"type": "linear", "factor": 2.0}}, "RoPE scaling"),
        ({"head_dim": 32}, "head_dim"),
        ({"quantization_config": {"quant_method": "gptq"}}, "'gptq' is not BitNet"),
        ({"num_hidden_layers": "two"}, "num_hidden_layers"),
    ],
)
def test_unsupported_configs_are_refused_in_one_line(tmp_path: Path, change: dict, message: str) -> None:
    folder = make_folder(tmp_path / "ckpt", hf_tensors(random_weights(), "master"), {**hf_config(), **change})
    with pytest.raises(EngineError, match=message):
        convert_checkpoint(folder, tmp_path / "c.gguf")
    assert not (tmp_path / "c.gguf").exists()


def test_missing_and_mismatched_tensors_are_named(tmp_path: Path) -> None:
    tensors = hf_tensors(random_weights(), "packed")
    del tensors["model.layers.0.mlp.up_proj.weight_scale"]
    folder = make_folder(tmp_path / "a", tensors, hf_config(quant={}))
    with pytest.raises(EngineError, match="up_proj.weight_scale is missing"):
        convert_checkpoint(folder, tmp_path / "a.gguf")
    tensors = hf_tensors(random_weights(), "master")
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"] + 1
    folder = make_folder(tmp_path / "b", tensors, hf_config())
    with pytest.raises(EngineError, match="lm_head.weight differs"):
        convert_checkpoint(folder, tmp_path / "b.gguf")


def test_folders_without_the_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="no config.json"):
        read_checkpoint(tmp_path)
    folder = make_folder(tmp_path / "ckpt", hf_tensors(random_weights(), "master"), hf_config())
    (folder / "model.safetensors").unlink()
    with pytest.raises(EngineError, match="no model.safetensors"):
        read_checkpoint(folder)


def test_tokenizers_other_than_llama3_byte_level_are_refused() -> None:
    doc = tokenizer_json(tokenizer_metadata(SHAPE.vocab_size))
    gpt2 = json.loads(json.dumps(doc))
    gpt2["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}
    with pytest.raises(EngineError, match="LLaMA-3's pre-tokenizer"):
        metadata_from_tokenizer_json(gpt2, SHAPE.vocab_size, 0, 1)
    spm = json.loads(json.dumps(doc))
    spm["model"]["byte_fallback"] = True
    with pytest.raises(EngineError, match="SentencePiece"):
        metadata_from_tokenizer_json(spm, SHAPE.vocab_size, 0, 1)


def test_tokens_a_tokenizer_json_leaves_out_become_placeholders() -> None:
    doc = tokenizer_json(tokenizer_metadata(SHAPE.vocab_size))
    meta = metadata_from_tokenizer_json(doc, SHAPE.vocab_size + 3, 0, 1)
    assert meta["tokenizer.ggml.tokens"][-3:] == [f"[PAD{SHAPE.vocab_size + i}]" for i in range(3)]


def test_malformed_safetensors_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"\x05")
    with pytest.raises(SafetensorsError, match="too short"):
        read_safetensors(path)
    path.write_bytes((1 << 40).to_bytes(8, "little") + b"{}")
    with pytest.raises(SafetensorsError, match="header length"):
        read_safetensors(path)
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}).encode()
    path.write_bytes(len(header).to_bytes(8, "little") + header + bytes(8))
    with pytest.raises(SafetensorsError, match="needs 16 bytes"):
        read_safetensors(path)


def test_model_convert_command_and_run_on_a_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.cli import app
    from tests.archive_factory import invoke

    monkeypatch.setenv("BITNET_HARNESS_CACHE", str(tmp_path / "cache"))
    folder = make_folder(tmp_path / "ckpt", hf_tensors(random_weights(7), "packed"), hf_config(quant={}))
    outcome = invoke(app, ["model", "convert", folder, "--out", tmp_path / "c.gguf", "--format", "tq1_0"])
    assert outcome.code == 0 and "wrote" in outcome.stdout, outcome.stderr
    assert load_file(tmp_path / "c.gguf").config.weight_format == "tq1_0"
    bad = invoke(app, ["model", "convert", tmp_path / "nowhere", "--out", tmp_path / "x.gguf"])
    assert bad.code == 2 and "is not a folder" in bad.stderr and not (tmp_path / "x.gguf").exists()
    refused = invoke(app, ["model", "convert", folder, "--out", tmp_path / "q.gguf", "--format", "qk256"])
    assert refused.code == 2 and "qk256" in refused.stderr
    ran = invoke(app, ["run", "--model", folder, "-n", "3", "--kernel", "i2s"])
    assert ran.code == 0 and "prefill 13 tok" in ran.stdout, ran.stderr
    assert len(list((tmp_path / "cache" / "models").glob("hf-ckpt-*.gguf"))) == 1
