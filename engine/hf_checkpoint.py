"""Hugging Face BitNet checkpoints (a local folder) converted to the GGUF file the engine and bitnet.cpp read.

A folder holds config.json (`model_type: bitnet`), tokenizer.json and safetensors (one file, or shards
listed in model.safetensors.index.json). Its matrices come in one of three forms:
- packed (`quantization_config: {quant_method: bitnet, linear_class: bitlinear}`, as in
  microsoft/bitnet-b1.58-2B-4T): uint8 [rows/4, cols], packed row r holding rows r, r + rows/4, r + 2 rows/4,
  r + 3 rows/4 in its bit pairs 0-1, 2-3, 4-5, 6-7 (code - 1 = value), and a `weight_scale` that DIVIDES the
  output: scale = 1 / weight_scale;
- `linear_class: autobitlinear` offline: ternary values (packed as above, or as floats) and a `weight_scale`
  that MULTIPLIES the output: scale = weight_scale;
- float master weights (no quantization config, e.g. the -bf16 variant, or autobitlinear online): quantized
  as transformers' AutoBitLinear and bitnet.cpp's converter do, absmean per tensor: scale = mean|W|,
  values = round(W / scale) clipped to {-1, 0, 1}.
Names map to the GGUF tensor names (model.layers.N.self_attn.q_proj -> blk.N.attn_q, input_layernorm ->
attn_norm, post_attention_layernorm -> ffn_norm, ...). `hidden_act` picks the architecture: relu2 ->
`bitnet-b1.58`, silu -> `bitnet`. The metadata is the official file's key set (no `tokenizer.ggml.pre`).
Both RoPE layouts already agree (Hugging Face's rotate_half is the GGUF architectures' NeoX style), so Q and K
are not permuted.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.constants import ARCH_BITNET, ARCH_BITNET_B158, FORMAT_I2S, LAYER_MATRICES, layer_norm_sizes
from engine.errors import UnsupportedModelError
from engine.hf_tokenizer import metadata_from_tokenizer_json
from engine.model_io import (
    Floats,
    ProgressFn,
    Ternary,
    architecture_metadata,
    check_ternary_format,
    write_model,
)
from engine.presets import Preset
from engine.safetensors_reader import SafeTensor, read_safetensors

CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
ACTIVATION_ARCH = {"relu2": ARCH_BITNET_B158, "silu": ARCH_BITNET}
VALUES_PER_BYTE = 4
ABSMEAN_FLOOR = 1e-5  # the clamp transformers and bitnet.cpp put under mean|W|
# Bump when the converted bytes change, so cached conversions are rewritten.
CONVERT_VERSION = 1

# Hugging Face module path (after `model.layers.N.`) -> GGUF tensor part.
LAYER_NAMES = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "self_attn.attn_sub_norm": "attn_sub_norm",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "mlp.ffn_sub_norm": "ffn_sub_norm",
}

# How a checkpoint stores its matrices.
PACKED_DIVISOR = "packed, weight_scale divides (BitLinear)"
TERNARY_MULTIPLIER = "ternary, weight_scale multiplies (AutoBitLinear offline)"
MASTER = "float master weights, absmean-quantized here"


@dataclass(frozen=True)
class Checkpoint:
    """A Hugging Face BitNet folder, read: its architecture, shape, storage form and tensors."""

    folder: Path
    arch: str
    shape: Preset
    storage: str
    bos_id: int
    eos_id: int
    tokenizer: dict[str, Any]
    tensors: dict[str, SafeTensor]


def _json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UnsupportedModelError(f"{path.parent} is not a Hugging Face model folder: no {path.name}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UnsupportedModelError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise UnsupportedModelError(f"{path} is not a JSON object")
    return doc


def _int(cfg: dict[str, Any], key: str, default: int | None = None) -> int:
    value = cfg.get(key, default)
    if isinstance(value, list) and value:  # eos_token_id may be a list: the first is the model's own
        value = value[0]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise UnsupportedModelError(f"config.json: {key} is {value!r}, not a non-negative integer")
    return value


def _rope_theta(cfg: dict[str, Any]) -> float:
    params = cfg.get("rope_parameters") or {}
    scaling = cfg.get("rope_scaling") or {}
    kind = params.get("rope_type", "default") if isinstance(params, dict) else "default"
    if scaling or kind != "default":
        raise UnsupportedModelError(f"config.json: RoPE scaling ({scaling or kind!r}) is not supported")
    theta = cfg.get("rope_theta", params.get("rope_theta") if isinstance(params, dict) else None)
    if not isinstance(theta, (int, float)) or isinstance(theta, bool) or not theta > 0:
        raise UnsupportedModelError(f"config.json: rope_theta is {theta!r}, not a positive number")
    return float(theta)


def _storage(cfg: dict[str, Any]) -> str:
    quant = cfg.get("quantization_config")
    if not quant:
        return MASTER
    if not isinstance(quant, dict) or quant.get("quant_method") != "bitnet":
        method = quant.get("quant_method") if isinstance(quant, dict) else quant
        raise UnsupportedModelError(f"config.json: quantization method {method!r} is not BitNet's")
    linear = quant.get("linear_class", "bitlinear")
    mode = quant.get("quantization_mode", "offline")
    if linear == "bitlinear" and mode == "offline":
        return PACKED_DIVISOR
    if linear == "autobitlinear":
        return TERNARY_MULTIPLIER if mode == "offline" else MASTER
    raise UnsupportedModelError(f"config.json: BitNet quantization {linear!r} / {mode!r} is not supported")


def _shape(cfg: dict[str, Any], name: str) -> Preset:
    hidden = _int(cfg, "hidden_size")
    n_heads = _int(cfg, "num_attention_heads")
    if n_heads == 0 or hidden % n_heads:
        raise UnsupportedModelError(f"config.json: hidden_size {hidden} is not a multiple of {n_heads} heads")
    head_dim = cfg.get("head_dim") or hidden // n_heads
    if head_dim != hidden // n_heads:
        raise UnsupportedModelError(f"config.json: head_dim {head_dim} differs from hidden_size / heads")
    eps = cfg.get("rms_norm_eps", 1e-5)
    if not isinstance(eps, (int, float)) or not eps > 0:
        raise UnsupportedModelError(f"config.json: rms_norm_eps is {eps!r}, not a positive number")
    return Preset(
        name=name,
        n_layers=_int(cfg, "num_hidden_layers"),
        hidden=hidden,
        ffn=_int(cfg, "intermediate_size"),
        n_heads=n_heads,
        n_kv_heads=_int(cfg, "num_key_value_heads", n_heads),
        vocab_size=_int(cfg, "vocab_size"),
        context_length=_int(cfg, "max_position_embeddings"),
        rope_theta=_rope_theta(cfg),
        rms_eps=float(eps),
    )


def _tensors(folder: Path) -> dict[str, SafeTensor]:
    index = folder / INDEX_FILE
    if index.is_file():
        weight_map = _json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise UnsupportedModelError(f"{index} has no weight_map")
        files = sorted(set(weight_map.values()))
    elif (folder / SINGLE_FILE).is_file():
        files = [SINGLE_FILE]
    else:
        raise UnsupportedModelError(f"{folder} holds no {SINGLE_FILE} and no {INDEX_FILE}")
    tensors: dict[str, SafeTensor] = {}
    for name in files:
        path = folder / name
        if not path.is_file():
            raise UnsupportedModelError(f"{folder}: the shard {name} listed in {INDEX_FILE} is missing")
        tensors.update(read_safetensors(path))
    return tensors


def read_checkpoint(folder: str | os.PathLike[str]) -> Checkpoint:
    """Read config.json, tokenizer.json and the safetensors headers; one-line errors for the unsupported."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UnsupportedModelError(f"{folder} is not a folder")
    cfg = _json(folder / CONFIG_FILE)
    if cfg.get("model_type") != "bitnet":
        kind = cfg.get("model_type")
        raise UnsupportedModelError(f"{folder}: config.json model_type is {kind!r}, not 'bitnet'")
    act = cfg.get("hidden_act", "relu2")
    if act not in ACTIVATION_ARCH:
        raise UnsupportedModelError(
            f"config.json: hidden_act {act!r} is not {' or '.join(ACTIVATION_ARCH)}, the GGUF architectures'"
        )
    shape = _shape(cfg, folder.name)
    return Checkpoint(
        folder=folder,
        arch=ACTIVATION_ARCH[act],
        shape=shape,
        storage=_storage(cfg),
        bos_id=_int(cfg, "bos_token_id"),
        eos_id=_int(cfg, "eos_token_id"),
        tokenizer=_json(folder / TOKENIZER_FILE),
        tensors=_tensors(folder),
    )


