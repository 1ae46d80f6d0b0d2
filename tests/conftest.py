"""Shared fixtures: `make_model` writes a small but complete model file in any weight format.

Tensor bytes are deterministic filler of each layout's exact size (the loader judges sizes, and of the
values only what type-36 tensors reveal: an I2_S tensor's scale is set to 1.0); `sizes` overrides a
tensor's byte count to build near misses and size errors.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from engine.constants import (
    ARCH_BITNET_B158,
    FORMAT_FILE_TYPE,
    FORMAT_GGML_TYPE,
    LAYER_MATRICES,
    GGMLType,
    layer_matrix_shapes,
    layer_norm_sizes,
)
from engine.flavor import expected_nbytes
from engine.gguf_writer import TensorSpec, write_gguf

TINY = {"n_layers": 1, "hidden": 256, "ffn": 512, "n_heads": 4, "n_kv_heads": 2, "vocab": 64, "context": 128}


def tiny_metadata(arch: str = ARCH_BITNET_B158, fmt: str = "i2s", **dims: int) -> dict[str, object]:
    """The architecture keys of a tiny model (no tokenizer: the loader does not need one)."""
    d = {**TINY, **dims}
    return {
        "general.architecture": arch,
        "general.name": "tiny test model",
        "general.file_type": int(FORMAT_FILE_TYPE[fmt]),
        f"{arch}.block_count": d["n_layers"],
        f"{arch}.embedding_length": d["hidden"],
        f"{arch}.feed_forward_length": d["ffn"],
        f"{arch}.attention.head_count": d["n_heads"],
        f"{arch}.attention.head_count_kv": d["n_kv_heads"],
        f"{arch}.context_length": d["context"],
        f"{arch}.vocab_size": d["vocab"],
        f"{arch}.rope.freq_base": 500000.0,
        f"{arch}.attention.layer_norm_rms_epsilon": 1e-5,
    }


def tiny_tensors(
    fmt: str = "i2s", scales: bool = False, **dims: int
) -> list[tuple[str, int, tuple[int, ...]]]:
    """(name, ggml_type, shape) of every tensor a tiny model needs, in the official file's order."""
    d = {**TINY, **dims}
    h, f, kv = d["hidden"], d["ffn"], d["hidden"] // d["n_heads"] * d["n_kv_heads"]
    out: list[tuple[str, int, tuple[int, ...]]] = [
        ("token_embd.weight", GGMLType.F16, (d["vocab"], h)),
        ("output_norm.weight", GGMLType.F32, (h,)),
    ]
    mats = layer_matrix_shapes(h, f, h, kv)
    norms = layer_norm_sizes(h, f)
    for layer in range(d["n_layers"]):
        for part in LAYER_MATRICES:
            out.append((f"blk.{layer}.{part}.weight", FORMAT_GGML_TYPE[fmt], mats[part]))
            if scales:
                out.append((f"blk.{layer}.{part}.scale", GGMLType.F32, (1,)))
        for part, size in norms.items():
            out.append((f"blk.{layer}.{part}.weight", GGMLType.F32, (size,)))
    return out


def _filler(nbytes: int, seed: int, scale_at: int | None = None) -> Callable[[], np.ndarray]:
    """Random bytes; an I2_S tensor (scale_at = n/4) gets scale 1.0 there when its size reaches it."""

    def fill() -> np.ndarray:
        data = np.random.default_rng(seed).integers(0, 256, nbytes, dtype=np.uint8)
        if scale_at is not None and nbytes >= scale_at + 4:
            data[scale_at : scale_at + 4] = np.frombuffer(np.float32(1.0).tobytes(), dtype=np.uint8)
        return data

    return fill


def _flavor_of(ggml_type: int, fmt: str) -> str:
    return {GGMLType.F32: "f32", GGMLType.F16: "f16", GGMLType.BF16: "bf16"}.get(ggml_type, fmt)


@pytest.fixture
def make_model(tmp_path: Path) -> Callable[..., Path]:
    """Factory: make_model(fmt, arch, sizes={name: nbytes}, metadata={...}, drop=(...), ...) -> path."""

    def make(
        fmt: str = "i2s",
        arch: str = ARCH_BITNET_B158,
        *,
        name: str = "model.gguf",
        sizes: dict[str, int] | None = None,
        metadata: dict[str, object] | None = None,
        drop: tuple[str, ...] = (),
        alignment: int = 32,
        scales: bool = False,
        **dims: int,
    ) -> Path:
        meta = {**tiny_metadata(arch, fmt, **dims), **(metadata or {})}
        specs = []
        for seed, (tname, ggml_type, shape) in enumerate(tiny_tensors(fmt, scales, **dims)):
            if tname in drop:
                continue
            nbytes = (sizes or {}).get(tname) or expected_nbytes(_flavor_of(ggml_type, fmt), shape)
            assert nbytes is not None
            scale_at = shape[0] * shape[1] // 4 if fmt == "i2s" and ggml_type == GGMLType.I2_S else None
            specs.append(TensorSpec(tname, int(ggml_type), shape, nbytes, _filler(nbytes, seed, scale_at)))
        path = tmp_path / name
        write_gguf(path, meta, specs, alignment=alignment)
        return path

    return make
