"""Attested receipts: an in-toto Statement about a receipt file, in a DSSE envelope signed with Ed25519.

`keygen` writes a private key (PEM PKCS#8, mode 0600) and its public key beside it (`<name>.pub`, PEM).
The signer (`benchmark --sign-key FILE`) writes `<receipt stem>.intoto.jsonl` beside the receipt: one line,
a DSSE envelope `{"payloadType": "application/vnd.in-toto+json", "payload": base64(statement), "signatures":
[{"keyid", "sig"}]}` whose signature covers DSSE's pre-authentication encoding of the type and payload. The
statement (in-toto Statement v1) names the receipt file and its sha256 as its subject; its predicate holds
the harness version, git commit and dirty flag of the signer, a random run id, a host fingerprint and the
receipt's own start and finish times. A verifier given the public key therefore knows that the holder of the
private key wrote exactly these bytes under this name, at this commit, in this run; anyone may verify, only
the key's holder can sign. Ed25519 comes from the `cryptography` package.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from engine.atomic import atomic_write
from harness.errors import HarnessError
from harness.machine.host import harness_facts
from harness.receipts.checks import Attestation
from harness.receipts.digest import canonical_json
from harness.receipts.files import MAX_RECEIPT_BYTES, parse_receipt_bytes, read_regular_file, utc_timestamp
from harness.version import harness_version

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://bitnet-harness.invalid/attestations/benchmark-receipt/v1"
ENVELOPE_SUFFIX = ".intoto.jsonl"
PUBLIC_SUFFIX = ".pub"
MAX_KEY_BYTES = 64 * 1024
MAX_ENVELOPE_BYTES = 64 * 1024
_MACHINE_ID = Path("/etc/machine-id")


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE pre-authentication encoding of the payload type and body: what the signature covers."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def key_id(public_key: Ed25519PublicKey) -> str:
    """sha256 hex of the raw 32-byte public key: names the key in the envelope and in messages."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def generate_keypair(out: str | os.PathLike[str]) -> tuple[Path, Path]:
    """A new Ed25519 key: the private key at `out` (mode 0600), the public key at `out`.pub; never replaces
    an existing file."""
    private = Path(out)
    public = private.with_name(private.name + PUBLIC_SUFFIX)
    for path in (private, public):
        if path.exists():
            raise HarnessError(f"{path} already exists; refusing to replace a key")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with atomic_write(private, exclusive=True) as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(pem)
    with atomic_write(public, exclusive=True) as fh:
        fh.write(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    return private, public


def load_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM file (HarnessError naming the problem otherwise)."""
    data = read_regular_file(path, MAX_KEY_BYTES, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise HarnessError(f"{path} is not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise HarnessError(
            f"{path} holds a {type(key).__name__}, not an Ed25519 key; use bitnet-harness keygen"
        )
    return key


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file (HarnessError naming the problem otherwise)."""
    data = read_regular_file(path, MAX_KEY_BYTES, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise HarnessError(f"{path} is not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise HarnessError(f"{path} holds a {type(key).__name__}, not an Ed25519 public key")
    return key


def envelope_path(receipt: str | os.PathLike[str]) -> Path:
    """`<stem>.intoto.jsonl` beside a `<stem>.json` receipt."""
    path = Path(receipt)
    stem = path.name[: -len(".json")] if path.name.endswith(".json") else path.name
    return path.with_name(stem + ENVELOPE_SUFFIX)


def is_envelope_path(path: str | os.PathLike[str]) -> bool:
    return Path(path).name.endswith(ENVELOPE_SUFFIX)


def not_an_envelope(path: Path) -> Path:
    """`path`, unless it names a signature envelope, which is checked beside its receipt."""
    if is_envelope_path(path):
        raise HarnessError(f"{path} is a signature envelope; pass the receipt beside it (with --public-key)")
    return path


def host_fingerprint(host: Mapping[str, Any]) -> str:
    """sha256 of the machine id (when the OS has one) with the receipt's host facts: tells machines apart
    without naming them."""
    try:
        machine = _MACHINE_ID.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        machine = None
    return hashlib.sha256(canonical_json({"machine_id": machine, "host": dict(host)})).hexdigest()


def statement(name: str, body: bytes, receipt: Mapping[str, Any]) -> dict[str, Any]:
    """The in-toto Statement v1 a signer makes about the receipt file `name` holding `body`."""
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": hashlib.sha256(body).hexdigest()}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "harness": {"version": harness_version(), **_commit()},
            "run_id": secrets.token_hex(16),
            "host_fingerprint": host_fingerprint(receipt["host"]),
            "started_at": receipt["started_at"],
            "timestamp": receipt["timestamp"],
            "signed_at": utc_timestamp(),
        },
    }


def _commit() -> dict[str, Any]:
    facts = harness_facts(harness_version())
    return {"git_commit": facts["git_commit"], "git_dirty": facts["git_dirty"]}


def sign_receipt_file(path: str | os.PathLike[str], key: Ed25519PrivateKey) -> Path:
    """Sign a written receipt; its envelope goes atomically beside it, never replacing one. Returns its
    path."""
    path = Path(path)
    body = read_regular_file(path, MAX_RECEIPT_BYTES)
    receipt = parse_receipt_bytes(body, str(path))  # sign only what a verifier can read back
    payload = canonical_json(statement(path.name, body, receipt))
    envelope = {
        "payload": base64.b64encode(payload).decode("ascii"),
        "payloadType": PAYLOAD_TYPE,
        "signatures": [
            {
                "keyid": key_id(key.public_key()),
                "sig": base64.b64encode(key.sign(pae(PAYLOAD_TYPE, payload))).decode("ascii"),
            }
        ],
    }
    target = envelope_path(path)
    with atomic_write(target, exclusive=True) as fh:
        fh.write(canonical_json(envelope) + b"\n")
    return target


def _b64(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise ValueError(f"{what} is not a base64 string")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError(f"{what} is not valid base64") from None


def _open(data: bytes, public_key: Ed25519PublicKey) -> dict[str, Any]:
    """The statement an envelope carries, once its signature by `public_key` checks (ValueError otherwise)."""
    try:
        envelope = parse_receipt_bytes(data, "the envelope")
    except HarnessError as exc:
        raise ValueError(str(exc)) from None
    if not isinstance(envelope.get("signatures"), list) or envelope.get("payloadType") != PAYLOAD_TYPE:
        raise ValueError(f"not a DSSE envelope of {PAYLOAD_TYPE}")
    payload = _b64(envelope.get("payload"), "the payload")
    wanted = key_id(public_key)
    ids = [str(s.get("keyid"))[:64] for s in envelope["signatures"] if isinstance(s, dict)]
    for entry in envelope["signatures"]:
        if isinstance(entry, dict) and entry.get("keyid") == wanted:
            try:
                public_key.verify(_b64(entry.get("sig"), "the signature"), pae(PAYLOAD_TYPE, payload))
            except InvalidSignature:
                raise ValueError(f"the signature by key {wanted[:16]} does not match the payload") from None
            try:
                return parse_receipt_bytes(payload, "the statement")
            except HarnessError as exc:
                raise ValueError(str(exc)) from None
    raise ValueError(f"signed by key ids {', '.join(i[:16] for i in ids) or 'none'}, not by {wanted[:16]}")


def _subject_problem(
    stmt: Mapping[str, Any], path: Path, body: bytes, receipt: Mapping[str, Any]
) -> str | None:
    """Why the statement does not vouch for this receipt file (None when it does)."""
    if stmt.get("_type") != STATEMENT_TYPE or stmt.get("predicateType") != PREDICATE_TYPE:
        return f"the payload is not a {PREDICATE_TYPE} statement"
    subjects = stmt.get("subject")
    if not isinstance(subjects, list) or len(subjects) != 1 or not isinstance(subjects[0], dict):
        return "the statement does not name exactly one subject"
    subject, digest = subjects[0], hashlib.sha256(body).hexdigest()
    if subject.get("name") != path.name:
        return (
            f"the signature is for {str(subject.get('name'))[:120]!r}, not {path.name!r}: a receipt re-used"
        )
    if subject.get("digest") != {"sha256": digest}:
        return "the receipt's bytes are not the signed ones (sha256 differs): it changed after signing"
    predicate = stmt.get("predicate") if isinstance(stmt.get("predicate"), dict) else {}
    harness = receipt.get("harness") if isinstance(receipt.get("harness"), Mapping) else {}
    claims = {
        "started_at": receipt.get("started_at"),
        "timestamp": receipt.get("timestamp"),
        "harness": {k: harness.get(k) for k in ("version", "git_commit", "git_dirty")},
    }
    for key, value in claims.items():
        if predicate.get(key) != value:
            return f"the signed {key} {predicate.get(key)!r} is not the receipt's {value!r}"
    return None


def check_signature(
    path: str | os.PathLike[str],
    body: bytes,
    receipt: Mapping[str, Any],
    public_key_path: str | os.PathLike[str],
) -> Attestation:
    """The attestation of the receipt at `path` (bytes `body`) under the given public key: its envelope,
    whether the signature and the statement vouch for exactly this file, and the signed predicate."""
    public_key = load_public_key(public_key_path)
    kid = key_id(public_key)
    path = Path(path)
    target = envelope_path(path)
    if not target.exists():
        return Attestation(None, kid, f"no envelope {target.name} beside the receipt")
    try:
        stmt = _open(read_regular_file(target, MAX_ENVELOPE_BYTES, "signature envelope"), public_key)
    except (ValueError, HarnessError) as exc:
        return Attestation(str(target), kid, f"{target.name}: {exc}")
    predicate = stmt.get("predicate") if isinstance(stmt.get("predicate"), dict) else {}
    return Attestation(str(target), kid, _subject_problem(stmt, path, body, receipt), dict(predicate))
