"""Model weights in and out of files, independent of the weight format: ternary matrices with one scale each.

One writer for every producer of real weights (the trained preset, Hugging Face checkpoints) and one reader
for every consumer that needs them outside the engine's kernels (the transformers reference): matrices are
stored in the chosen weight format, norms as F32, the tied embedding as F16, in the forward pass's tensor
order, under the official 2B-4T metadata keys. Tensors are produced lazily, one at a time, so a 2B-parameter
checkpoint is never whole in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.constants import (
    FORMAT_FILE_TYPE,
    FORMAT_GGML_TYPE,
    FORMAT_QK256,
    LAYER_MATRICES,
    GGMLType,
)
from engine.errors import EngineError
from engine.formats import FORMATS
from engine.gguf_writer import TensorSpec, write_gguf
from engine.loader import ModelFile
from engine.presets import Preset

# Tensor order inside a layer: the forward pass order (the norms and matrices of engine.constants).
LAYER_ORDER = (
    "attn_norm",
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_output",
    "attn_sub_norm",
    "ffn_norm",
    "ffn_gate",
    "ffn_up",
    "ffn_down",
    "ffn_sub_norm",
)
# Progress callback: (tensors done, tensors total, name of the tensor just produced).
ProgressFn = Callable[[int, int, str], None]
# Weight formats that hold a ternary matrix with any scale (QK256 stores no scale at all).
SCALED_FORMATS = tuple(f for f in FORMAT_GGML_TYPE if f != FORMAT_QK256)


@dataclass(frozen=True)
class Ternary:
    """A (rows, cols) ternary matrix; `load()` gives int8 values in {-1, 0, 1} and the scale (weight =
    value x scale)."""

    shape: tuple[int, int]
    load: Callable[[], tuple[np.ndarray, float]]

    @classmethod
    def of(cls, values: np.ndarray, scale: float) -> Ternary:
        return cls((int(values.shape[0]), int(values.shape[1])), lambda: (values, float(scale)))


@dataclass(frozen=True)
class Floats:
    """A float tensor (norm or embedding); `load()` gives its values."""

    shape: tuple[int, ...]
    load: Callable[[], np.ndarray]

    @classmethod
    def of(cls, array: np.ndarray) -> Floats:
        return cls(tuple(array.shape), lambda: array)


Weights = Mapping[str, "Ternary | Floats"]


def is_matrix(name: str) -> bool:
    """Whether a tensor name is one of the per-layer ternary matrices."""
    parts = name.split(".")
    return len(parts) == 4 and parts[0] == "blk" and parts[2] in LAYER_MATRICES


def tensor_names(n_layers: int) -> list[str]:
    """Every tensor of a model in file order."""
    names = ["token_embd.weight"]
    names += [f"blk.{layer}.{part}.weight" for layer in range(n_layers) for part in LAYER_ORDER]
    return [*names, "output_norm.weight"]


def architecture_metadata(arch: str, shape: Preset, fmt: str, name: str) -> dict[str, object]:
    """The official 2B-4T keys for a model of this shape (no tokenizer keys)."""
    return {
        "general.architecture": arch,
        "general.name": name,
        "general.file_type": int(FORMAT_FILE_TYPE[fmt]),
        f"{arch}.vocab_size": shape.vocab_size,
        f"{arch}.context_length": shape.context_length,
        f"{arch}.embedding_length": shape.hidden,
        f"{arch}.block_count": shape.n_layers,
        f"{arch}.feed_forward_length": shape.ffn,
        f"{arch}.rope.dimension_count": shape.head_dim,
        f"{arch}.attention.head_count": shape.n_heads,
        f"{arch}.attention.head_count_kv": shape.n_kv_heads,
        f"{arch}.attention.layer_norm_rms_epsilon": float(shape.rms_eps),
        f"{arch}.rope.freq_base": float(shape.rope_theta),
    }


def check_ternary_format(fmt: str) -> None:
    """EngineError unless `fmt` stores a ternary matrix with its scale."""
    if fmt not in SCALED_FORMATS:
        raise EngineError(
            f"weight format {fmt!r} cannot hold ternary weights with their scale; "
            f"choose one of {', '.join(SCALED_FORMATS)}"
        )


def ternary_values(name: str, weight: Ternary) -> tuple[np.ndarray, float]:
    """`weight.load()`, checked: the declared shape, values in {-1, 0, 1}, a positive finite scale."""
    values, scale = weight.load()
    values = np.asarray(values)
    if values.shape != weight.shape:
        raise EngineError(f"tensor {name!r}: values of shape {values.shape}, declared {weight.shape}")
    if values.size and (values.min() < -1 or values.max() > 1 or not np.array_equal(values, np.rint(values))):
        raise EngineError(f"tensor {name!r} holds values outside {{-1, 0, 1}}")
    if not np.isfinite(scale) or scale <= 0:
        raise EngineError(f"tensor {name!r}: weight scale {scale!r} is not a positive finite number")
    return values.astype(np.int8, copy=False), float(scale)


def _matrix_spec(name: str, fmt: str, weight: Ternary) -> TensorSpec:
    rows, cols = weight.shape
    module = FORMATS[fmt]

    def produce() -> np.ndarray:
        values, scale = ternary_values(name, weight)
        return module.pack(values, np.float32(scale))

    return TensorSpec(
        name, int(FORMAT_GGML_TYPE[fmt]), (rows, cols), module.expected_nbytes(rows, cols), produce
    )


def _float_spec(name: str, weight: Floats, ggml_type: GGMLType) -> TensorSpec:
    dtype = np.dtype("<f2" if ggml_type == GGMLType.F16 else "<f4")

    def produce() -> np.ndarray:
        data = np.ascontiguousarray(np.asarray(weight.load()).astype(dtype))
        if data.shape != weight.shape:
            raise EngineError(f"tensor {name!r}: values of shape {data.shape}, declared {weight.shape}")
        if not np.all(np.isfinite(data)):
            raise EngineError(f"tensor {name!r} holds non-finite values (in {dtype.name})")
        return data

    nbytes = int(np.prod(weight.shape, dtype=np.int64)) * dtype.itemsize
    return TensorSpec(name, int(ggml_type), weight.shape, nbytes, produce)


def model_specs(weights: Weights, n_layers: int, fmt: str) -> list[TensorSpec]:
    """TensorSpecs in file order: Ternary matrices in `fmt`, the embedding F16, norms F32."""
    check_ternary_format(fmt)
    names = tensor_names(n_layers)
    missing = [n for n in names if n not in weights]
    if missing:
        raise EngineError(f"the model lacks {len(missing)} tensors, first {missing[0]!r}")
    specs = []
    for name in names:
        weight = weights[name]
        if is_matrix(name) != isinstance(weight, Ternary):
            raise EngineError(f"tensor {name!r} must be {'ternary' if is_matrix(name) else 'a float tensor'}")
        if isinstance(weight, Ternary):
            specs.append(_matrix_spec(name, fmt, weight))
        else:
            embd = name == "token_embd.weight"
            specs.append(_float_spec(name, weight, GGMLType.F16 if embd else GGMLType.F32))
    return specs


def with_progress(specs: list[TensorSpec], progress: ProgressFn) -> list[TensorSpec]:
    """The same specs, each calling `progress(done, total, name)` once its bytes are produced."""
    total = len(specs)

    def wrap(index: int, spec: TensorSpec) -> TensorSpec:
        def produce() -> np.ndarray | Iterator[np.ndarray]:
            data = spec.produce()
            progress(index + 1, total, spec.name)
            return data

        return TensorSpec(spec.name, spec.ggml_type, spec.shape, spec.nbytes, produce)

    return [wrap(i, s) for i, s in enumerate(specs)]


def write_model(
    out: Path,
    metadata: dict[str, object],
    weights: Weights,
    n_layers: int,
    fmt: str,
    progress: ProgressFn | None = None,
) -> Path:
    """Write the model atomically to `out` in weight format `fmt` and return its path."""
    return write_specs(out, metadata, model_specs(weights, n_layers, fmt), progress)


def write_specs(
    out: Path, metadata: dict[str, object], specs: list[TensorSpec], progress: ProgressFn | None = None
) -> Path:
    """Write a model file atomically to `out` (not a folder), reporting each tensor to `progress`."""
    if progress is not None:
        specs = with_progress(specs, progress)
    out = Path(out)
    if out.is_dir():
        raise EngineError(f"{out} is a folder; give a file path for the model")
    write_gguf(out, metadata, specs)
    return out


def _file_ternary(model: ModelFile, name: str) -> Ternary:
    t = model.tensor(name)
    rows, cols = t.shape
    flavor = model.flavor(name)
    extra = f"{name.removesuffix('.weight')}.scale"

    def load() -> tuple[np.ndarray, float]:
        values, scales = FORMATS[flavor].unpack(t.data, rows, cols)
        distinct = np.unique(np.asarray(scales, np.float32))
        if flavor == FORMAT_QK256 or distinct.size != 1:
            what = (
                "values +-1 and +-2" if flavor == FORMAT_QK256 else f"{distinct.size} distinct block scales"
            )
            raise EngineError(
                f"tensor {name!r} ({flavor}) holds {what}: it is not one ternary matrix x one scale"
            )
        scale = float(distinct[0])
        if extra in model.gguf.tensors:
            scale *= float(model.float_array(extra).reshape(-1)[0])
        return values, scale

    return Ternary((rows, cols), load)


def read_weights(model: ModelFile) -> dict[str, Ternary | Floats]:
    """Every tensor the forward pass reads, as Ternary matrices (with any `.scale` tensor folded into the
    scale) and Floats; a matrix that is not one ternary matrix times one scale raises when loaded."""
    out: dict[str, Ternary | Floats] = {}
    for name in tensor_names(model.config.n_layers):
        if is_matrix(name):
            out[name] = _file_ternary(model, name)
        else:
            out[name] = Floats(model.tensor(name).shape, lambda name=name: model.float_array(name))
    return out