def unpack_rows(packed: np.ndarray) -> np.ndarray:
    """uint8 [rows/4, cols] -> int8 [rows, cols]: bit pair k of packed row r is row r + k * rows/4."""
    codes = np.stack([(packed >> np.uint8(2 * k)) & np.uint8(3) for k in range(VALUES_PER_BYTE)])
    if codes.size and int(codes.max()) > 2:
        raise UnsupportedModelError("a packed BitNet matrix holds the 2-bit code 3, which means no value")
    return (codes.astype(np.int8) - np.int8(1)).reshape(-1, packed.shape[1])


def absmean_ternary(w: np.ndarray) -> tuple[np.ndarray, float]:
    """AutoBitLinear's weight quantization: scale = max(mean|W|, 1e-5), values round(W / scale) in -1..1."""
    w = np.asarray(w, np.float32)
    scale = np.float32(max(float(np.abs(w, dtype=np.float64).mean()), ABSMEAN_FLOOR))
    return np.clip(np.rint(w / scale), -1, 1).astype(np.int8), float(scale)


def _matrix(ckpt: Checkpoint, hf: str, rows: int, cols: int) -> Ternary:
    weight = ckpt.tensors.get(f"{hf}.weight")
    if weight is None:
        raise UnsupportedModelError(f"{ckpt.folder}: tensor {hf}.weight is missing")
    if ckpt.storage == MASTER:
        if weight.shape != (rows, cols):
            raise UnsupportedModelError(f"{hf}.weight has shape {weight.shape}, expected {(rows, cols)}")
        return Ternary((rows, cols), lambda: absmean_ternary(weight.floats()))
    scale_tensor = ckpt.tensors.get(f"{hf}.weight_scale")
    if scale_tensor is None:
        raise UnsupportedModelError(f"{ckpt.folder}: tensor {hf}.weight_scale is missing ({ckpt.storage})")
    packed = weight.shape == (rows // VALUES_PER_BYTE, cols) and weight.dtype == "U8"
    if not packed and weight.shape != (rows, cols):
        raise UnsupportedModelError(
            f"{hf}.weight has shape {weight.shape}: neither packed {(rows // 4, cols)} nor {(rows, cols)}"
        )

    def load() -> tuple[np.ndarray, float]:
        values = unpack_rows(weight.array()) if packed else weight.floats()
        given = float(scale_tensor.floats().reshape(-1)[0])
        if not np.isfinite(given) or given <= 0:
            raise UnsupportedModelError(f"{hf}.weight_scale is {given!r}, not a positive finite number")
        return values, (1.0 / given if ckpt.storage == PACKED_DIVISOR else given)

    return Ternary((rows, cols), load)


def _floats(ckpt: Checkpoint, hf: str, shape: tuple[int, ...]) -> Floats:
    tensor = ckpt.tensors.get(hf)
    if tensor is None:
        raise UnsupportedModelError(f"{ckpt.folder}: tensor {hf} is missing")
    if tensor.shape != shape:
        raise UnsupportedModelError(f"{hf} has shape {tensor.shape}, expected {shape}")
    return Floats(shape, tensor.floats)


def _check_tied(ckpt: Checkpoint) -> None:
    head = ckpt.tensors.get("lm_head.weight")
    if head is None:
        return
    embedding = ckpt.tensors["model.embed_tokens.weight"]
    if head.shape != embedding.shape or not np.array_equal(head.raw, embedding.raw):
        raise UnsupportedModelError(
            f"{ckpt.folder}: lm_head.weight differs from the embedding; the GGUF architectures tie the two"
        )


def checkpoint_weights(ckpt: Checkpoint) -> dict[str, Ternary | Floats]:
    """GGUF tensor name -> weight, every tensor loaded only when written."""
    p = ckpt.shape
    _check_tied(ckpt)
    matrix_shapes = p.matrix_shapes()
    norm_sizes = layer_norm_sizes(p.hidden, p.ffn)
    out: dict[str, Ternary | Floats] = {
        "token_embd.weight": _floats(ckpt, "model.embed_tokens.weight", (p.vocab_size, p.hidden)),
        "output_norm.weight": _floats(ckpt, "model.norm.weight", (p.hidden,)),
    }
    for layer in range(p.n_layers):
        for hf, part in LAYER_NAMES.items():
            name, source = f"blk.{layer}.{part}.weight", f"model.layers.{layer}.{hf}"
            if part in LAYER_MATRICES:
                out[name] = _matrix(ckpt, source, *matrix_shapes[part])
            else:
                out[name] = _floats(ckpt, f"{source}.weight", (norm_sizes[part],))
    return out


def checkpoint_metadata(ckpt: Checkpoint, fmt: str) -> dict[str, object]:
    """The official key set: architecture keys and the tokenizer's."""
    meta = architecture_metadata(ckpt.arch, ckpt.shape, fmt, ckpt.folder.name)
    meta.update(metadata_from_tokenizer_json(ckpt.tokenizer, ckpt.shape.vocab_size, ckpt.bos_id, ckpt.eos_id))
    return meta


def convert_checkpoint(
    folder: str | os.PathLike[str],
    out: str | os.PathLike[str],
    fmt: str = FORMAT_I2S,
    progress: ProgressFn | None = None,
) -> Path:
    """Write the GGUF file of a Hugging Face BitNet folder in weight format `fmt` (atomically)."""
    check_ternary_format(fmt)
    ckpt = read_checkpoint(folder)
    weights = checkpoint_weights(ckpt)
    return write_model(Path(out), checkpoint_metadata(ckpt, fmt), weights, ckpt.shape.n_layers, fmt, progress)


def folder_digest(folder: Path) -> str:
    """What identifies a folder's contents cheaply: every file's name, size and modification time."""
    h = hashlib.sha256(f"convert v{CONVERT_VERSION}".encode())
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        stat = path.stat()
        h.update(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return h.hexdigest()


def ensure_converted(folder: str | os.PathLike[str], cache_dir: Path, fmt: str = FORMAT_I2S) -> Path:
    """The cached GGUF conversion of a folder, written once (and again when the folder's files change)."""
    folder = Path(folder).resolve()
    path = Path(cache_dir) / f"hf-{folder.name}-{folder_digest(folder)[:16]}-{fmt}.gguf"
    if path.is_file():
        return path
    return convert_checkpoint(folder, path, fmt)


def is_checkpoint_folder(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is a folder holding a config.json (so `--model` means a Hugging Face checkpoint)."""
    return Path(path).is_dir() and (Path(path) / CONFIG_FILE).is_file()
