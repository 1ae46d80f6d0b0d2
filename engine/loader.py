"""Load a model file: parse it, validate every tensor's size and the tensor inventory, read the config.

Nothing is returned until every tensor has been judged: a file with several bad tensors fails with one error
that counts them and names the first few, so a user fixes the file once rather than once per tensor.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from engine.config import ModelConfig
from engine.constants import (
    FORMAT_I2S,
    FORMAT_QK256,
    LAYER_MATRICES,
    LAYER_NORMS,
    GGMLType,
    layer_matrix_shapes,
    layer_norm_sizes,
    type_name,
)
from engine.errors import TensorDataError, TensorSizeError, UnsupportedModelError
from engine.flavor import STATUS_INVALID, STATUS_NEAR, detect_file_flavor, judge
from engine.gguf_reader import GGUFFile, GGUFTensor, read_gguf
from engine.i2s_content import (
    TernaryTensor,
    interleave_evidence,
    interleave_finding,
    scale_problem,
    tails_missing_everywhere,
)
from engine.strict import resolve_strict

MAX_NAMED = 5
STRICT_LOAD_ANYWAY = "drop --strict-loader / BITNET_STRICT_MODE to load it anyway with a warning"
FLOAT_TYPES = frozenset({int(GGMLType.F32), int(GGMLType.F16), int(GGMLType.BF16)})
TERNARY_TYPES = frozenset({int(GGMLType.TQ1_0), int(GGMLType.TQ2_0), int(GGMLType.I2_S)})


@dataclass(frozen=True)
class TensorCheck:
    """The verdict on one tensor: found bytes (`nbytes`) against the bytes its flavor needs."""

    name: str
    ggml_type: int
    flavor: str
    shape: tuple[int, ...]
    nbytes: int
    expected_nbytes: int | None
    status: str
    message: str


@dataclass
class ModelFile:
    """A validated model file; `tensor()` gives data of exactly the expected size (short ones padded)."""

    path: Path
    gguf: GGUFFile
    config: ModelConfig
    checks: list[TensorCheck]
    warnings: list[str]
    _by_name: dict[str, TensorCheck] = field(init=False, repr=False)
    _padded: dict[str, np.ndarray] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._by_name = {check.name: check for check in self.checks}
        self._padded = {}
        for check in self.checks:
            if check.expected_nbytes is not None and check.nbytes < check.expected_nbytes:
                copy = np.zeros(check.expected_nbytes, dtype=np.uint8)
                copy[: check.nbytes] = self.gguf.tensors[check.name].data
                self._padded[check.name] = copy

    def flavor(self, name: str) -> str:
        """A tensor's layout name: `i2s`, `qk256`, `bitnet32`, `tq2_0`, `tq1_0`, `f32`, `f16` or `bf16`."""
        return self._by_name[name].flavor

    def tensor(self, name: str) -> GGUFTensor:
        """The tensor with `data` of exactly its expected byte size: a memmap view, or a padded copy."""
        raw = self.gguf.tensors[name]
        expected = self._by_name[name].expected_nbytes
        assert expected is not None
        data = self._padded.get(name)
        if data is None:
            data = raw.data[:expected]
        return replace(raw, nbytes=expected, data=data)

    def float_array(self, name: str) -> np.ndarray:
        """A float tensor (F32, F16 or BF16) as float32 in its numpy shape; F32 stays a view of the file."""
        tensor = self.tensor(name)
        if tensor.ggml_type == GGMLType.F32:
            return tensor.data.view("<f4").reshape(tensor.shape)
        if tensor.ggml_type == GGMLType.F16:
            return tensor.data.view("<f2").astype(np.float32).reshape(tensor.shape)
        if tensor.ggml_type == GGMLType.BF16:
            widened = tensor.data.view("<u2").astype(np.uint32) << 16
            return widened.view(np.float32).reshape(tensor.shape)
        raise UnsupportedModelError(f"tensor {name!r} is {self.flavor(name)}, not a float tensor")


def check_tensors(gguf: GGUFFile, strict: bool) -> list[TensorCheck]:
    """Judge every tensor's size (never raises); type-36 tensors are judged against the file's I2_S flavor."""
    file_flavor = detect_file_flavor(
        ((t.shape, t.nbytes) for t in gguf.tensors.values() if t.ggml_type == GGMLType.I2_S), gguf.alignment
    )
    checks = []
    for t in gguf.tensors.values():
        verdict = judge(t.name, t.ggml_type, t.shape, t.nbytes, gguf.alignment, strict, file_flavor)
        checks.append(
            TensorCheck(
                name=t.name,
                ggml_type=t.ggml_type,
                flavor=verdict.flavor,
                shape=t.shape,
                nbytes=t.nbytes,
                expected_nbytes=verdict.expected,
                status=verdict.status,
                message=verdict.message,
            )
        )
    return checks


