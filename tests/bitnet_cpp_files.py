"""Model files written the way bitnet.cpp writes type-36 (I2_S) tensors: a writer of our own, independent of
engine/formats, built from bitnet.cpp's quantizer (`quantize_i2_s`) and its `llama-quantize` output.

bitnet.cpp quantizes each float matrix with one scale, max|w| over the whole tensor, and codes 1 where
|w| < 1e-6, 2 where w > 0, else 0. It packs the codes in one of three layouts, chosen when bitnet.cpp is
compiled and recorded nowhere in the file, writes the float32 scale at byte n/4 and reports n/4 + 32 bytes;
the 28 bytes after the scale are whatever its work buffer held. Layouts (row r, column c, flat index
i = r * cols + c):

- `x86`: x86 builds with ACT_PARALLEL (the default) and every build before late 2025: 128-value blocks of
  32 bytes; value j of block b sits in byte 32 b + j % 32 at bit shift 6 - 2 (j // 32).
- `x86_rows4`: x86 builds without ACT_PARALLEL: four rows share each byte; row 4 g + k, column c sits in
  byte g * cols + c at shift 6 - 2 k (the row count must be a multiple of 4).
- `arm`: ARM builds since late 2025: 64-value blocks of 16 bytes; value j of block b sits in byte
  16 b + j % 16 at shift 6 - 2 (j // 16).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from pathlib import Path

import numpy as np

from engine.constants import ARCH_BITNET_B158, GGMLType
from engine.gguf_writer import TensorSpec, write_gguf
from tests.conftest import tiny_metadata, tiny_tensors

LAYOUTS = ("x86", "x86_rows4", "arm")
TAIL = 32
LEFTOVER = bytes(range(0xA0, 0xA0 + TAIL - 4))  # stands in for the work buffer's stale bytes

Weights = Callable[[str, int, int], np.ndarray]


def codes_and_scale(weights: np.ndarray) -> tuple[np.ndarray, float]:
    """bitnet.cpp's ternary codes (0, 1, 2 for -1, 0, +1) of a float matrix, and its scale max|w|."""
    w = np.asarray(weights, dtype=np.float64)
    scale = float(np.abs(w).max())
    codes = np.where(np.abs(w) < 1e-6, 1, np.where(w * scale > 0, 2, 0)).astype(np.uint8)
    return codes, scale


def pack(codes: np.ndarray, layout: str) -> np.ndarray:
    """The n/4 code bytes of a [rows, cols] code matrix in one of bitnet.cpp's layouts."""
    rows, cols = codes.shape
    if layout == "x86_rows4":
        assert rows % 4 == 0, "bitnet.cpp asserts rows % 4 == 0 for this layout"
        fields = codes.reshape(rows // 4, 4, cols)  # [group, k, column] -> byte g * cols + c, shift 6 - 2k
    else:
        block = {"x86": 128, "arm": 64}[layout]
        assert codes.size % block == 0
        fields = codes.reshape(-1, 4, block // 4)  # [block, j // group, j % group]
    out = np.zeros(fields.shape[0] * fields.shape[2], dtype=np.uint8)
    flat = out.reshape(fields.shape[0], fields.shape[2])
    for k in range(4):
        flat |= fields[:, k, :] << np.uint8(6 - 2 * k)
    return out


def quantize_i2s(weights: np.ndarray, layout: str = "x86", tail: bool = True) -> np.ndarray:
    """The tensor bytes bitnet.cpp writes: codes, then (with tail) the float32 scale and 28 stale bytes."""
    codes, scale = codes_and_scale(weights)
    body = pack(codes, layout)
    if not tail:
        return body
    scale_bytes = np.frombuffer(np.float32(scale).astype("<f4").tobytes(), dtype=np.uint8)
    return np.concatenate([body, scale_bytes, np.frombuffer(LEFTOVER, dtype=np.uint8)])


def row_varied_weights(seed: int = 0) -> Weights:
    """Ternary weights whose zero fraction differs from row to row (20-60 %), as trained weights' rows do."""

    def make(name: str, rows: int, cols: int) -> np.ndarray:
        rng = np.random.default_rng([seed, *name.encode()])
        zero_share = rng.uniform(0.2, 0.6, size=(rows, 1))
        draw = rng.random((rows, cols))
        signs = np.where(rng.random((rows, cols)) < 0.5, -1.0, 1.0)
        return np.where(draw < zero_share, 0.0, signs) * 0.0421875

    return make


def iid_weights(seed: int = 0) -> Weights:
    """Ternary weights drawn independently (a third each of -1, 0, +1): no row differs from another."""

    def make(name: str, rows: int, cols: int) -> np.ndarray:
        rng = np.random.default_rng([seed, *name.encode()])
        return rng.integers(-1, 2, size=(rows, cols)).astype(np.float64) * 0.0421875

    return make


def _float_bytes(ggml_type: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dtype = "<f2" if ggml_type == GGMLType.F16 else "<f4"
    values = rng.uniform(0.5, 1.5, size=shape) if len(shape) == 1 else rng.normal(0, 0.02, size=shape)
    return values.astype(dtype).view(np.uint8).reshape(-1)


def write_model(
    path: Path,
    layout: str = "x86",
    *,
    weights: Weights | None = None,
    missing_tails: Collection[str] | bool = (),
    scales: Mapping[str, float] | None = None,
    arch: str = ARCH_BITNET_B158,
    metadata: Mapping[str, object] | None = None,
    **dims: int,
) -> dict[str, np.ndarray]:
    """A whole tiny model as llama-quantize writes it (F16 embedding, F32 norms, I2_S matrices, alignment 32).

    missing_tails: the matrices written without their 32-byte tail (True: all of them); scales: overrides of
    the float32 stored at byte n/4. Returns each matrix's ternary values (-1, 0, +1) as written.
    """
    make = weights or row_varied_weights()
    meta = {**tiny_metadata(arch, "i2s", **dims), **(metadata or {})}
    values: dict[str, np.ndarray] = {}
    specs = []
    for seed, (name, ggml_type, shape) in enumerate(tiny_tensors("i2s", **dims)):
        if ggml_type != GGMLType.I2_S:
            data = _float_bytes(ggml_type, shape, seed)
        else:
            w = make(name, *shape)
            values[name] = np.sign(w).astype(np.int8)
            drop = missing_tails is True or (missing_tails is not False and name in missing_tails)
            data = quantize_i2s(w, layout, tail=not drop)
            if scales and name in scales and not drop:
                scale = np.float32(scales[name]).tobytes()
                data[w.size // 4 : w.size // 4 + 4] = np.frombuffer(scale, np.uint8)
        specs.append(TensorSpec(name, int(ggml_type), shape, data.size, lambda d=data: d))
    write_gguf(path, meta, specs, alignment=32)
    return values
