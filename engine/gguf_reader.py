"""Our own bounded GGUF v3 parser over np.memmap.

gguf-py's GGUFReader refuses any file holding type 36 (I2_S), so the engine parses GGUF itself. Every count
and length read from the file is checked against the bytes that remain before anything is allocated, so a
hostile or truncated file fails fast with a one-line GGUFFormatError instead of a hang or a memory blow-up.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFValueType

from engine.constants import GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_VERSION, GGMLType
from engine.errors import EngineError, GGUFFormatError
from engine.flavor import fixed_nbytes, min_nbytes

MAX_DIMS = 4
MAX_ELEMENTS = 1 << 62
MAX_ARRAY_DEPTH = 8
# Caps that keep time and memory bounded by more than the file size: a small hostile file must not become
# millions of Python objects. Real files stay far below them: the official 2B-4T file has 332 tensors,
# 24 metadata keys and 536,659 array values (vocabulary, token types, merges), and no arrays of arrays.
MAX_TENSORS = 1 << 14
MAX_METADATA_KEYS = 1 << 16
MAX_ARRAY_VALUES = 1 << 21  # all metadata array elements of a file together
MAX_NESTED_ARRAYS = 1 << 16  # elements that are themselves arrays
HEADER_BYTES = 24  # magic, version, tensor count, metadata count
MIN_KV_BYTES = 8 + 4 + 1  # key length, value type, the smallest value
MIN_TENSOR_INFO_BYTES = 8 + 4 + 8 + 4 + 8  # name length, n_dims, one dim, type, offset

_SCALARS: dict[int, struct.Struct] = {
    GGUFValueType.UINT8: struct.Struct("<B"),
    GGUFValueType.INT8: struct.Struct("<b"),
    GGUFValueType.UINT16: struct.Struct("<H"),
    GGUFValueType.INT16: struct.Struct("<h"),
    GGUFValueType.UINT32: struct.Struct("<I"),
    GGUFValueType.INT32: struct.Struct("<i"),
    GGUFValueType.FLOAT32: struct.Struct("<f"),
    GGUFValueType.BOOL: struct.Struct("<B"),
    GGUFValueType.UINT64: struct.Struct("<Q"),
    GGUFValueType.INT64: struct.Struct("<q"),
    GGUFValueType.FLOAT64: struct.Struct("<d"),
}
_NUMPY_DTYPES: dict[int, str] = {
    GGUFValueType.UINT8: "<u1",
    GGUFValueType.INT8: "<i1",
    GGUFValueType.UINT16: "<u2",
    GGUFValueType.INT16: "<i2",
    GGUFValueType.UINT32: "<u4",
    GGUFValueType.INT32: "<i4",
    GGUFValueType.FLOAT32: "<f4",
    GGUFValueType.UINT64: "<u8",
    GGUFValueType.INT64: "<i8",
    GGUFValueType.FLOAT64: "<f8",
}
_INTEGER_TYPES = frozenset(
    {
        GGUFValueType.UINT8,
        GGUFValueType.INT8,
        GGUFValueType.UINT16,
        GGUFValueType.INT16,
        GGUFValueType.UINT32,
        GGUFValueType.INT32,
        GGUFValueType.UINT64,
        GGUFValueType.INT64,
    }
)
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_KNOWN_TENSOR_TYPES = frozenset(int(t) for t in GGMLType)


@dataclass(frozen=True)
class GGUFTensor:
    """A tensor: `shape` numpy order, `offset` absolute, `nbytes` the gap to the next tensor or file end."""

    name: str
    ggml_type: int
    shape: tuple[int, ...]
    offset: int
    nbytes: int
    data: np.ndarray = field(repr=False, compare=False)

    @property
    def n_elements(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count


@dataclass
class GGUFFile:
    """A parsed GGUF file; tensor data stays in the memory map until a kernel reads it."""

    path: Path
    version: int
    alignment: int
    metadata: dict[str, object]
    tensors: dict[str, GGUFTensor]
    data_offset: int = 0
    file_size: int = 0
    metadata_types: dict[str, int] = field(default_factory=dict)


class _Cursor:
    """Reads little-endian fields from the mapped file, refusing to step past its end."""

    def __init__(self, buf: memoryview, where: str) -> None:
        self.buf = buf
        self.size = len(buf)
        self.pos = 0
        self.where = where
        self.values_left = MAX_ARRAY_VALUES
        self.nested_left = MAX_NESTED_ARRAYS

    @property
    def remaining(self) -> int:
        return self.size - self.pos

    def need(self, nbytes: int, what: str) -> None:
        if nbytes > self.remaining:
            raise GGUFFormatError(
                f"{self.where}: truncated: {what} needs {nbytes} bytes at offset {self.pos}, "
                f"only {self.remaining} left"
            )

    def unpack(self, fmt: struct.Struct, what: str) -> int | float:
        self.need(fmt.size, what)
        (value,) = fmt.unpack_from(self.buf, self.pos)
        self.pos += fmt.size
        return value

    def u32(self, what: str) -> int:
        return int(self.unpack(_U32, what))

    def u64(self, what: str) -> int:
        return int(self.unpack(_U64, what))

    def raw(self, nbytes: int, what: str) -> memoryview:
        self.need(nbytes, what)
        view = self.buf[self.pos : self.pos + nbytes]
        self.pos += nbytes
        return view

    def string(self, what: str) -> str:
        length = self.u64(f"{what} length")
        if length > self.remaining:
            raise GGUFFormatError(
                f"{self.where}: {what} length {length} exceeds the {self.remaining} bytes left in the file"
            )
        data = self.raw(length, what)
        try:
            return str(data, "utf-8")
        except UnicodeDecodeError:
            raise GGUFFormatError(
                f"{self.where}: {what} at offset {self.pos - length} is not UTF-8"
            ) from None


def _type_name(value_type: int) -> str:
    try:
        return GGUFValueType(value_type).name
    except ValueError:
        return str(value_type)


def _read_value(cur: _Cursor, value_type: int, key: str, depth: int = 0) -> object:
    if value_type == GGUFValueType.STRING:
        return cur.string(f"value of {key!r}")
    if value_type == GGUFValueType.ARRAY:
        return _read_array(cur, key, depth)
    fmt = _SCALARS.get(value_type)
    if fmt is None:
        raise GGUFFormatError(f"{cur.where}: metadata key {key!r} has unknown value type id {value_type}")
    value = cur.unpack(fmt, f"value of {key!r}")
    return bool(value) if value_type == GGUFValueType.BOOL else value


def _min_value_bytes(value_type: int) -> int:
    if value_type == GGUFValueType.STRING:
        return 8
    if value_type == GGUFValueType.ARRAY:
        return 12
    return _SCALARS[value_type].size


def _read_array(cur: _Cursor, key: str, depth: int) -> list[object]:
    if depth >= MAX_ARRAY_DEPTH:
        raise GGUFFormatError(f"{cur.where}: metadata key {key!r} nests arrays deeper than {MAX_ARRAY_DEPTH}")
    elem_type = cur.u32(f"array type of {key!r}")
    if elem_type not in _SCALARS and elem_type not in (GGUFValueType.STRING, GGUFValueType.ARRAY):
        raise GGUFFormatError(
            f"{cur.where}: metadata key {key!r} has unknown array element type id {elem_type}"
        )
    count = cur.u64(f"array length of {key!r}")
    if count * _min_value_bytes(elem_type) > cur.remaining:
        raise GGUFFormatError(
            f"{cur.where}: metadata key {key!r} claims {count} array elements, more than the "
            f"{cur.remaining} bytes left in the file can hold"
        )
    cur.values_left -= count
    if cur.values_left < 0:
        raise GGUFFormatError(
            f"{cur.where}: metadata arrays hold more than {MAX_ARRAY_VALUES} values in all (at {key!r}); "
            "no real model's metadata comes close"
        )
    if elem_type == GGUFValueType.ARRAY:
        cur.nested_left -= count
        if cur.nested_left < 0:
            raise GGUFFormatError(
                f"{cur.where}: metadata holds more than {MAX_NESTED_ARRAYS} nested arrays in all (at {key!r})"
            )
    dtype = _NUMPY_DTYPES.get(elem_type)
    if dtype is not None:
        raw = cur.raw(count * np.dtype(dtype).itemsize, f"array of {key!r}")
        return np.frombuffer(raw, dtype=dtype, count=count).tolist()
    if elem_type == GGUFValueType.BOOL:
        return [bool(b) for b in cur.raw(count, f"array of {key!r}")]
    if elem_type == GGUFValueType.STRING:
        return _read_string_array(cur, count, key)
    return [_read_value(cur, elem_type, key, depth + 1) for _ in range(count)]


def _read_string_array(cur: _Cursor, count: int, key: str) -> list[object]:
    """The tokenizer's vocabulary and merges (hundreds of thousands of strings): one tight loop."""
    buf, pos, size = cur.buf, cur.pos, cur.size
    unpack = _U64.unpack_from
    out: list[object] = []
    append = out.append
    try:
        for _ in range(count):
            if pos + 8 > size:
                break
            (length,) = unpack(buf, pos)
            pos += 8
            if length > size - pos:
                break
            append(buf[pos : pos + length].tobytes().decode("utf-8"))
            pos += length
    except UnicodeDecodeError:
        raise GGUFFormatError(f"{cur.where}: string #{len(out)} of {key!r} is not UTF-8") from None
    if len(out) < count:
        raise GGUFFormatError(
            f"{cur.where}: truncated: string #{len(out)} of {key!r} runs past the end of the file"
        )
    cur.pos = pos
    return out


