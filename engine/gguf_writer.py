"""Streaming GGUF v3 writer: typed metadata, then tensors produced and written one at a time.

Tensors are never all in memory together (a 2B-parameter synthetic model would not fit comfortably); each
TensorSpec.produce() is called when its bytes are due. The file appears atomically when complete.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from gguf import GGUFValueType

from engine.atomic import atomic_write
from engine.constants import GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_VERSION

_SCALAR_FORMATS: dict[int, str] = {
    GGUFValueType.UINT8: "<B",
    GGUFValueType.INT8: "<b",
    GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I",
    GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f",
    GGUFValueType.BOOL: "<?",
    GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q",
    GGUFValueType.FLOAT64: "<d",
}
_DTYPE_TYPES: dict[str, int] = {
    "u1": GGUFValueType.UINT8,
    "i1": GGUFValueType.INT8,
    "u2": GGUFValueType.UINT16,
    "i2": GGUFValueType.INT16,
    "u4": GGUFValueType.UINT32,
    "i4": GGUFValueType.INT32,
    "f4": GGUFValueType.FLOAT32,
    "b1": GGUFValueType.BOOL,
    "u8": GGUFValueType.UINT64,
    "i8": GGUFValueType.INT64,
    "f8": GGUFValueType.FLOAT64,
}


@dataclass(frozen=True)
class Typed:
    """A metadata value with an explicit GGUF value type (a gguf.GGUFValueType id).

    For ARRAY, `element_type` names the element type; without it the elements' type is inferred from the first
    element (Typed elements give their own type).
    """

    value_type: int
    value: object
    element_type: int | None = None


@dataclass
class TensorSpec:
    """A tensor to write: `shape` in numpy order, `nbytes` its byte size, `produce()` its bytes on demand."""

    name: str
    ggml_type: int
    shape: tuple[int, ...]
    nbytes: int
    produce: Callable[[], np.ndarray | Iterable[np.ndarray]]  # the whole tensor, or its chunks in order


def _default_type(value: object, in_array: bool) -> int:
    if isinstance(value, Typed):
        return value.value_type
    if isinstance(value, (bool, np.bool_)):
        return GGUFValueType.BOOL
    if isinstance(value, (int, np.integer)):
        return GGUFValueType.INT32 if in_array else GGUFValueType.UINT32
    if isinstance(value, (float, np.floating)):
        return GGUFValueType.FLOAT32
    if isinstance(value, str):
        return GGUFValueType.STRING
    if isinstance(value, (list, tuple, np.ndarray)):
        return GGUFValueType.ARRAY
    raise TypeError(f"no GGUF value type for {type(value).__name__}; wrap it in Typed")


def _encode_string(text: str) -> bytes:
    data = text.encode("utf-8")
    return struct.pack("<Q", len(data)) + data


def _encode_scalar(value_type: int, value: object, key: str) -> bytes:
    fmt = _SCALAR_FORMATS.get(value_type)
    if fmt is None:
        raise ValueError(f"metadata {key!r}: value type {value_type} is not a scalar type")
    try:
        return struct.pack(fmt, value)
    except struct.error as exc:
        raise ValueError(
            f"metadata {key!r}: {value!r} does not fit {GGUFValueType(value_type).name}: {exc}"
        ) from None


def _array_element_type(value: object, element_type: int | None, key: str) -> int:
    if element_type is not None:
        return element_type
    if isinstance(value, np.ndarray):
        found = _DTYPE_TYPES.get(value.dtype.str[1:])
        if found is None:
            raise TypeError(f"metadata {key!r}: no GGUF type for numpy dtype {value.dtype}")
        return found
    assert isinstance(value, (list, tuple))
    if not value:
        raise ValueError(f"metadata {key!r}: empty array needs Typed(ARRAY, [], element_type=...)")
    return _default_type(value[0], in_array=True)


def _encode_array(value: object, element_type: int | None, key: str) -> bytes:
    if not isinstance(value, (list, tuple, np.ndarray)):
        raise TypeError(f"metadata {key!r}: ARRAY value must be a list, tuple or numpy array")
    elem_type = _array_element_type(value, element_type, key)
    head = struct.pack("<IQ", elem_type, len(value))
    if len(value) == 0:
        return head
    fmt = _SCALAR_FORMATS.get(elem_type)
    if fmt is not None and not any(isinstance(v, Typed) for v in value):
        array = np.asarray(value)
        if array.dtype.kind not in "biuf":
            raise TypeError(f"metadata {key!r}: array of {GGUFValueType(elem_type).name} holds non-numbers")
        target = np.dtype(fmt)
        if target.kind in "iub" and array.dtype.kind == "f":
            raise TypeError(f"metadata {key!r}: floats in an array of {GGUFValueType(elem_type).name}")
        converted = array.astype(target)
        if array.dtype.kind in "iu" and not np.array_equal(converted, array):
            raise ValueError(f"metadata {key!r}: values do not fit {GGUFValueType(elem_type).name}")
        return head + converted.tobytes()
    return head + b"".join(_encode_value(elem_type, v, key) for v in value)


def _encode_value(value_type: int, value: object, key: str) -> bytes:
    element_type = None
    if isinstance(value, Typed):
        if value.value_type != value_type:
            raise ValueError(
                f"metadata {key!r}: element of type {value.value_type} in an array of {value_type}"
            )
        element_type = value.element_type
        value = value.value
    if value_type == GGUFValueType.STRING:
        if not isinstance(value, str):
            raise TypeError(f"metadata {key!r}: STRING value must be str")
        return _encode_string(value)
    if value_type == GGUFValueType.ARRAY:
        return _encode_array(value, element_type, key)
    if isinstance(value, np.generic):
        value = value.item()
    return _encode_scalar(value_type, value, key)


def encode_kv(key: str, value: object) -> bytes:
    """One metadata record: key, value type, value."""
    value_type = _default_type(value, in_array=False)
    return _encode_string(key) + struct.pack("<I", value_type) + _encode_value(value_type, value, key)


def _align(offset: int, alignment: int) -> int:
    return -(-offset // alignment) * alignment


def _tensor_info(spec: TensorSpec, offset: int) -> bytes:
    ne = tuple(reversed(spec.shape))
    return (
        _encode_string(spec.name)
        + struct.pack("<I", len(ne))
        + struct.pack(f"<{len(ne)}Q", *ne)
        + struct.pack("<IQ", spec.ggml_type, offset)
    )


def _check_specs(tensors: Sequence[TensorSpec]) -> None:
    names: set[str] = set()
    for spec in tensors:
        if spec.name in names:
            raise ValueError(f"duplicate tensor name {spec.name!r}")
        names.add(spec.name)
        if not spec.shape or any(dim < 1 for dim in spec.shape):
            raise ValueError(f"tensor {spec.name!r}: bad shape {spec.shape}")
        if spec.nbytes < 1:
            raise ValueError(f"tensor {spec.name!r}: nbytes must be positive")


def _write_tensor(fh: BinaryIO, spec: TensorSpec, alignment: int) -> None:
    produced = spec.produce()
    chunks = [produced] if isinstance(produced, np.ndarray) else produced
    written = 0
    for chunk in chunks:
        array = np.ascontiguousarray(chunk)
        written += array.nbytes
        if written > spec.nbytes:
            break
        fh.write(array.reshape(-1).view(np.uint8).data)
    if written != spec.nbytes:
        raise ValueError(f"tensor {spec.name!r}: produce() gave {written} bytes, spec says {spec.nbytes}")
    fh.write(bytes(_align(spec.nbytes, alignment) - spec.nbytes))


def write_gguf(
    path: str | os.PathLike[str],
    metadata: dict[str, object],
    tensors: Sequence[TensorSpec],
    alignment: int = GGUF_DEFAULT_ALIGNMENT,
) -> None:
    """Write a GGUF v3 file atomically; tensor bytes are produced and written one tensor at a time."""
    if alignment < 1 or alignment & (alignment - 1):
        raise ValueError(f"alignment {alignment} is not a power of two")
    metadata = dict(metadata)
    if alignment != GGUF_DEFAULT_ALIGNMENT or "general.alignment" in metadata:
        given = metadata.get("general.alignment", alignment)
        given = given.value if isinstance(given, Typed) else given
        if given != alignment:
            raise ValueError(f"metadata general.alignment {given} differs from alignment={alignment}")
        metadata["general.alignment"] = Typed(GGUFValueType.UINT32, alignment)
    _check_specs(tensors)
    header = bytearray(GGUF_MAGIC + struct.pack("<IQQ", GGUF_VERSION, len(tensors), len(metadata)))
    for key, value in metadata.items():
        header += encode_kv(key, value)
    offset = 0
    for spec in tensors:
        header += _tensor_info(spec, offset)
        offset = _align(offset + spec.nbytes, alignment)
    header += bytes(_align(len(header), alignment) - len(header))
    with atomic_write(path) as fh:
        fh.write(header)
        for spec in tensors:
            _write_tensor(fh, spec, alignment)
