"""Upstream llama.cpp (through llama-cpp-python, the optional `parity` extra): whether it is installed, how it
is opened, and the file it reads.

Upstream runs the `bitnet` architecture (SiLU-gated FFN) with TQ1_0/TQ2_0 weights, so the model given to it is
the user's file when it already is such a file with a LLaMA-3 pre-tokenizer key, else a converted copy written
beside it (`<name>.llamacpp.gguf`): `tokenizer.ggml.pre = "llama-bpe"` added (without it llama.cpp splits text
with its GPT-2 "default" regex), and I2_S weights rewritten as TQ2_0 (the per-tensor scale stored as each
block's fp16 scale). The engine runs the same file llama.cpp runs.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.constants import (
    ARCH_BITNET,
    FORMAT_I2S,
    FORMAT_TQ1_0,
    FORMAT_TQ2_0,
    LAYER_MATRICES,
    FileType,
    GGMLType,
)
from engine.formats import FORMATS
from engine.gguf_reader import GGUFFile, read_gguf
from engine.gguf_writer import TensorSpec, Typed, write_gguf
from engine.loader import load_file
from harness.errors import HarnessError

PRE_KEY = "tokenizer.ggml.pre"
PRE_LLAMA3 = "llama-bpe"
CONVERTED_SUFFIX = ".llamacpp.gguf"
LLAMA_CPP_FORMATS = (FORMAT_TQ2_0, FORMAT_TQ1_0)


def llama_cpp_missing() -> str | None:
    """None when llama_cpp imports, else the reason it cannot be used (one line)."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError as exc:
        return f"llama_cpp is not importable ({exc}); install the extra: pip install '.[parity]'"
    except OSError as exc:  # a wheel whose shared library does not load on this machine
        return f"llama_cpp's shared library does not load: {exc}"
    return None


def reference_version() -> str:
    """`llama-cpp-python <version>`: the package that built and vendors the llama.cpp it runs."""
    try:
        return f"llama-cpp-python {importlib.metadata.version('llama_cpp_python')}"
    except importlib.metadata.PackageNotFoundError:
        return "llama-cpp-python (version unknown)"


def open_llama(path: Path, threads: int, **settings: Any) -> Any:
    """llama_cpp.Llama on `path`: CPU only, quiet, `threads` for decode and batches, plus `settings`;
    a missing extra or a file it refuses becomes a one-line HarnessError."""
    reason = llama_cpp_missing()
    if reason is not None:
        raise HarnessError(reason)
    from llama_cpp import Llama

    try:
        return Llama(
            model_path=str(path),
            n_threads=threads,
            n_threads_batch=threads,
            n_gpu_layers=0,
            verbose=False,
            **settings,
        )
    except (ValueError, RuntimeError) as exc:
        raise HarnessError(f"llama.cpp could not load {path}: {exc}") from None


def llama_detokenize(llm: Any, ids: Sequence[int]) -> str:
    """Text of `ids` by llama.cpp's own detokenizer (`llama_detokenize`, special tokens not rendered).

    llama-cpp-python's `Llama.detokenize` applies a leading-space rule of its own (one space dropped only
    after a BOS); llama.cpp drops one leading space from the first token's piece when the vocabulary
    prefixes a space (SentencePiece), and for BPE vocabularies removes spaces before punctuation.
    """
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    tokens = (llama_cpp.llama_token * len(ids))(*ids)
    size = 64 + 16 * len(ids)
    while True:
        buffer = ctypes.create_string_buffer(size)
        n = llama_cpp.llama_detokenize(vocab, tokens, len(ids), buffer, size, False, False)
        if n >= 0:
            return buffer.raw[:n].decode("utf-8", errors="replace")
        size = -n


@dataclass
class ReferenceFile:
    """The file both implementations run, and what was changed to make it one llama.cpp reads correctly."""

    source: Path
    path: Path
    converted: bool
    changes: list[str] = field(default_factory=list)


def _weight_format(gguf: GGUFFile) -> str:
    meta = gguf.metadata
    fmt = meta.get("bitnet_harness.format")
    if isinstance(fmt, str):
        return fmt
    return str(load_file(gguf.path).config.weight_format)


