"""Hostile and broken GGUF files: each fails fast with a one-line GGUFFormatError, and the CLI exits 2.

Files are built byte by byte so every field can lie. Each case is bounded: under a second, a few MB at most.
"""

import re
import struct
import subprocess
import sys
import time
import tracemalloc

import pytest
from typer.testing import CliRunner

from engine.errors import EngineError, GGUFFormatError
from engine.gguf_reader import read_gguf
from engine.loader import load_file
from harness.cli import app

U8, U32, F32, STRING, ARRAY, U64 = 0, 4, 6, 8, 9, 10


def u32(v):
    return struct.pack("<I", v)


def u64(v):
    return struct.pack("<Q", v)


def gstr(text, length=None):
    data = text.encode() if isinstance(text, str) else text
    return u64(len(data) if length is None else length) + data


def kv(key, vtype, payload):
    return gstr(key) + u32(vtype) + payload


def info(name, dims, ttype=0, offset=0, n_dims=None):
    ne = b"".join(u64(d) for d in dims)
    return gstr(name) + u32(len(dims) if n_dims is None else n_dims) + ne + u32(ttype) + u64(offset)


def gguf(kvs=(), infos=(), data=b"", n_tensors=None, n_kv=None, magic=b"GGUF", version=3, pad=True):
    head = magic + u32(version) + u64(len(infos) if n_tensors is None else n_tensors)
    head += u64(len(kvs) if n_kv is None else n_kv) + b"".join(kvs) + b"".join(infos)
    if pad:
        head += bytes(-len(head) % 32)
    return head + data


def valid_file():
    kvs = [
        kv("general.architecture", STRING, gstr("bitnet")),
        kv("n", U32, u32(3)),
        kv("arr", ARRAY, u32(STRING) + u64(2) + gstr("ab") + gstr("c")),
    ]
    infos = [info("a", [4], 0, 0), info("b", [8, 2], 1, 32)]
    return gguf(kvs, infos, bytes(16) + bytes(16) + bytes(32))


def nested(depth):
    payload = u32(U8) + u64(1) + b"\x01"
    for _ in range(depth):
        payload = u32(ARRAY) + u64(1) + payload
    return payload


HOSTILE = {
    "wrong magic": (gguf(magic=b"GGML") + bytes(32), "not a GGUF file"),
    "version 2": (gguf(version=2) + bytes(32), "version 2 is not supported"),
    "version 4": (gguf(version=4) + bytes(32), "version 4 is not supported"),
    "2^40 tensors": (gguf(n_tensors=2**40) + bytes(64), "claims 1099511627776 tensors"),
    "2^40 metadata keys": (gguf(n_kv=2**40) + bytes(64), "1099511627776 metadata keys"),
    "2^64-1 tensors": (gguf(n_tensors=2**64 - 1) + bytes(64), "claims 18446744073709551615 tensors"),
    "huge key length": (gguf([gstr("k", 2**62)], n_kv=1), "length 4611686018427387904 exceeds"),
    "huge string value": (gguf([kv("k", STRING, gstr("v", 2**63))]), "length 9223372036854775808 exceeds"),
    "huge array": (
        gguf([kv("k", ARRAY, u32(U32) + u64(2**62))]),
        "claims 4611686018427387904 array elements",
    ),
    "huge string array": (gguf([kv("k", ARRAY, u32(STRING) + u64(2**40))]), "claims 1099511627776 array"),
    "huge nested array": (gguf([kv("k", ARRAY, u32(ARRAY) + u64(2**40))]), "claims 1099511627776 array"),
    "nesting too deep": (gguf([kv("k", ARRAY, nested(20))]), "nests arrays deeper than"),
    "unknown value type": (gguf([kv("k", 99, u32(0))]), "unknown value type id 99"),
    "unknown array element type": (gguf([kv("k", ARRAY, u32(77) + u64(1) + bytes(8))]), "element type id 77"),
    "key not utf-8": (gguf([gstr(b"\xff\xfe") + u32(U32) + u32(1)]), "not UTF-8"),
    "token not utf-8": (
        gguf([kv("tokens", ARRAY, u32(STRING) + u64(2) + gstr("a") + gstr(b"\xc3"))]),
        "string #1 of 'tokens' is not UTF-8",
    ),
    "token past end": (
        gguf([kv("tokens", ARRAY, u32(STRING) + u64(2) + gstr("a") + gstr("b", 40))], pad=False),
        "string #1 of 'tokens' runs past the end",
    ),
    "duplicate key": (gguf([kv("k", U32, u32(1)), kv("k", U32, u32(2))]), "duplicate metadata key 'k'"),
    "alignment 0": (
        gguf([kv("general.alignment", U32, u32(0))]),
        "general.alignment 0 is not a power of two",
    ),
    "alignment 48": (gguf([kv("general.alignment", U32, u32(48))]), "general.alignment 48"),
    "alignment string": (
        gguf([kv("general.alignment", STRING, gstr("32"))]),
        "general.alignment has type STRING",
    ),
    "5 dims": (gguf(infos=[info("t", [1, 1, 1, 1, 1])], data=bytes(32)), "'t' has 5 dimensions"),
    "0 dims": (gguf(infos=[info("t", [])], data=bytes(32)), "'t' has 0 dimensions"),
    "2^32 dims": (gguf(infos=[info("t", [1], n_dims=2**32 - 1)], data=bytes(32)), "4294967295 dimensions"),
    "zero dim": (gguf(infos=[info("t", [4, 0])], data=bytes(32)), "dimension 0"),
    "negative dim": (gguf(infos=[info("t", [4, 2**64 - 1])], data=bytes(32)), "dimension -1"),
    "2^62 elements": (gguf(infos=[info("t", [2**31, 2**31], 36)], data=bytes(64)), "past the end"),
    "2^62 f32 elements": (gguf(infos=[info("t", [2**31, 2**31])], data=bytes(64)), "past the end"),
    "element overflow": (
        gguf(infos=[info("t", [2**32, 2**32, 2**32])], data=bytes(32)),
        "element count overflows",
    ),
    "unknown tensor type": (
        gguf(infos=[info("w.weight", [4], 77)], data=bytes(32)),
        "'w.weight'.*type id 77",
    ),
    "unsupported Q4_0": (gguf(infos=[info("q", [32], 2)], data=bytes(32)), r"'q'.*type id 2 \(Q4_0\)"),
    "offset past end": (gguf(infos=[info("t", [4], 0, 64)], data=bytes(32)), "past the end"),
    "data past end": (gguf(infos=[info("t", [64])], data=bytes(32)), "needs at least 256 bytes"),
    "i2s data past end": (gguf(infos=[info("t", [256, 256], 36)], data=bytes(1024)), "needs at least"),
    "misaligned offset": (gguf(infos=[info("t", [4], 0, 4)], data=bytes(64)), "offset 4 is not a multiple"),
    "duplicate tensor": (
        gguf(infos=[info("t", [4], 0, 0), info("t", [4], 0, 32)], data=bytes(64)),
        "duplicate tensor name 't'",
    ),
    "same offset": (gguf(infos=[info("a", [4]), info("b", [4])], data=bytes(64)), "'a' and 'b' overlap"),
    "overlap": (
        gguf(infos=[info("a", [16], 0, 0), info("b", [4], 0, 32)], data=bytes(64)),
        r"'a' \(64 bytes at offset \d+\) overlaps tensor 'b'",
    ),
    "empty file": (b"", "shorter than a GGUF header"),
    "header only": (b"GGUF" + u32(3), "shorter than a GGUF header"),
}


