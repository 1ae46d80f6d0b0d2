"""Model hyper-parameters from GGUF metadata, for both the `bitnet-b1.58` and the `bitnet` architectures."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from engine.constants import (
    ARCH_BITNET,
    ARCH_BITNET_B158,
    ARCHITECTURES,
    FORMAT_FILE_TYPE,
    GGUF_DEFAULT_ALIGNMENT,
    GGMLType,
)
from engine.errors import UnsupportedModelError
from engine.flavor import TERNARY_FLAVORS, tensor_flavors

FFN_ACT = {ARCH_BITNET_B158: "relu2", ARCH_BITNET: "silu"}
DEFAULT_ROPE_THETA = 10000.0
DEFAULT_RMS_EPS = 1e-5


class TensorLike(Protocol):
    ggml_type: int
    shape: tuple[int, ...]
    nbytes: int


@dataclass(frozen=True)
class ModelConfig:
    """Everything the forward pass needs to size its buffers and pick its activation."""

    arch: str
    n_layers: int
    hidden: int
    ffn: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    vocab_size: int
    context_length: int
    rope_theta: float
    rms_eps: float
    ffn_act: str
    weight_format: str
    file_type: int

    @classmethod
    def from_metadata(
        cls, metadata: Mapping[str, object], tensors: Mapping[str, TensorLike], alignment: int | None = None
    ) -> ModelConfig:
        """Read the architecture's keys; raise UnsupportedModelError naming the first missing or bad key."""
        arch = metadata.get("general.architecture")
        if not isinstance(arch, str):
            raise UnsupportedModelError("missing metadata key 'general.architecture'")
        if arch not in ARCHITECTURES:
            raise UnsupportedModelError(
                f"unsupported architecture {arch!r} (general.architecture); "
                f"supported: {', '.join(ARCHITECTURES)}"
            )
        reader = _Keys(metadata, arch)
        n_layers = reader.positive_int("block_count")
        hidden = reader.positive_int("embedding_length")
        ffn = reader.positive_int("feed_forward_length")
        n_heads = reader.positive_int("attention.head_count")
        n_kv_heads = reader.positive_int("attention.head_count_kv", default=n_heads)
        context_length = reader.positive_int("context_length")
        rope_theta = reader.positive_float("rope.freq_base", DEFAULT_ROPE_THETA)
        rms_eps = reader.positive_float("attention.layer_norm_rms_epsilon", DEFAULT_RMS_EPS)
        if hidden % n_heads:
            raise UnsupportedModelError(
                f"{reader.key('embedding_length')} = {hidden} is not a multiple of "
                f"{reader.key('attention.head_count')} = {n_heads}"
            )
        head_dim = hidden // n_heads
        if head_dim % 2:
            raise UnsupportedModelError(f"head dimension {head_dim} is odd; rotary embeddings need it even")
        _check_rope_dims(reader, head_dim)
        if n_heads % n_kv_heads:
            raise UnsupportedModelError(
                f"{reader.key('attention.head_count')} = {n_heads} is not a multiple of "
                f"{reader.key('attention.head_count_kv')} = {n_kv_heads}"
            )
        vocab_size = _vocab_size(reader, tensors)
        weight_format = _weight_format(tensors, _alignment(metadata, alignment))
        file_type = metadata.get("general.file_type", int(FORMAT_FILE_TYPE[weight_format]))
        if not isinstance(file_type, int) or isinstance(file_type, bool):
            raise UnsupportedModelError(f"metadata key 'general.file_type' is {file_type!r}, not an integer")
        return cls(
            arch=arch,
            n_layers=n_layers,
            hidden=hidden,
            ffn=ffn,
            n_heads=n_heads,
            n_kv_heads=n_kv_heads,
            head_dim=head_dim,
            vocab_size=vocab_size,
            context_length=context_length,
            rope_theta=rope_theta,
            rms_eps=rms_eps,
            ffn_act=FFN_ACT[arch],
            weight_format=weight_format,
            file_type=file_type,
        )


