"""Signed receipts: a DSSE-style HMAC-SHA256 envelope over the receipt's exact bytes.

Every single-byte change of the receipt or of its envelope fails; a wrong key, a missing key and an unsigned
receipt each fail with their own message and exit code.
"""

import base64
import json

import pytest
from typer.testing import CliRunner

from engine.errors import EngineError
from harness.cli import app
from harness.errors import HarnessError
from harness.receipts.files import write_receipt
from harness.receipts.signing import (
    ENVELOPE_SUFFIX,
    PAYLOAD_TYPE,
    KeyUnavailableError,
    SignatureError,
    envelope_path,
    key_id,
    open_envelope,
    pae,
    sign_receipt_file,
    verify_signed,
)
from tests.receipt_factory import make_receipt

ENV = "BITNET_TEST_SIGNING_KEY"
KEY = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def signed(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV, KEY)
    receipt = write_receipt(make_receipt(), tmp_path)
    return receipt, sign_receipt_file(receipt, ENV)


def _verify(path, *extra):
    return CliRunner().invoke(app, ["verify-receipt", "--path", str(path), *extra])


def test_the_envelope_format_is_fixed() -> None:
    """Envelopes already written must keep verifying: the payload type and suffix are part of the format."""
    assert PAYLOAD_TYPE == "application/vnd.bitnet-harness.receipt+json"
    assert ENVELOPE_SUFFIX == ".dsse.json"


def test_sign_and_verify_round_trip(signed):
    receipt, envelope = signed
    assert envelope == receipt.with_name(receipt.name[: -len(".json")] + ENVELOPE_SUFFIX)
    doc = json.loads(envelope.read_text())
    assert set(doc) == {"payloadType", "payload", "signatures"}
    assert base64.b64decode(doc["payload"]) == receipt.read_bytes()
    assert doc["signatures"] == [{"keyid": key_id(KEY.encode()), "sig": doc["signatures"][0]["sig"]}]
    for path in (receipt, envelope):
        result = _verify(path, "--key-env", ENV)
        assert result.exit_code == 0, result.stdout
        assert f"signature: OK (HMAC-SHA256, key id {key_id(KEY.encode())}" in result.stdout
    result = _verify(receipt, "--key-env", ENV, "--json")
    assert json.loads(result.stdout)["signature"]["ok"] is True


def test_the_mac_covers_the_dsse_pre_authentication_encoding():
    assert pae("t/x", b"body") == b"DSSEv1 3 t/x 4 body"


def _receipt_byte_changes(receipt, stride: int) -> int:
    original = receipt.read_bytes()
    key = KEY.encode()
    for index in range(0, len(original), stride):
        changed = bytearray(original)
        changed[index] ^= 0x01
        receipt.write_bytes(changed)
        with pytest.raises(SignatureError, match="not the signed payload"):
            verify_signed(receipt, key)
    receipt.write_bytes(original)
    assert verify_signed(receipt, key)[0] == original
    return len(range(0, len(original), stride))


def _envelope_byte_changes(envelope, stride: int) -> int:
    """A bit flip, a case flip and a space at the positions: never accepted."""
    original = envelope.read_bytes()
    key = KEY.encode()
    assert base64.b64encode(open_envelope(original, key, "e")) == json.loads(original)["payload"].encode()
    cases = 0
    for index in range(0, len(original), stride):
        for new in {original[index] ^ 0x01, original[index] ^ 0x20, ord(" ")} - {original[index]}:
            changed = bytearray(original)
            changed[index] = new
            with pytest.raises(SignatureError):
                open_envelope(bytes(changed), key, "e")
            cases += 1
    return cases


def test_changed_bytes_of_the_receipt_and_envelope_fail(signed):
    """A sample of positions (every 13th byte); the slow tests below try every byte."""
    receipt, envelope = signed
    assert _receipt_byte_changes(receipt, 13) > 300
    assert _envelope_byte_changes(envelope, 13) > 1000


@pytest.mark.slow
def test_every_changed_byte_of_the_receipt_fails(signed):
    receipt, _ = signed
    assert _receipt_byte_changes(receipt, 1) == len(receipt.read_bytes())


@pytest.mark.slow
def test_every_changed_byte_of_the_envelope_fails(signed):
    _, envelope = signed
    assert _envelope_byte_changes(envelope, 1) > 2 * len(envelope.read_bytes())


def test_non_canonical_base64_of_the_same_bytes_fails(signed):
    """'QR==' decodes to the same byte as 'QQ==': an envelope respelled that way is still a change."""
    _, envelope = signed
    doc = json.loads(envelope.read_text())
    payload = doc["payload"]
    assert payload.endswith("=")  # the factory receipt's length leaves padding bits to abuse
    stripped = payload.rstrip("=")
    last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".index(stripped[-1])
    respelled = stripped[:-1] + "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[last | 1]
    respelled += payload[len(stripped) :]
    assert respelled != payload and base64.b64decode(respelled) == base64.b64decode(payload)
    doc["payload"] = respelled
    data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    with pytest.raises(SignatureError, match="not canonical base64"):
        open_envelope(data, KEY.encode(), "e")


def test_wrong_key_is_its_own_failure(signed, monkeypatch):
    receipt, _ = signed
    monkeypatch.setenv(ENV, "another key of enough length")
    result = _verify(receipt, "--key-env", ENV)
    assert result.exit_code == 1
    assert "wrong key" in result.stdout and key_id(KEY.encode()) in result.stdout


def test_forged_signature_under_the_right_key_id_fails(signed):
    receipt, envelope = signed
    doc = json.loads(envelope.read_text())
    doc["signatures"][0]["sig"] = base64.b64encode(bytes(32)).decode()
    envelope.write_bytes(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode() + b"\n")
    result = _verify(receipt, "--key-env", ENV)
    assert result.exit_code == 1 and "does not match the payload" in result.stdout


def test_missing_or_short_key_exits_2(signed, monkeypatch):
    receipt, _ = signed
    monkeypatch.delenv(ENV)
    result = _verify(receipt, "--key-env", ENV)
    assert result.exit_code == 2 and f"{ENV} is not set" in result.stderr
    monkeypatch.setenv(ENV, "short")
    result = _verify(receipt, "--key-env", ENV)
    assert result.exit_code == 2 and "at least 16" in result.stderr
    with pytest.raises(KeyUnavailableError):
        sign_receipt_file(receipt, ENV)


def test_unsigned_receipt_fails_when_a_signature_is_required(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV, KEY)
    receipt = write_receipt(make_receipt(), tmp_path)
    result = _verify(receipt, "--key-env", ENV)
    assert result.exit_code == 1 and "is not signed" in result.stdout
    assert _verify(receipt).exit_code == 0


def test_envelope_without_a_key_is_unusable(signed):
    _, envelope = signed
    result = _verify(envelope)
    assert result.exit_code == 2 and "--key-env" in result.stderr


def test_signing_never_replaces_an_envelope_and_refuses_non_receipts(signed, tmp_path):
    receipt, envelope = signed
    before = envelope.read_bytes()
    with pytest.raises(EngineError, match="already exists"):
        sign_receipt_file(receipt, ENV)
    assert envelope.read_bytes() == before
    bogus = tmp_path / "bogus.json"
    bogus.write_text("[1]")
    with pytest.raises(HarnessError, match="not an object"):
        sign_receipt_file(bogus, ENV)
    assert not envelope_path(bogus).exists()