def needed_changes(gguf: GGUFFile) -> list[str]:
    """What must change for llama.cpp to run this file as the engine does (empty: use it as it is)."""
    meta = gguf.metadata
    arch = meta.get("general.architecture")
    if arch != ARCH_BITNET:
        raise HarnessError(
            f"llama.cpp needs a {ARCH_BITNET!r}-architecture model (SiLU FFN); this file is {arch!r}, "
            "which upstream llama.cpp does not run (squared-ReLU bitnet-b1.58 exists only in bitnet.cpp)"
        )
    changes = []
    if meta.get("tokenizer.ggml.model") == "gpt2" and meta.get(PRE_KEY) is None:
        changes.append(f"added {PRE_KEY} = {PRE_LLAMA3!r} (llama.cpp's LLaMA-3 pre-tokenizer regex)")
    fmt = _weight_format(gguf)
    if fmt == FORMAT_I2S:
        changes.append("I2_S weights rewritten as TQ2_0 (per-tensor float32 scale -> fp16 block scales)")
    elif fmt not in LLAMA_CPP_FORMATS:
        raise HarnessError(
            f"llama.cpp runs tq2_0, tq1_0 and i2s (converted) files; this file's weights are {fmt}"
        )
    return changes


def _copy_value(value: object, value_type: int) -> object:
    if isinstance(value, list):
        return value
    return Typed(value_type, value)


def _i2s_to_tq2_0(raw: np.ndarray, rows: int, cols: int) -> np.ndarray:
    values, scale = FORMATS[FORMAT_I2S].unpack(raw, rows, cols)
    blocks = np.full((rows, cols // 256), float(np.asarray(scale).reshape(-1)[0]), np.float64)
    return FORMATS[FORMAT_TQ2_0].pack(values, blocks)


def write_converted(gguf: GGUFFile, out: Path) -> None:
    """Copy `gguf` to `out` with the pre-tokenizer key set and any I2_S matrix rewritten as TQ2_0."""
    metadata: dict[str, object] = {}
    for key, value in gguf.metadata.items():
        if key == "general.alignment":
            continue
        metadata[key] = _copy_value(value, gguf.metadata_types[key])
    if gguf.metadata.get("tokenizer.ggml.model") == "gpt2":
        metadata.setdefault(PRE_KEY, PRE_LLAMA3)
    converting = _weight_format(gguf) == FORMAT_I2S
    if converting:
        metadata["general.file_type"] = Typed(4, int(FileType.MOSTLY_TQ2_0))  # 4 = UINT32
        if "bitnet_harness.format" in metadata:
            metadata["bitnet_harness.format"] = FORMAT_TQ2_0
    matrices = {f".{name}.weight" for name in LAYER_MATRICES}
    specs = []
    for t in gguf.tensors.values():
        if converting and t.ggml_type == GGMLType.I2_S and any(t.name.endswith(m) for m in matrices):
            rows, cols = t.shape
            nbytes = FORMATS[FORMAT_TQ2_0].expected_nbytes(rows, cols)
            specs.append(
                TensorSpec(
                    t.name,
                    int(GGMLType.TQ2_0),
                    t.shape,
                    nbytes,
                    lambda t=t, r=rows, c=cols: _i2s_to_tq2_0(t.data, r, c),
                )
            )
        else:
            specs.append(TensorSpec(t.name, t.ggml_type, t.shape, t.nbytes, lambda t=t: np.asarray(t.data)))
    write_gguf(out, metadata, specs, alignment=gguf.alignment)


def reference_file(source: Path) -> ReferenceFile:
    """The file to compare on: `source` itself, or its converted copy (rewritten when older than `source`)."""
    source = Path(source)
    if not source.is_file():
        raise HarnessError(f"model file {source} does not exist or is not a file")
    gguf = read_gguf(source)
    changes = needed_changes(gguf)
    if not changes:
        return ReferenceFile(source, source, False)
    out = source.with_name(source.name.removesuffix(".gguf") + CONVERTED_SUFFIX)
    if not out.is_file() or out.stat().st_mtime < source.stat().st_mtime:
        write_converted(gguf, out)
    return ReferenceFile(source, out, True, changes)
