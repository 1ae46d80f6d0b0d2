"""Canonical JSON, digests, token digests, atomic receipt writes, safe loading and host facts."""

import hashlib
import json
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from harness.errors import HarnessError
from harness.machine import host
from harness.receipts.digest import canonical_json, content_digest, finalize, token_digest
from harness.receipts.files import MAX_DEPTH, load_receipt, parse_timestamp, receipt_filename, write_receipt
from harness.receipts.schema import load_schema
from harness.receipts.summary import decode_tokens_per_second, percentiles
from tests.receipt_factory import make_receipt, raw_receipt


def test_canonical_json_is_sorted_compact_utf8():
    assert canonical_json({"b": 1, "a": [1.5, "é"], "c": {"z": None, "y": True}}) == (
        '{"a":[1.5,"é"],"b":1,"c":{"y":true,"z":null}}'.encode()
    )


def test_canonical_json_refuses_nan():
    with pytest.raises(HarnessError):
        canonical_json({"x": float("nan")})


def test_content_digest_ignores_key_order_and_its_own_field():
    receipt = raw_receipt()
    reordered = dict(reversed(list(receipt.items())))
    assert content_digest(receipt) == content_digest(reordered)
    done = finalize(receipt)
    assert done["content_digest"] == hashlib.sha256(canonical_json(receipt)).hexdigest()
    assert finalize({**done, "content_digest": "0" * 64}) == done


def test_content_digest_changes_with_any_value():
    receipt = make_receipt()
    receipt["phases"]["benchmark"]["repetitions"][0]["decode_seconds"][0] += 1e-9
    assert content_digest(receipt) != receipt["content_digest"]


def test_token_digest_is_little_endian_int32():
    ids = [1, 258, 128000]
    assert token_digest(ids) == hashlib.sha256(struct.pack("<3i", *ids)).hexdigest()
    assert token_digest(np.array(ids, dtype=np.int64)) == token_digest(ids)
    assert token_digest([]) == hashlib.sha256(b"").hexdigest()


@pytest.mark.parametrize("bad", [[-1], [2**31], [1.5], [[1, 2]]])
def test_token_digest_rejects_non_token_ids(bad):
    with pytest.raises(HarnessError):
        token_digest(bad)


def test_percentiles_use_linear_interpolation():
    got = percentiles([1.0, 2.0, 3.0, 4.0])
    assert got == {"p50": 2.5, "p90": pytest.approx(3.7), "p99": pytest.approx(3.97)}
    with pytest.raises(HarnessError):
        percentiles([])


def test_decode_tokens_per_second_is_steps_over_summed_latency():
    reps = [{"decode_seconds": [0.1, 0.3]}, {"decode_seconds": [0.2]}, {"decode_seconds": []}]
    assert decode_tokens_per_second(reps) == pytest.approx(3 / 0.6)
    assert decode_tokens_per_second([{"decode_seconds": []}]) == 0.0
    with pytest.raises(HarnessError):
        decode_tokens_per_second([{"decode_seconds": [0.0]}])


def test_write_receipt_names_and_writes_atomically(tmp_path):
    receipt = make_receipt()
    path = write_receipt(receipt, tmp_path / "out")
    assert path.parent == tmp_path / "out"
    stamp, model, backend, commit = path.stem.split("_")
    assert (model, backend, commit) == ("tiny", "cpu", "0123456789")
    assert stamp.endswith("Z") and stamp[8] == "T"
    assert json.loads(path.read_text(encoding="utf-8")) == receipt
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_write_receipt_never_overwrites(tmp_path):
    receipt = make_receipt()
    first = write_receipt(receipt, tmp_path)
    before = first.read_bytes()
    with pytest.raises(Exception, match="already exists"):
        write_receipt(receipt, tmp_path)
    assert first.read_bytes() == before
    assert len(list(tmp_path.iterdir())) == 1


def test_write_receipt_refuses_invalid_or_stale(tmp_path):
    stale = make_receipt()
    stale["tokens_requested"] += 1
    with pytest.raises(HarnessError, match="stale"):
        write_receipt(stale, tmp_path)
    broken = make_receipt()
    broken["unexpected"] = 1
    with pytest.raises(HarnessError, match="schema"):
        write_receipt(broken, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_filename_without_git_or_preset():
    receipt = make_receipt()
    receipt["harness"]["git_commit"] = None
    receipt["model"]["preset"] = None
    receipt["model"]["path"] = "/models/My Model v2.gguf"
    assert receipt_filename(receipt).endswith("_My-Model-v2_cpu_nogit.json")


def _write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "r.json"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def test_load_receipt_round_trips(tmp_path):
    receipt = make_receipt()
    assert load_receipt(_write(tmp_path, json.dumps(receipt))) == receipt


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"a": NaN}', "not valid JSON"),
        ('{"a": -Infinity}', "not valid JSON"),
        ('{"a": 1e999}', "overflows"),
        ('{"a": 1, "a": 2}', "duplicate key"),
        ("[1, 2]", "not an object"),
        ("{", "not valid JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        ("[" * 100_000 + "]" * 100_000, "nests deeper"),
        ('{"a":' * (MAX_DEPTH + 1) + "1" + "}" * (MAX_DEPTH + 1), "nests deeper"),
    ],
)
def test_load_receipt_rejects_unusable_input(tmp_path, text, message):
    with pytest.raises(HarnessError, match=message):
        load_receipt(_write(tmp_path, text))


