"""Attested receipts: Ed25519 keys, a DSSE envelope around an in-toto Statement, and their checks.

The envelope is verified here by the harness and by another implementation (securesystemslib's DSSE
Envelope and Ed25519 key), so it is the standard format, not only one this code reads back.
"""

import base64
import hashlib
import json
import os
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey
from typer.testing import CliRunner

from engine.errors import EngineError
from harness.cli import app
from harness.errors import HarnessError
from harness.machine.host import harness_facts
from harness.receipts.files import write_receipt
from harness.receipts.signing import (
    PAYLOAD_TYPE,
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    check_signature,
    envelope_path,
    generate_keypair,
    key_id,
    load_private_key,
    load_public_key,
    pae,
    sign_receipt_file,
)
from harness.version import harness_version
from tests.archive_factory import invoke
from tests.receipt_factory import mutated


def make_receipt():
    """The factory receipt as this harness would write it: the signer vouches for its own commit."""
    return mutated(lambda r: r["harness"].update(harness_facts(harness_version())))


@pytest.fixture
def keys(tmp_path):
    return generate_keypair(tmp_path / "keys" / "signer")


@pytest.fixture
def signed(tmp_path, keys):
    receipt = write_receipt(make_receipt(), tmp_path / "r")
    return receipt, sign_receipt_file(receipt, load_private_key(keys[0]))


def _verify(*args):
    return CliRunner().invoke(app, ["verify-receipt", *map(str, args)])


def _check(receipt, public):
    body = receipt.read_bytes()
    return check_signature(receipt, body, json.loads(body), public)


def test_keygen_writes_a_private_key_only_its_owner_reads(tmp_path):
    result = CliRunner().invoke(app, ["keygen", "--out", str(tmp_path / "k")])
    assert result.exit_code == 0, result.output
    private, public = tmp_path / "k", tmp_path / "k.pub"
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    assert b"PRIVATE KEY" in private.read_bytes() and b"PUBLIC KEY" in public.read_bytes()
    assert key_id(load_public_key(public))[:16] in result.output
    before = private.read_bytes()
    again = invoke(app, ["keygen", "--out", tmp_path / "k"])
    assert again.code == 2 and "already exists" in again.stderr
    assert private.read_bytes() == before


def test_the_envelope_is_dsse_with_an_in_toto_statement(signed, keys):
    receipt, envelope = signed
    assert envelope == envelope_path(receipt) and envelope.name.endswith(".intoto.jsonl")
    lines = envelope.read_bytes().splitlines()
    assert len(lines) == 1
    doc = json.loads(lines[0])
    assert doc["payloadType"] == PAYLOAD_TYPE == "application/vnd.in-toto+json"
    statement = json.loads(base64.b64decode(doc["payload"]))
    assert statement["_type"] == STATEMENT_TYPE == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == PREDICATE_TYPE
    digest = hashlib.sha256(receipt.read_bytes()).hexdigest()
    assert statement["subject"] == [{"name": receipt.name, "digest": {"sha256": digest}}]
    predicate = statement["predicate"]
    recorded = json.loads(receipt.read_bytes())
    assert (
        predicate["started_at"] == recorded["started_at"] and predicate["timestamp"] == recorded["timestamp"]
    )
    assert set(predicate) >= {"harness", "run_id", "host_fingerprint", "signed_at"}
    assert set(predicate["harness"]) == {"version", "git_commit", "git_dirty"}
    assert len(predicate["run_id"]) == 32


def test_another_dsse_implementation_verifies_the_envelope(signed, keys):
    """securesystemslib (the in-toto project's library) parses the envelope and checks its signature."""
    _, envelope = signed
    public = load_public_key(keys[1])
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    key = SSlibKey(key_id(public), "ed25519", "ed25519", {"public": raw.hex()})
    parsed = Envelope.from_dict(json.loads(envelope.read_text()))
    assert parsed.pae() == pae(PAYLOAD_TYPE, parsed.payload)
    assert list(parsed.verify([key], 1)) == [key_id(public)]
    other = generate_keypair(envelope.parent / "other")[1]
    raw_other = load_public_key(other).public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    impostor = SSlibKey(key_id(public), "ed25519", "ed25519", {"public": raw_other.hex()})
    with pytest.raises(Exception, match="threshold"):
        parsed.verify([impostor], 1)


