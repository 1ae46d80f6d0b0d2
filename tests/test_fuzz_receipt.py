"""Hostile receipt files through `verify-receipt`: exit 2 with a one-line reason (1 for a readable receipt
that fails the schema), never a traceback, hang or memory blow-up.

Covers nesting 10,000 deep, a 100 MB string, NaN/Infinity, duplicate keys, lone surrogates, huge arrays,
invalid UTF-8, a directory, a FIFO, a device, a missing file, and every leaf of a valid receipt replaced by a
value of the wrong type (hypothesis, fixed budget, derandomized).
"""

import copy
import json
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from harness.cli import app
from harness.receipts.files import MAX_RECEIPT_BYTES, MAX_RECEIPT_VALUES
from tests.receipt_factory import make_receipt

MAX_SECONDS = 5.0
MAX_TRACED = 256 * 2**20


def _receipt_text(edit=None) -> str:
    receipt = make_receipt()
    if edit is not None:
        edit(receipt)
    return json.dumps(receipt)


def _set(path: tuple, value):
    def edit(receipt):
        node = receipt
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


HOSTILE = {
    "nesting 10000 deep (arrays)": ("[" * 10_000 + "]" * 10_000, "nests deeper"),
    "nesting 10000 deep (objects)": ('{"a":' * 10_000 + "1" + "}" * 10_000, "nests deeper"),
    "nesting 40 deep inside a receipt": (
        _receipt_text(_set(("environment", "variables"), json.loads('{"a":' * 40 + "1" + "}" * 40))),
        "nests deeper",
    ),
    "NaN": ('{"schema_version": "1.0.0", "x": NaN}', "not valid JSON"),
    "Infinity": ('{"schema_version": "1.0.0", "x": Infinity}', "not valid JSON"),
    "-Infinity": ('{"schema_version": "1.0.0", "x": -Infinity}', "not valid JSON"),
    "1e999": ('{"schema_version": "1.0.0", "x": 1e999}', "overflows"),
    "duplicate top-level key": ('{"schema_version": "1.0.0", "schema_version": "1.0.0"}', "duplicate key"),
    "duplicate nested key": (
        _receipt_text()[:-1] + ', "environment": {"a": 1, "a": 2}}',
        "duplicate key",
    ),
    "lone surrogate": (_receipt_text().replace("models/tiny.gguf", "models/\\ud800.gguf"), "surrogate"),
    "invalid UTF-8": (b'{"schema_version": "1.0.0", "x": "\xc3\x28"}', "not UTF-8"),
    "overlong UTF-8": (b'{"schema_version": "1.0.0", "x": "\xc0\xaf"}', "not UTF-8"),
    "UTF-8 BOM": ("\ufeff" + _receipt_text(), "not valid JSON"),
    "UTF-16": (_receipt_text().encode("utf-16"), "not UTF-8"),
    "empty file": ("", "not valid JSON"),
    "array at the top": ("[1, 2, 3]", "not an object"),
    "string at the top": ('"receipt"', "not an object"),
    "null at the top": ("null", "not an object"),
    "no schema_version": ("{}", "schema_version"),
    "wrong schema_version": (_receipt_text(_set(("schema_version",), "9.9.9")), "schema_version"),
    "schema_version a list": (_receipt_text(_set(("schema_version",), ["1.0.0"])), "schema_version"),
    "huge array (past the value cap)": (
        '{"schema_version": "1.0.0", "a": [' + "0," * MAX_RECEIPT_VALUES + "0]}",
        "JSON values",
    ),
    "binary garbage": (bytes(range(256)) * 64, "not"),
}


def _invoke(path: Path, *extra: str, trace: bool = True):
    """verify-receipt in-process, checked for time and (with `trace`) traced memory."""
    if trace:
        tracemalloc.start()
    start = time.perf_counter()
    try:
        result = CliRunner().invoke(app, ["verify-receipt", "--path", str(path), *extra])
    finally:
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1] if trace else 0
        if trace:
            tracemalloc.stop()
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert seconds < MAX_SECONDS, f"{seconds:.1f} s"
    assert peak < MAX_TRACED, f"{peak / 2**20:.0f} MB"
    return result


