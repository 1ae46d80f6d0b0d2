"""Read safetensors files as numpy arrays, BF16 included, without torch.

The `safetensors` package's numpy loader refuses BF16 (numpy has no such type), and BitNet checkpoints keep
their embeddings, norms and master weights in BF16; the format is simple enough to read directly: an 8-byte
little-endian header length, a JSON header naming each tensor's dtype, shape and byte range, then the data.
Tensors stay in a read-only memory map until asked for; BF16 is widened to float32 exactly.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.errors import EngineError

MAX_HEADER_BYTES = 100 << 20
DTYPES = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "BF16": "<u2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U8": "u1",
    "U16": "<u2",
    "U32": "<u4",
    "U64": "<u8",
    "BOOL": "?",
}


class SafetensorsError(EngineError):
    """A safetensors file that cannot be read as the format says."""


@dataclass
class SafeTensor:
    """One tensor: its safetensors dtype name, shape, and raw bytes (a view of the memory map)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    raw: np.ndarray = field(repr=False)

    def array(self) -> np.ndarray:
        """The values in numpy form (BF16 as float32)."""
        data = self.raw.view(DTYPES[self.dtype]).reshape(self.shape)
        if self.dtype == "BF16":
            return (data.astype(np.uint32) << 16).view(np.float32)
        return data

    def floats(self) -> np.ndarray:
        """The values as float32 (any float or integer dtype)."""
        return np.asarray(self.array(), dtype=np.float32)


def read_safetensors(path: str | os.PathLike[str]) -> dict[str, SafeTensor]:
    """Every tensor of one safetensors file, by name; a malformed file raises SafetensorsError naming it."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise SafetensorsError(f"{path}: {size} bytes is too short for a safetensors file")
        (n,) = struct.unpack("<Q", head)
        if n > min(MAX_HEADER_BYTES, size - 8):
            raise SafetensorsError(f"{path}: header length {n} does not fit the file of {size} bytes")
        try:
            header = json.loads(fh.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SafetensorsError(f"{path}: the header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: the header is not a JSON object")
    data_start = 8 + n
    mapped = np.memmap(path, dtype=np.uint8, mode="r") if size > data_start else np.zeros(0, np.uint8)
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        tensors[name] = _tensor(path, name, info, mapped, data_start, size)
    return tensors


def _tensor(path: Path, name: str, info: object, mapped: np.ndarray, start: int, size: int) -> SafeTensor:
    if not isinstance(info, dict):
        raise SafetensorsError(f"{path}: tensor {name!r} has no description")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if dtype not in DTYPES:
        raise SafetensorsError(f"{path}: tensor {name!r} has unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise SafetensorsError(f"{path}: tensor {name!r} has a bad shape {shape!r}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
        raise SafetensorsError(f"{path}: tensor {name!r} has bad data_offsets {offsets!r}")
    begin, end = offsets
    expected = int(np.prod(shape, dtype=np.int64)) * np.dtype(DTYPES[dtype]).itemsize
    if not 0 <= begin <= end or end - begin != expected or start + end > size:
        raise SafetensorsError(
            f"{path}: tensor {name!r} ({dtype} {shape}) needs {expected} bytes at [{begin}, {end}) of the "
            f"data, which holds {size - start}"
        )
    return SafeTensor(name, dtype, tuple(shape), mapped[start + begin : start + end])