def test_a_signed_receipt_verifies_as_attested(signed, keys):
    receipt, _ = signed
    result = _verify("--path", receipt, "--public-key", keys[1], "--require-signature")
    assert result.exit_code == 0, result.output
    assert "signature: OK (Ed25519 key" in result.stdout
    assert "VALID (attested: signed;" in result.stdout and "unsigned" not in result.stdout
    data = json.loads(_verify("--path", receipt, "--public-key", keys[1], "--json").stdout)
    assert data["level"] == "attested"
    assert {"name": "signature", "level": "attested", "status": "pass"}.items() <= data["gates"][-1].items()


def test_two_signatures_of_one_receipt_have_different_run_ids(tmp_path, keys):
    key = load_private_key(keys[0])
    ids = []
    for folder in ("a", "b"):
        receipt = write_receipt(make_receipt(), tmp_path / folder)
        sign_receipt_file(receipt, key)
        ids.append(_check(receipt, keys[1]).predicate["run_id"])
    assert ids[0] != ids[1]


def test_a_changed_receipt_byte_fails(signed, keys):
    receipt, _ = signed
    original = receipt.read_bytes()
    for index in range(0, len(original), 97):
        changed = bytearray(original)
        changed[index] ^= 0x01
        receipt.write_bytes(changed)
        att = check_signature(receipt, bytes(changed), {}, keys[1])
        assert not att.ok and "sha256 differs" in att.problem
    receipt.write_bytes(original)
    assert _check(receipt, keys[1]).ok


def test_changed_envelope_bytes_fail(signed, keys):
    receipt, envelope = signed
    original = envelope.read_bytes()
    for index in range(0, len(original), 11):
        changed = bytearray(original)
        changed[index] ^= 0x01
        envelope.write_bytes(changed)
        assert not _check(receipt, keys[1]).ok, index
    envelope.write_bytes(original)


def test_a_receipt_reused_under_another_name_fails(signed, keys):
    receipt, envelope = signed
    renamed = receipt.with_name("20991231T000000.000000Z_tiny_cpu_0123456789.json")
    renamed.write_bytes(receipt.read_bytes())
    envelope_path(renamed).write_bytes(envelope.read_bytes())
    att = _check(renamed, keys[1])
    assert not att.ok and "re-used" in att.problem
    result = _verify("--path", renamed, "--public-key", keys[1])
    assert result.exit_code == 1 and "FAIL signature [attested]" in result.stdout


def test_wrong_key_and_forged_signature_fail(signed, keys, tmp_path):
    receipt, envelope = signed
    other = generate_keypair(tmp_path / "other")[1]
    att = _check(receipt, other)
    assert not att.ok and f"not by {key_id(load_public_key(other))[:16]}" in att.problem
    doc = json.loads(envelope.read_text())
    doc["signatures"][0]["sig"] = base64.b64encode(bytes(64)).decode()
    envelope.write_text(json.dumps(doc) + "\n")
    att = _check(receipt, keys[1])
    assert not att.ok and "does not match the payload" in att.problem


def test_unsigned_receipts_are_valid_unless_a_signature_is_required(tmp_path, keys):
    receipt = write_receipt(make_receipt(), tmp_path)
    result = _verify("--path", receipt, "--public-key", keys[1])
    assert result.exit_code == 0 and "unsigned: speed is self-reported" in result.stdout
    assert "NOT CHECKED signature [attested]: unsigned: no envelope" in result.stdout
    result = _verify("--path", receipt, "--public-key", keys[1], "--require-signature")
    assert result.exit_code == 1 and "FAIL signature [attested]" in result.stdout
    result = _verify("--path", receipt, "--require-signature")
    assert result.exit_code == 2 and "needs --public-key" in result.stderr


@pytest.mark.parametrize(
    "content", [b"", b"not a key", b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"]
)
def test_unusable_key_files_exit_2(tmp_path, content):
    receipt = write_receipt(make_receipt(), tmp_path)
    bad = tmp_path / "bad.pub"
    bad.write_bytes(content)
    result = _verify("--path", receipt, "--public-key", bad)
    assert result.exit_code == 2 and "error:" in result.stderr
    assert _verify("--path", receipt, "--public-key", tmp_path / "missing.pub").exit_code == 2
    with pytest.raises(HarnessError):
        load_private_key(bad)


def test_signing_never_replaces_an_envelope_and_refuses_non_receipts(signed, keys, tmp_path):
    receipt, envelope = signed
    before = envelope.read_bytes()
    with pytest.raises(EngineError, match="already exists"):
        sign_receipt_file(receipt, load_private_key(keys[0]))
    assert envelope.read_bytes() == before
    bogus = tmp_path / "bogus.json"
    bogus.write_text("[1]")
    with pytest.raises(HarnessError, match="not an object"):
        sign_receipt_file(bogus, load_private_key(keys[0]))
    assert not envelope_path(bogus).exists()
