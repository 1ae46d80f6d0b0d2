"""A model's weights read from a validated file into the arrays and layouts the forward pass runs on.

Ternary matrices go into the layout of the kernel family chosen for their shape (`kernel_choice`); norms
become float32 vectors; the tied embedding stays memory-mapped as stored (F16/BF16 bits or F32) and, for int8
logits, gets a per-row int8 copy. Every tensor is checked against the config before the model is built.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from engine import kernel_choice
from engine.constants import LAYER_MATRICES, GGMLType, layer_norm_sizes
from engine.errors import UnsupportedModelError
from engine.kernels import TernaryMatrix, prepare_matrix
from engine.kernels.actquant_blocks import BlockMatrix, block_matrix
from engine.kernels.ops import bf16_lut, half_lut, quantize_embedding_rows
from engine.loader import ModelFile
from engine.pages import release_mapped_pages

_EMBED_CHUNK_BYTES = 32 << 20


@dataclass(frozen=True)
class Projection:
    """One matrix of a layer: its kernel layout, its output scale and, in block256 mode, its int8 values."""

    matrix: TernaryMatrix
    scale: float  # the optional `.scale` tensor multiplying the output (bitnet arch); 1.0 when absent
    blocks: BlockMatrix | None = None  # act_quant="block256" only: int8 values and per-256 weight scales


@dataclass(frozen=True)
class Layer:
    """The weights of one transformer block, named as in the file (`blk.N.<name>.weight`)."""

    attn_norm: np.ndarray  # float32 [hidden]
    attn_q: Projection  # [n_heads * head_dim, hidden]
    attn_k: Projection  # [n_kv_heads * head_dim, hidden]
    attn_v: Projection  # [n_kv_heads * head_dim, hidden]
    attn_sub_norm: np.ndarray  # float32 [hidden]
    attn_output: Projection  # [hidden, n_heads * head_dim]
    ffn_norm: np.ndarray  # float32 [hidden]
    ffn_gate: Projection  # [ffn, hidden]
    ffn_up: Projection  # [ffn, hidden]
    ffn_sub_norm: np.ndarray  # float32 [ffn]
    ffn_down: Projection  # [hidden, ffn]

    def projections(self) -> dict[str, Projection]:
        """Matrix name (LAYER_MATRICES) -> projection, in forward order."""
        return {name: getattr(self, name) for name in LAYER_MATRICES}


@dataclass(frozen=True)
class Int8Embedding:
    """Per-row absmax int8 copy of the tied embedding, for the int8 logits: row = values * scale."""

    values: np.ndarray  # int8 [vocab, hidden]
    scales: np.ndarray  # float32 [vocab]
    row_sums: np.ndarray  # int32 [vocab]: sum of each row's values (read by the VNNI logits kernel only)


@dataclass(frozen=True)
class Weights:
    layers: list[Layer]
    embedding: np.ndarray  # token_embd as stored, [vocab, hidden]: uint16 F16/BF16 bits or float32
    lut: np.ndarray  # float32 value of every 16-bit pattern of the embedding's type (F16 or BF16)
    output_norm: np.ndarray  # float32 [hidden]
    embedding_i8: Int8Embedding | None  # logits "int8" only


def select_kernels(
    mf: ModelFile, kernel: str | Mapping[tuple[int, int], str], retune: bool = False
) -> kernel_choice.Selection:
    """The kernel family per matrix shape: `kernel` for all, timed on a real matrix per shape ("auto";
    `retune` ignores the cached verdicts and replaces them), or given per (rows, cols)."""
    samples = {}
    for name in LAYER_MATRICES:
        for i in range(mf.config.n_layers):
            tname = f"blk.{i}.{name}.weight"
            t = mf.tensor(tname)
            samples.setdefault((mf.flavor(tname), *t.shape), t.data)
    if isinstance(kernel, Mapping):
        return kernel_choice.per_shape(samples, kernel)
    if kernel == "auto":
        return kernel_choice.choose(samples, retune=retune)
    return kernel_choice.fixed(samples, kernel)


def load_weights(
    mf: ModelFile, selection: kernel_choice.Selection, int8_logits: bool, block256: bool
) -> Weights:
    """Every weight of the model, matrices in the layouts `selection` names (and block256's int8 copies)."""
    cfg = mf.config
    layers = [_load_layer(mf, i, selection, block256) for i in range(cfg.n_layers)]
    embedding = _embedding_view(mf)
    bf16 = mf.tensor("token_embd.weight").ggml_type == GGMLType.BF16
    lut = bf16_lut() if bf16 else half_lut()
    output_norm = _norm(mf, "output_norm.weight", cfg.hidden)
    embedding_i8 = _int8_embedding(embedding, lut) if int8_logits else None
    return Weights(layers, embedding.view(np.ndarray), lut, output_norm, embedding_i8)


def _load_layer(mf: ModelFile, i: int, selection: kernel_choice.Selection, block256: bool) -> Layer:
    cfg = mf.config
    norms = {
        name: _norm(mf, f"blk.{i}.{name}.weight", size)
        for name, size in layer_norm_sizes(cfg.hidden, cfg.ffn).items()
    }
    projections = {}
    for name in LAYER_MATRICES:
        tname = f"blk.{i}.{name}.weight"
        t = mf.tensor(tname)
        flavor = mf.flavor(tname)
        rows, cols = t.shape
        matrix = prepare_matrix(flavor, t.data, rows, cols, selection.kernel_for(flavor, rows, cols))
        blocks = block_matrix(flavor, t.data, rows, cols) if block256 else None
        projections[name] = Projection(matrix, _scale(mf, f"blk.{i}.{name}.scale"), blocks)
    return Layer(**norms, **projections)


def _norm(mf: ModelFile, name: str, size: int) -> np.ndarray:
    values = np.ascontiguousarray(mf.float_array(name), dtype=np.float32).reshape(-1)
    if values.size != size:
        raise UnsupportedModelError(f"{name}: {values.size} values, expected {size}")
    return values


def _scale(mf: ModelFile, name: str) -> float:
    """The optional scalar `.scale` multiplying a matrix's output (bitnet arch); 1.0 when absent."""
    if name not in mf.gguf.tensors:
        return 1.0
    values = np.asarray(mf.float_array(name), dtype=np.float64).reshape(-1)
    if values.size != 1 or not math.isfinite(values[0]) or values[0] == 0:
        raise UnsupportedModelError(
            f"{name}: expected one finite non-zero scale ({values.size} value(s) found)"
        )
    return float(values[0])


def _embedding_view(mf: ModelFile) -> np.ndarray:
    """token_embd as stored: F16/BF16 bits (uint16) or F32, [vocab, hidden], still memory-mapped."""
    cfg = mf.config
    t = mf.tensor("token_embd.weight")
    if tuple(t.shape) != (cfg.vocab_size, cfg.hidden):
        raise UnsupportedModelError(
            f"token_embd.weight has shape {tuple(t.shape)}, expected ({cfg.vocab_size}, {cfg.hidden})"
        )
    n = cfg.vocab_size * cfg.hidden
    if t.ggml_type in (GGMLType.F16, GGMLType.BF16):
        return t.data[: 2 * n].view(np.uint16).reshape(cfg.vocab_size, cfg.hidden)
    if t.ggml_type == GGMLType.F32:
        return t.data[: 4 * n].view(np.float32).reshape(cfg.vocab_size, cfg.hidden)
    raise UnsupportedModelError(f"token_embd.weight: type {t.ggml_type} is not supported (F16, BF16 or F32)")


def _int8_embedding(embedding: np.ndarray, lut: np.ndarray) -> Int8Embedding:
    """The int8 copy built in chunks; the mapped source pages are released as we go."""
    vocab, hidden = embedding.shape
    emb = Int8Embedding(
        np.empty((vocab, hidden), np.int8), np.empty(vocab, np.float32), np.empty(vocab, np.int32)
    )
    step = max(1, _EMBED_CHUNK_BYTES // (hidden * embedding.itemsize))
    for r0 in range(0, vocab, step):
        r1 = min(vocab, r0 + step)
        quantize_embedding_rows(
            embedding[r0:r1], lut, emb.values[r0:r1], emb.scales[r0:r1], emb.row_sums[r0:r1]
        )
        release_mapped_pages(embedding[r0:r1])
    return emb