def test_load_receipt_rejects_directories_missing_and_huge_files(tmp_path, monkeypatch):
    with pytest.raises(HarnessError, match="directory"):
        load_receipt(tmp_path)
    with pytest.raises(HarnessError, match="cannot read"):
        load_receipt(tmp_path / "missing.json")
    monkeypatch.setattr("harness.receipts.files.MAX_RECEIPT_BYTES", 10)
    with pytest.raises(HarnessError, match="larger than"):
        load_receipt(_write(tmp_path, '{"a": "0123456789"}'))


def _validate_section(name: str, value: object) -> None:
    from jsonschema import Draft202012Validator

    schema = load_schema()
    sub = {"$defs": schema["$defs"], **schema["properties"][name]}
    assert list(Draft202012Validator(sub).iter_errors(value)) == []


def test_host_facts_fit_the_schema():
    facts = host.host_facts()
    _validate_section("host", facts)
    assert facts["cores"] >= 1 and facts["python"]


def _cache(root, cpu: int, index: int, level: int, kind: str, size: str, shared: str) -> None:
    folder = root / f"cpu{cpu}" / "cache" / f"index{index}"
    folder.mkdir(parents=True)
    for name, text in (("level", str(level)), ("type", kind), ("size", size), ("shared_cpu_list", shared)):
        (folder / name).write_text(text + "\n")


def test_last_level_cache_counts_each_instance_once(tmp_path, monkeypatch):
    monkeypatch.setattr(host.os, "sched_getaffinity", lambda _pid: {0, 1, 2}, raising=False)
    for cpu, shared in ((0, "0-1"), (1, "0-1"), (2, "2-3")):
        _cache(tmp_path, cpu, 0, 1, "Data", "32K", str(cpu))
        _cache(tmp_path, cpu, 1, 1, "Instruction", "32K", str(cpu))
        _cache(tmp_path, cpu, 2, 3, "Unified", "32768K", shared)
    assert host.last_level_cache_bytes(tmp_path) == 2 * 32 << 20  # two L3 slices, CPUs 0 and 1 share one
    assert host.last_level_cache_bytes(tmp_path / "absent") is None


def test_last_level_cache_of_this_host_is_plausible():
    llc = host.last_level_cache_bytes()
    assert llc is None or 1 << 16 <= llc <= 1 << 34
    assert host.host_facts()["llc_bytes"] == llc


def test_environment_facts_pick_relevant_variables(monkeypatch):
    monkeypatch.setenv("NUMBA_NUM_THREADS", "2")
    monkeypatch.setenv("BITNET_STRICT_MODE", "1")
    monkeypatch.setenv("UNRELATED_SECRET", "x")
    facts = host.environment_facts(True)
    _validate_section("environment", facts)
    assert facts["strict_loader"] is True
    assert facts["variables"]["NUMBA_NUM_THREADS"] == "2"
    assert "UNRELATED_SECRET" not in facts["variables"]


def test_harness_facts_fit_the_schema():
    _validate_section("harness", host.harness_facts("0.1.0"))


def test_git_facts_outside_a_checkout(tmp_path):
    assert host.git_facts(tmp_path) == (None, None)


def test_git_facts_name_the_harness_checkout():
    """The default root is the checkout that holds harness/ (a signature binds the receipt to this commit)."""
    from pathlib import Path

    root = Path(host.__file__).resolve().parents[2]
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    assert host.git_facts()[0] == head.stdout.strip()


def test_peak_rss_is_positive():
    assert host.peak_rss_bytes() > 1 << 20


@pytest.mark.parametrize(
    ("text", "micro"),
    [
        ("2025-01-01T00:00:00.123456789Z", 123456),
        ("2025-01-01T00:00:00.1+02:00", 100000),
        ("2025-01-01T00:00:00Z", 0),
    ],
)
def test_parse_timestamp_accepts_rfc3339(text, micro):
    assert parse_timestamp(text).microsecond == micro


@pytest.mark.parametrize("text", ["2025-01-01T00:00:00", "2025-13-01T00:00:00Z", "2025-01-01 00:00:00Z"])
def test_parse_timestamp_rejects_other_forms(text):
    with pytest.raises(HarnessError):
        parse_timestamp(text)