def _read_metadata(cur: _Cursor, kv_count: int) -> tuple[dict[str, object], dict[str, int]]:
    metadata: dict[str, object] = {}
    types: dict[str, int] = {}
    for index in range(kv_count):
        key = cur.string(f"metadata key #{index}")
        if key in metadata:
            raise GGUFFormatError(f"{cur.where}: duplicate metadata key {key!r}")
        value_type = cur.u32(f"value type of {key!r}")
        metadata[key] = _read_value(cur, value_type, key)
        types[key] = value_type
    return metadata, types


def _alignment(metadata: dict[str, object], types: dict[str, int], where: str) -> int:
    if "general.alignment" not in metadata:
        return GGUF_DEFAULT_ALIGNMENT
    value = metadata["general.alignment"]
    if types["general.alignment"] not in _INTEGER_TYPES:
        raise GGUFFormatError(
            f"{where}: general.alignment has type {_type_name(types['general.alignment'])}, not an integer"
        )
    assert isinstance(value, int)
    if value <= 0 or value & (value - 1) or value > 1 << 30:
        raise GGUFFormatError(f"{where}: general.alignment {value} is not a power of two up to 2^30")
    return value


def _tensor_type_name(type_id: int) -> str:
    if type_id == GGMLType.I2_S:
        return "I2_S"
    try:
        return GGMLQuantizationType(type_id).name
    except ValueError:
        return "unknown"