def _bounded_read(path):
    """Read the file, returning (exception, seconds, peak traced bytes)."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        read_gguf(path)
    except GGUFFormatError as exc:
        error = exc
    else:
        error = None
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return error, seconds, peak


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_file_fails_fast_with_one_line(tmp_path, case):
    content, match = HOSTILE[case]
    path = tmp_path / "hostile.gguf"
    path.write_bytes(content)
    error, seconds, peak = _bounded_read(path)
    assert error is not None, f"{case}: no error"
    message = str(error)
    assert "\n" not in message and message.startswith(str(path))
    assert re.search(match, message), message
    assert seconds < 1.0
    assert peak < 4 * 2**20


def test_valid_file_parses(tmp_path):
    """The file the truncation test cuts up is itself valid."""
    path = tmp_path / "ok.gguf"
    path.write_bytes(valid_file())
    f = read_gguf(path)
    assert f.metadata["arr"] == ["ab", "c"] and f.tensors["b"].shape == (2, 8)


def test_truncated_anywhere_is_a_format_error(tmp_path):
    content = valid_file()
    path = tmp_path / "cut.gguf"
    start = time.perf_counter()
    for length in range(len(content)):
        path.write_bytes(content[:length])
        with pytest.raises(GGUFFormatError) as info:
            read_gguf(path)
        assert "\n" not in str(info.value)
    assert time.perf_counter() - start < 2.0


def test_missing_file_and_folder_are_engine_errors(tmp_path):
    with pytest.raises(EngineError, match="cannot read"):
        read_gguf(tmp_path / "nope.gguf")
    with pytest.raises(EngineError, match="not a regular file"):
        read_gguf(tmp_path)


def test_loader_refuses_hostile_files_too(tmp_path):
    path = tmp_path / "hostile.gguf"
    path.write_bytes(HOSTILE["2^40 tensors"][0])
    with pytest.raises(GGUFFormatError, match="claims"):
        load_file(path)


@pytest.mark.parametrize("case", list(HOSTILE))
def test_cli_exits_2_with_one_line(tmp_path, case):
    path = tmp_path / "hostile.gguf"
    path.write_bytes(HOSTILE[case][0])
    result = CliRunner().invoke(app, ["model", "inspect", str(path)])
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr


def test_installed_command_exits_2_without_traceback(tmp_path):
    path = tmp_path / "hostile.gguf"
    path.write_bytes(HOSTILE["2^40 tensors"][0])
    script = "from harness.cli import main; main()"
    argv = [sys.executable, "-c", script, "model", "inspect", str(path)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ")
    assert "Traceback" not in proc.stderr