class _Keys:
    """Typed access to `<arch>.<name>` keys with error messages that name the full key."""

    def __init__(self, metadata: Mapping[str, object], arch: str) -> None:
        self.metadata = metadata
        self.arch = arch

    def key(self, name: str) -> str:
        return f"{self.arch}.{name}"

    def positive_int(self, name: str, default: int | None = None) -> int:
        key = self.key(name)
        value = self.metadata.get(key, default)
        if value is None:
            raise UnsupportedModelError(f"missing metadata key {key!r}")
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UnsupportedModelError(f"metadata key {key!r} is {value!r}, not a positive integer")
        return value

    def positive_float(self, name: str, default: float) -> float:
        key = self.key(name)
        value = self.metadata.get(key, default)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < float("inf"):
            raise UnsupportedModelError(f"metadata key {key!r} is {value!r}, not a positive number")
        return float(value)


def _check_rope_dims(reader: _Keys, head_dim: int) -> None:
    """`rope.dimension_count` must rotate the whole head: the kernels have no partial-rotary form.

    llama.cpp (NeoX order, as both architectures use) rotates only the first n_rot values of each head, as
    pairs (i, i + n_rot/2) at frequency theta^(-2i/n_rot), and copies the rest; rotating all head_dim values
    instead would be a different model, so a smaller count is refused rather than ignored.
    """
    n_rot = reader.positive_int("rope.dimension_count", default=head_dim)
    if n_rot > head_dim or n_rot % 2:
        raise UnsupportedModelError(
            f"{reader.key('rope.dimension_count')} = {n_rot} does not fit the head dimension {head_dim} "
            "(it must be even and at most the head dimension)"
        )
    if n_rot < head_dim:
        raise UnsupportedModelError(
            f"{reader.key('rope.dimension_count')} = {n_rot} is below the head dimension {head_dim}: partial "
            "rotary embeddings (only the first n_rot values of each head rotated) are not supported"
        )


def _vocab_size(reader: _Keys, tensors: Mapping[str, TensorLike]) -> int:
    tokens = reader.metadata.get("tokenizer.ggml.tokens")
    n_tokens = len(tokens) if isinstance(tokens, list) else None
    embd = tensors.get("token_embd.weight")
    embd_rows = embd.shape[0] if embd is not None and len(embd.shape) == 2 else None
    if reader.key("vocab_size") in reader.metadata:
        vocab_size = reader.positive_int("vocab_size")
    elif n_tokens:
        vocab_size = n_tokens
    elif embd_rows:
        vocab_size = embd_rows
    else:
        raise UnsupportedModelError(
            f"cannot tell the vocabulary size: no {reader.key('vocab_size')!r}, no 'tokenizer.ggml.tokens', "
            "no 2-D token_embd.weight"
        )
    if n_tokens is not None and n_tokens > vocab_size:
        raise UnsupportedModelError(
            f"'tokenizer.ggml.tokens' has {n_tokens} tokens but the vocabulary size is {vocab_size}"
        )
    if embd_rows is not None and embd_rows != vocab_size:
        raise UnsupportedModelError(
            f"token_embd.weight has {embd_rows} rows but the vocabulary size is {vocab_size}"
        )
    return vocab_size


def _alignment(metadata: Mapping[str, object], alignment: int | None) -> int:
    if alignment is not None:
        return alignment
    value = metadata.get("general.alignment", GGUF_DEFAULT_ALIGNMENT)
    return value if isinstance(value, int) and value > 0 else GGUF_DEFAULT_ALIGNMENT


def _weight_format(tensors: Mapping[str, TensorLike], alignment: int) -> str:
    ternary = {int(GGMLType.I2_S), int(GGMLType.TQ1_0), int(GGMLType.TQ2_0)}
    flavors = tensor_flavors(
        {name: (t.ggml_type, t.shape, t.nbytes) for name, t in tensors.items() if t.ggml_type in ternary},
        alignment,
    )
    found = sorted({flavor for flavor in flavors.values() if flavor in TERNARY_FLAVORS})
    if not found:
        raise UnsupportedModelError("the file holds no ternary weight tensors (GGUF types 34, 35 or 36)")
    if len(found) > 1:
        raise UnsupportedModelError(
            f"the file mixes ternary weight formats {', '.join(found)}; one is supported"
        )
    return found[0]
