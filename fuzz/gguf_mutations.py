"""Structure-aware mutations of GGUF files, and the check every mutated file must pass.

`layout()` walks a well-formed GGUF v3 file and names every field (counts, string lengths, value types, array
lengths, tensor dims, types and offsets, padding, tensor data). Mutations replace one field with a value
chosen to break a parser (0, 1, powers of two, all ones, the bytes left, off-by-one of the true value), cut
the file at a region boundary, flip bytes, or splice regions. `check_file()` runs a file through everything
`model inspect` and `load_file` run and returns a one-word outcome; any exception other than the engine's
own one-line errors propagates, which is the bug the fuzzing looks for.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
SCALAR_SIZES = {U8: 1, I8: 1, U16: 2, I16: 2, U32: 4, I32: 4, F32: 4, BOOL: 1, U64: 8, I64: 8, F64: 8}

# Kinds of fields: the width (4 or 8 bytes) and what a hostile value for it looks like.
COUNT_KINDS = ("tensor_count", "kv_count", "str_len", "array_len")
U32_KINDS = ("version", "value_type", "array_type", "n_dims", "tensor_type")
U64_KINDS = (*COUNT_KINDS, "dim", "offset")
STRUCTURAL = (*U32_KINDS, *U64_KINDS)


@dataclass(frozen=True)
class Field:
    """One field of a GGUF file: where it is, how wide, what it means; `value` for integer fields."""

    start: int
    size: int
    kind: str
    value: int = 0

    @property
    def end(self) -> int:
        return self.start + self.size


class _Walker:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.fields: list[Field] = []

    def int_field(self, kind: str, fmt: str) -> int:
        size = struct.calcsize(fmt)
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.fields.append(Field(self.pos, size, kind, value))
        self.pos += size
        return value

    def blob(self, kind: str, size: int) -> None:
        if size:
            self.fields.append(Field(self.pos, size, kind))
        self.pos += size

    def string(self, kind: str) -> None:
        self.blob(kind, self.int_field("str_len", "<Q"))

    def value(self, vtype: int) -> None:
        if vtype == STRING:
            self.string("str_bytes")
        elif vtype == ARRAY:
            elem = self.int_field("array_type", "<I")
            count = self.int_field("array_len", "<Q")
            if elem in SCALAR_SIZES:
                self.blob("array_data", count * SCALAR_SIZES[elem])
            else:
                for _ in range(count):
                    self.value(elem)
        else:
            self.blob("scalar", SCALAR_SIZES[vtype])


def layout(data: bytes) -> list[Field]:
    """Every field of a well-formed GGUF v3 file, in file order (raises on a malformed file)."""
    w = _Walker(data)
    w.blob("magic", 4)
    w.int_field("version", "<I")
    n_tensors = w.int_field("tensor_count", "<Q")
    n_kv = w.int_field("kv_count", "<Q")
    alignment = 32
    for _ in range(n_kv):
        key_start = w.pos
        w.string("key")
        key = data[key_start + 8 : w.pos]
        vtype = w.int_field("value_type", "<I")
        if key == b"general.alignment" and vtype == U32:
            (alignment,) = struct.unpack_from("<I", data, w.pos)
            w.fields.append(Field(w.pos, 4, "alignment", alignment))
            w.pos += 4
        else:
            w.value(vtype)
    for _ in range(n_tensors):
        w.string("tensor_name")
        n_dims = w.int_field("n_dims", "<I")
        for _ in range(n_dims):
            w.int_field("dim", "<Q")
        w.int_field("tensor_type", "<I")
        w.int_field("offset", "<Q")
    data_start = -(-w.pos // alignment) * alignment
    w.blob("padding", data_start - w.pos)
    w.blob("tensor_data", len(data) - data_start)
    return w.fields


def boundaries(fields: list[Field]) -> list[int]:
    """Every offset where one field ends and the next begins, plus the ends: the places to cut a file."""
    points = {0}
    for f in fields:
        points.add(f.start)
        points.add(f.end)
    return sorted(points)


def hostile_values(f: Field, file_size: int) -> list[int]:
    """Integer values that break parsers for this kind of field."""
    width = 8 * f.size
    top = (1 << width) - 1
    left = max(file_size - f.end, 0)
    common = [0, 1, 2, 3, 7, f.value + 1, max(f.value - 1, 0), 2 * f.value + 1, 255, 256, 1 << 16]
    common += [1 << (width // 2), 1 << (width - 1), top, top - 1, (1 << 31) - 1, 1 << 31, left, left + 1]
    if f.kind in ("value_type", "array_type"):
        common += list(range(14)) + [99]
    if f.kind == "tensor_type":
        common += [0, 1, 2, 8, 30, 34, 35, 36, 37, 38, 39, 40, 41]
    if f.kind == "n_dims":
        common += [4, 5, 8, 64]
    if f.kind == "dim":
        common += [1 << 31, 1 << 32, 1 << 62, 1 << 63, 128, 256, 1024]
    if f.kind == "offset":
        common += [f.value + 32, f.value - 32 if f.value >= 32 else 32, f.value + 16, file_size, 1 << 62]
    if f.kind == "alignment":
        common += [0, 1, 3, 16, 48, 64, 4096, 1 << 30, 1 << 31]
    return [v & top for v in common]


def set_int(data: bytearray, f: Field, value: int) -> None:
    data[f.start : f.end] = (value & ((1 << (8 * f.size)) - 1)).to_bytes(f.size, "little")


@dataclass
class Mutation:
    """A replayable edit: replace bytes at `at` with `data`, insert or delete, or cut the file."""

    op: str  # "set" | "insert" | "delete" | "truncate"
    at: int
    data: bytes = b""
    length: int = 0

    def apply(self, buf: bytearray) -> bytearray:
        if self.op == "set":
            buf[self.at : self.at + len(self.data)] = self.data
        elif self.op == "insert":
            buf[self.at : self.at] = self.data
        elif self.op == "delete":
            del buf[self.at : self.at + self.length]
        elif self.op == "truncate":
            del buf[self.at :]
        else:
            raise ValueError(f"unknown mutation {self.op!r}")
        return buf

    def to_json(self) -> dict[str, object]:
        return {"op": self.op, "at": self.at, "data": self.data.hex(), "length": self.length}

    @classmethod
    def from_json(cls, obj: dict[str, object]) -> Mutation:
        return cls(str(obj["op"]), int(obj["at"]), bytes.fromhex(str(obj["data"])), int(obj["length"]))


Choose = Callable[[int], int]  # choose(n) -> an index in range(n); hypothesis or random drive it


def random_mutation(data: bytes, fields: list[Field], choose: Choose) -> Mutation:
    """One mutation drawn through `choose`: mostly structural fields, also cuts, flips and splices."""
    strategy = choose(6)
    if strategy <= 2:  # a structural field gets a hostile value
        kinds = sorted({f.kind for f in fields if f.kind in STRUCTURAL or f.kind == "alignment"})
        kind = kinds[choose(len(kinds))]
        candidates = [f for f in fields if f.kind == kind]
        f = candidates[choose(len(candidates))]
        values = hostile_values(f, len(data))
        value = values[choose(len(values))]
        return Mutation("set", f.start, value.to_bytes(f.size, "little"))
    points = boundaries(fields)
    if strategy == 3:  # cut at a region boundary (or one byte either side)
        point = points[choose(len(points))] + (choose(3) - 1)
        return Mutation("truncate", min(max(point, 0), len(data)))
    header_end = next((f.start for f in fields if f.kind == "tensor_data"), len(data))
    if strategy == 4:  # flip a byte of the header
        at = choose(max(header_end, 1))
        return Mutation("set", at, bytes([data[at] ^ (1 + choose(255))]))
    f = fields[choose(len(fields))]  # splice: duplicate or delete a whole field
    if choose(2):
        return Mutation("insert", f.start, data[f.start : f.end][:4096])
    return Mutation("delete", f.start, length=f.size)


def mutate(data: bytes, choose: Choose, count: int) -> tuple[bytes, list[Mutation]]:
    """Apply `count` mutations in turn (each on the layout of the original file, clamped to the buffer)."""
    fields = layout(data)
    buf = bytearray(data)
    done = []
    for _ in range(count):
        m = random_mutation(data, fields, choose)
        if m.at > len(buf):
            continue
        buf = m.apply(buf)
        done.append(m)
    return bytes(buf), done


def rng_choose(rng: random.Random) -> Choose:
    return lambda n: rng.randrange(n)


def check_file(path: Path) -> str:
    """Run a file through the reader, size checks, config, inventory, loader and tokenizer.

    Returns "rejected: <error class>" for the engine's own one-line errors, "loaded" when everything accepted
    the file. Any other exception propagates: that is a bug.
    """
    from engine.config import ModelConfig
    from engine.errors import EngineError
    from engine.gguf_reader import read_gguf
    from engine.loader import check_tensors, inventory_problems, load_file
    from engine.tokenizer import Tokenizer

    try:
        gguf = read_gguf(path)
        for strict in (False, True):
            check_tensors(gguf, strict)
        config = ModelConfig.from_metadata(gguf.metadata, gguf.tensors, gguf.alignment)
        inventory_problems(config, gguf.tensors)
        model_file = load_file(path)
        Tokenizer.from_metadata(model_file.gguf.metadata)
    except EngineError as exc:
        message = str(exc)
        if "\n" in message or not message:
            raise AssertionError(f"error message is not one line: {message!r}") from exc
        return f"rejected: {type(exc).__name__}"
    return "loaded"


_KEYS = (
    "general.architecture",
    "general.alignment",
    "general.file_type",
    "bitnet-b1.58.block_count",
    "bitnet-b1.58.embedding_length",
    "bitnet-b1.58.attention.head_count",
    "tokenizer.ggml.model",
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.merges",
    "k",
)
_NAMES = ("token_embd.weight", "output_norm.weight", "blk.0.attn_q.weight", "blk.0.attn_norm.weight", "t")
_DIMS = (1, 2, 4, 32, 128, 256, 1024, 0, 1 << 31, 1 << 32, 1 << 62, (1 << 64) - 1)
_TENSOR_TYPES = (0, 1, 30, 34, 35, 36, 2, 38, 39, 99)
_STRINGS = (b"", b"bitnet-b1.58", b"bitnet", b"gpt2", b"\xff\xfe", b"a" * 40)


def _u32(v: int) -> bytes:
    return (v & 0xFFFFFFFF).to_bytes(4, "little")


def _u64(v: int) -> bytes:
    return (v & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little")


def _lie(choose: Choose, true: int) -> int:
    """Usually the true count or length; sometimes a hostile one."""
    options = (true, true, true, true, true + 1, max(true - 1, 0), 0, 1 << 31, 1 << 40, (1 << 64) - 1)
    return options[choose(len(options))]


def _gstr(choose: Choose, raw: bytes) -> bytes:
    return _u64(_lie(choose, len(raw))) + raw


def _value(choose: Choose, vtype: int, depth: int) -> bytes:
    if vtype == STRING:
        return _gstr(choose, _STRINGS[choose(len(_STRINGS))])
    if vtype == ARRAY:
        elem = (U8, I32, F32, BOOL, STRING, ARRAY, U64, 13)[choose(8)]
        if depth > 2 and elem == ARRAY:
            elem = U8
        count = choose(5)
        body = b"".join(_value(choose, elem, depth + 1) for _ in range(count)) if elem != 13 else b""
        return _u32(elem) + _u64(_lie(choose, count)) + body
    size = SCALAR_SIZES.get(vtype, 4)
    return bytes(choose(256) for _ in range(size))


def build_random_gguf(choose: Choose) -> bytes:
    """A GGUF file assembled field by field, each field usually plausible and sometimes hostile."""
    kvs = []
    for _ in range(choose(6)):
        key = _KEYS[choose(len(_KEYS))].encode()
        vtype = (U8, U32, I32, F32, BOOL, STRING, ARRAY, U64, F64, 13)[choose(10)]
        kvs.append(_gstr(choose, key) + _u32(vtype) + _value(choose, vtype, 0))
    infos = []
    offset = 0
    sizes = []
    for _ in range(choose(5)):
        n_dims = (1, 1, 2, 2, 3, 0, 5)[choose(7)]
        dims = [_DIMS[choose(len(_DIMS))] for _ in range(n_dims)]
        ttype = _TENSOR_TYPES[choose(len(_TENSOR_TYPES))]
        off = (offset, offset, offset, offset + 32, max(offset - 32, 0), offset + 1, 1 << 62)[choose(7)]
        name = _NAMES[choose(len(_NAMES))].encode()
        shape = b"".join(_u64(d) for d in dims)
        infos.append(_gstr(choose, name) + _u32(n_dims) + shape + _u32(ttype) + _u64(off))
        size = 32 * (1 + choose(64))
        sizes.append(size)
        offset += size
    magic = (b"GGUF", b"GGUF", b"GGUF", b"GGML")[choose(4)]
    version = (3, 3, 3, 2, 4)[choose(5)]
    head = magic + _u32(version) + _u64(_lie(choose, len(infos))) + _u64(_lie(choose, len(kvs)))
    head += b"".join(kvs) + b"".join(infos)
    head += bytes(-len(head) % 32)
    data_len = (sum(sizes), sum(sizes), max(sum(sizes) - 1, 0), sum(sizes) + 31, 0)[choose(5)]
    return head + bytes(choose(256) for _ in range(min(data_len, 64))) + bytes(max(data_len - 64, 0))