@dataclass(frozen=True)
class _Info:
    name: str
    ggml_type: int
    shape: tuple[int, ...]
    rel_offset: int


def _read_tensor_info(cur: _Cursor, index: int) -> _Info:
    name = cur.string(f"name of tensor #{index}")
    n_dims = cur.u32(f"dimension count of tensor {name!r}")
    if not 1 <= n_dims <= MAX_DIMS:
        raise GGUFFormatError(
            f"{cur.where}: tensor {name!r} has {n_dims} dimensions; 1 to {MAX_DIMS} are allowed"
        )
    ne = [cur.u64(f"dimensions of tensor {name!r}") for _ in range(n_dims)]
    n_elements = 1
    for dim in ne:
        if dim == 0 or dim >= 1 << 63:
            signed = dim - (1 << 64) if dim >= 1 << 63 else dim
            raise GGUFFormatError(
                f"{cur.where}: tensor {name!r} has dimension {signed}; dimensions must be >= 1"
            )
        n_elements *= dim
        if n_elements > MAX_ELEMENTS:
            raise GGUFFormatError(f"{cur.where}: tensor {name!r} element count overflows (dims {ne})")
    ggml_type = cur.u32(f"type of tensor {name!r}")
    if ggml_type not in _KNOWN_TENSOR_TYPES:
        raise GGUFFormatError(
            f"{cur.where}: tensor {name!r} has unsupported type id {ggml_type} "
            f"({_tensor_type_name(ggml_type)}); "
            f"supported: {', '.join(f'{t.name}={int(t)}' for t in GGMLType)}"
        )
    rel_offset = cur.u64(f"offset of tensor {name!r}")
    return _Info(name, ggml_type, tuple(reversed(ne)), rel_offset)