def _required(config: ModelConfig) -> dict[str, tuple[tuple[int, ...], frozenset[int]]]:
    """Every tensor the forward pass reads: name -> (shape, allowed GGUF types)."""
    kv_dim = config.n_kv_heads * config.head_dim
    q_dim = config.n_heads * config.head_dim
    matrix_shapes = layer_matrix_shapes(config.hidden, config.ffn, q_dim, kv_dim)
    norm_sizes = layer_norm_sizes(config.hidden, config.ffn)
    assert set(matrix_shapes) == set(LAYER_MATRICES) and set(norm_sizes) == set(LAYER_NORMS)
    required = {
        "token_embd.weight": ((config.vocab_size, config.hidden), FLOAT_TYPES),
        "output_norm.weight": ((config.hidden,), FLOAT_TYPES),
    }
    for layer in range(config.n_layers):
        for part, shape in matrix_shapes.items():
            required[f"blk.{layer}.{part}.weight"] = (shape, TERNARY_TYPES)
        for part, size in norm_sizes.items():
            required[f"blk.{layer}.{part}.weight"] = ((size,), FLOAT_TYPES)
    return required


def _optional(config: ModelConfig) -> dict[str, tuple[tuple[int, ...], frozenset[int]]]:
    """Tensors a file may carry: an untied output matrix, per-matrix output scales."""
    optional = {"output.weight": ((config.vocab_size, config.hidden), FLOAT_TYPES)}
    for layer in range(config.n_layers):
        for part in LAYER_MATRICES:
            optional[f"blk.{layer}.{part}.scale"] = ((1,), frozenset({int(GGMLType.F32)}))
    return optional


def inventory_problems(config: ModelConfig, tensors: Mapping[str, GGUFTensor]) -> tuple[list[str], list[str]]:
    """(problems, notes): missing or mis-shaped/mis-typed tensors, and tensors the model never reads."""
    problems: list[str] = []
    expected = _required(config)
    optional = _optional(config)
    problems.extend(f"missing tensor {name!r}" for name in expected if name not in tensors)
    for name, tensor in tensors.items():
        spec = expected.get(name) or optional.get(name)
        if spec is None:
            continue
        shape, types = spec
        if tensor.shape != shape:
            problems.append(f"tensor {name!r} has shape {tensor.shape}, expected {shape}")
        elif tensor.ggml_type not in types:
            allowed = "/".join(sorted(type_name(t) for t in types))
            problems.append(f"tensor {name!r} has type {type_name(tensor.ggml_type)}, expected {allowed}")
    notes = [
        f"tensor {name!r} is not used by the model" for name in tensors if name not in expected | optional
    ]
    return problems, notes


def _more(count: int) -> str:
    return f", and {count - MAX_NAMED} more" if count > MAX_NAMED else ""


def _size_summary(path: Path, invalid: list[TensorCheck], total: int) -> str:
    """One line: the count, the first few names, and the first tensor's full diagnosis."""
    if len(invalid) == 1:
        return f"{path}: {invalid[0].message}"
    names = ", ".join(repr(check.name) for check in invalid[:MAX_NAMED]) + _more(len(invalid))
    return (
        f"{path}: {len(invalid)} of {total} tensors have invalid sizes ({names}); first: {invalid[0].message}"
    )


def _inventory_summary(path: Path, problems: list[str]) -> str:
    if len(problems) == 1:
        return f"{path}: {problems[0]}"
    shown = "; ".join(problems[:MAX_NAMED]) + _more(len(problems))
    return f"{path}: {len(problems)} tensor inventory problems: {shown}"


def _scale_summary(path: Path, problems: list[str]) -> str:
    if len(problems) == 1:
        return f"{path}: {problems[0]}"
    return f"{path}: {len(problems)} I2_S tensors have unusable scales; first: {problems[0]}"


def type36_tensors(mf: ModelFile) -> list[TernaryTensor]:
    """Every type-36 tensor of the file, in file order, with data of its expected size."""
    return [
        TernaryTensor(c.name, c.shape, mf.tensor(c.name).data)
        for c in mf.checks
        if c.ggml_type == GGMLType.I2_S
    ]


def check_i2s_content(mf: ModelFile, strict: bool) -> list[str]:
    """Warnings about what type-36 bytes reveal; lost scales raise, and so does any finding in strict mode."""
    tensors = type36_tensors(mf)
    finding = None
    if mf.config.weight_format == FORMAT_I2S:
        problems = [p for p in map(scale_problem, tensors) if p]
        if problems:
            raise TensorDataError(_scale_summary(mf.path, problems))
        finding = interleave_finding(interleave_evidence(tensors))
    elif mf.config.weight_format == FORMAT_QK256:
        finding = tails_missing_everywhere(tensors)
    if finding and strict:
        raise TensorDataError(f"{mf.path}: {finding}; strict mode: {STRICT_LOAD_ANYWAY}")
    return [finding] if finding else []


def load_file(path: str | os.PathLike[str], strict: bool | None = None) -> ModelFile:
    """Parse and validate a model file; strict=None lets BITNET_STRICT_MODE decide (permissive by default)."""
    strict_mode = resolve_strict(strict)
    gguf = read_gguf(path)
    checks = check_tensors(gguf, strict_mode)
    invalid = [check for check in checks if check.status == STATUS_INVALID]
    if invalid:
        raise TensorSizeError(_size_summary(gguf.path, invalid, len(checks)))
    config = ModelConfig.from_metadata(gguf.metadata, gguf.tensors, gguf.alignment)
    problems, notes = inventory_problems(config, gguf.tensors)
    if problems:
        raise UnsupportedModelError(_inventory_summary(gguf.path, problems))
    warnings = [check.message for check in checks if check.status == STATUS_NEAR] + notes
    model_file = ModelFile(gguf.path, gguf, config, checks, warnings)
    model_file.warnings.extend(check_i2s_content(model_file, strict_mode))
    return model_file