def _assert_unusable(result, reason: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert reason in lines[0], lines[0]


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_receipt_files_exit_2_with_a_reason(tmp_path, case):
    content, reason = HOSTILE[case]
    path = tmp_path / "r.json"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    _assert_unusable(_invoke(path), reason)


def test_100_mb_string_is_refused_before_reading(tmp_path):
    """A sparse file: 100 MB of nothing between the quotes, refused by its size without being read."""
    path = tmp_path / "big.json"
    with path.open("wb") as fh:
        fh.write(b'{"schema_version": "1.0.0", "x": "')
        fh.seek(100 * 2**20)
        fh.write(b'"}')
    _assert_unusable(_invoke(path), f"larger than {MAX_RECEIPT_BYTES} bytes")


def test_largest_readable_string_is_bounded(tmp_path):
    """Just under the size cap, 15 MB of 'a' in a real receipt field: read, judged invalid, bounded."""
    path = tmp_path / "long.json"
    path.write_text(_receipt_text(_set(("model", "path"), "a" * (15 * 2**20))))
    result = _invoke(path)
    assert result.exit_code == 1 and "content_digest" in result.stdout


@pytest.mark.slow
def test_large_array_of_wrong_types_is_bounded(tmp_path):
    """20,000 schema errors in one field: 100 listed, the rest counted, within the time and memory caps."""
    path = tmp_path / "arr.json"
    path.write_text(_receipt_text(_set(("kernels",), [0] * 20_000)))
    result = _invoke(path)
    assert result.exit_code == 1 and "FAIL schema" in result.stdout
    assert "more schema errors not listed" in result.stdout


def test_directory_missing_and_device(tmp_path):
    _assert_unusable(_invoke(tmp_path), "is a directory")
    _assert_unusable(_invoke(tmp_path / "missing.json"), "cannot read")
    _assert_unusable(_invoke(Path("/dev/null")), "not a regular file")
    link = tmp_path / "zero.json"
    link.symlink_to("/dev/zero")
    _assert_unusable(_invoke(link), "not a regular file")


def test_fifo_does_not_hang(tmp_path):
    """Opening a FIFO for reading blocks until a writer comes; the type is checked without blocking."""
    fifo = tmp_path / "r.json"
    os.mkfifo(fifo)
    script = "from harness.cli import main; main()"
    argv = [sys.executable, "-c", script, "verify-receipt", "--path", str(fifo)]
    start = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert time.monotonic() - start < 30
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
    assert "not a regular file" in proc.stderr and "Traceback" not in proc.stderr


def _leaves(obj, path=()):
    """Every position in the receipt: (path, value) for containers and scalars alike."""
    if path:
        yield path
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _leaves(value, (*path, key))
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            yield from _leaves(value, (*path, index))


LEAVES = list(_leaves(make_receipt()))
WRONG = [None, "x", 10**30, -(10**30), -1, 1.5, True, [], [1, "a"], {}, {"a": None}, "\u202e", "a" * 10_000]


@settings(
    max_examples=80,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(path=st.sampled_from(LEAVES), value=st.sampled_from([*WRONG, "<delete>"]))
def test_any_field_replaced_by_a_wrong_type(tmp_path, path, value):
    """Exit 1 with the failures listed (or 2 when the schema version itself is gone), never a crash."""
    receipt = make_receipt()
    node = receipt
    for key in path[:-1]:
        node = node[key]
    if value == "<delete>":
        del node[path[-1]]
    else:
        node[path[-1]] = copy.deepcopy(value)
    file = tmp_path / "r.json"
    file.write_text(json.dumps(receipt))
    result = _invoke(file, trace=False)
    if path == ("schema_version",):
        _assert_unusable(result, "schema_version")
        return
    if receipt == make_receipt():  # the same value written back: still valid
        assert result.exit_code == 0
        return
    assert result.exit_code == 1, (path, value, result.stdout, result.stderr)
    assert "FAIL " in result.stdout and "INVALID" in result.stdout