def _place_tensors(
    infos: list[_Info], data_offset: int, alignment: int, mapped: np.ndarray, where: str
) -> dict[str, GGUFTensor]:
    """Turn relative offsets into absolute ones, check them, and measure each tensor's gap to the next one."""
    file_size = len(mapped)
    seen: set[str] = set()
    for info in infos:
        if info.name in seen:
            raise GGUFFormatError(f"{where}: duplicate tensor name {info.name!r}")
        seen.add(info.name)
        if info.rel_offset % alignment:
            raise GGUFFormatError(
                f"{where}: tensor {info.name!r} offset {info.rel_offset} is not a multiple of the "
                f"alignment {alignment}"
            )
        if data_offset + info.rel_offset >= file_size:
            raise GGUFFormatError(
                f"{where}: tensor {info.name!r} data starts at {data_offset + info.rel_offset}, "
                f"past the end of the {file_size}-byte file"
            )
    ordered = sorted(infos, key=lambda i: i.rel_offset)
    gaps: dict[str, int] = {}
    for index, current in enumerate(ordered):
        following = ordered[index + 1] if index + 1 < len(ordered) else None
        start = data_offset + current.rel_offset
        end = file_size if following is None else data_offset + following.rel_offset
        if end == start:
            assert following is not None
            raise GGUFFormatError(
                f"{where}: tensors {current.name!r} and {following.name!r} overlap (both at offset {start})"
            )
        if following is None:
            needed = min_nbytes(current.ggml_type, current.shape)
            if start + needed > end:
                raise GGUFFormatError(
                    f"{where}: tensor {current.name!r} needs at least {needed} bytes at offset {start}, "
                    f"past the end of the {file_size}-byte file"
                )
        else:
            fixed = fixed_nbytes(current.ggml_type, current.shape)
            if fixed is not None and start + fixed > end:
                raise GGUFFormatError(
                    f"{where}: tensor {current.name!r} ({fixed} bytes at offset {start}) overlaps "
                    f"tensor {following.name!r} at offset {end}"
                )
        gaps[current.name] = end - start
    tensors: dict[str, GGUFTensor] = {}
    for info in infos:
        start = data_offset + info.rel_offset
        nbytes = gaps[info.name]
        tensors[info.name] = GGUFTensor(
            info.name, info.ggml_type, info.shape, start, nbytes, mapped[start : start + nbytes]
        )
    return tensors


def _map(path: Path) -> np.ndarray:
    try:
        size = os.path.getsize(path)
        if not path.is_file():
            raise EngineError(f"{path}: not a regular file")
        if size < HEADER_BYTES:
            raise GGUFFormatError(f"{path}: truncated: {size} bytes is shorter than a GGUF header")
        return np.memmap(path, dtype=np.uint8, mode="r")
    except OSError as exc:
        raise EngineError(f"{path}: cannot read: {exc.strerror or exc}") from None


def read_gguf(path: str | os.PathLike[str]) -> GGUFFile:
    """Parse a GGUF v3 file; raises GGUFFormatError (one line) on anything malformed."""
    path = Path(path)
    where = str(path)
    mapped = _map(path)
    cur = _Cursor(memoryview(mapped), where)
    magic = bytes(cur.raw(4, "magic"))
    if magic != GGUF_MAGIC:
        raise GGUFFormatError(f"{where}: not a GGUF file (magic {magic!r}, expected {GGUF_MAGIC!r})")
    version = cur.u32("version")
    if version != GGUF_VERSION:
        raise GGUFFormatError(
            f"{where}: GGUF version {version} is not supported (only version {GGUF_VERSION})"
        )
    tensor_count = cur.u64("tensor count")
    kv_count = cur.u64("metadata count")
    if tensor_count > MAX_TENSORS or kv_count > MAX_METADATA_KEYS:
        raise GGUFFormatError(
            f"{where}: header claims {tensor_count} tensors and {kv_count} metadata keys; this reader "
            f"accepts at most {MAX_TENSORS} tensors and {MAX_METADATA_KEYS} keys"
        )
    needed = tensor_count * MIN_TENSOR_INFO_BYTES + kv_count * MIN_KV_BYTES
    if needed > cur.remaining:
        raise GGUFFormatError(
            f"{where}: header claims {tensor_count} tensors and {kv_count} metadata keys, more than the "
            f"{cur.remaining} bytes left in the file can hold"
        )
    metadata, types = _read_metadata(cur, kv_count)
    alignment = _alignment(metadata, types, where)
    infos = [_read_tensor_info(cur, index) for index in range(tensor_count)]
    data_offset = -(-cur.pos // alignment) * alignment
    tensors = _place_tensors(infos, data_offset, alignment, mapped, where)
    return GGUFFile(path, version, alignment, metadata, tensors, data_offset, len(mapped), types)
