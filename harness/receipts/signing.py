"""Signed receipts: HMAC-SHA256 over the exact bytes of a receipt file, in a DSSE-style envelope.

The envelope (`<receipt stem>.dsse.json` beside the receipt) is
`{"payloadType": PAYLOAD_TYPE, "payload": base64(receipt bytes), "signatures": [{"keyid", "sig"}]}`; the MAC
covers DSSE's pre-authentication encoding `DSSEv1 <len(type)> <type> <len(body)> <body>`, so the payload type
is bound too. The key is the UTF-8 value of an environment variable the user names (a CI secret); its key id
is the first 16 hex digits of sha256(key), so a verifier tells a wrong key from a changed receipt.

Any changed byte fails: the envelope must be exactly the canonical bytes the signer writes (so not even
whitespace can change), base64 must be canonical, and the payload must equal the receipt file byte for byte.
A missing or too-short key is a KeyUnavailableError (exit 2); everything else is a SignatureError (exit 1).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from pathlib import Path

from engine.atomic import atomic_write
from harness.errors import HarnessError
from harness.receipts.files import MAX_RECEIPT_BYTES, parse_receipt_bytes, read_regular_file

PAYLOAD_TYPE = "application/vnd.bitnet-harness.receipt+json"
ENVELOPE_SUFFIX = ".dsse.json"
MIN_KEY_BYTES = 16
MAX_ENVELOPE_BYTES = 2 * MAX_RECEIPT_BYTES  # base64 of the largest receipt, plus the frame


class SignatureError(HarnessError):
    """The signature does not vouch for these bytes: unsigned, changed, malformed or another key."""


class KeyUnavailableError(HarnessError):
    """The named environment variable does not hold a usable key: nothing can be checked."""


def key_from_env(name: str) -> bytes:
    """The key in environment variable `name` (its UTF-8 bytes), at least MIN_KEY_BYTES long."""
    value = os.environ.get(name)
    if not value:
        raise KeyUnavailableError(
            f"environment variable {name} is not set or empty; it must hold the receipt signing key"
        )
    key = value.encode("utf-8", "surrogateescape")
    if len(key) < MIN_KEY_BYTES:
        raise KeyUnavailableError(
            f"the key in {name} is {len(key)} bytes; use at least {MIN_KEY_BYTES} "
            "(e.g. python -c 'import secrets; print(secrets.token_hex(32))')"
        )
    return key


def key_id(key: bytes) -> str:
    """First 16 hex digits of sha256(key): names the key without revealing it."""
    return hashlib.sha256(key).hexdigest()[:16]


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE pre-authentication encoding of the payload type and body: what the MAC covers."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def _mac(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, pae(PAYLOAD_TYPE, payload), hashlib.sha256).digest()


def envelope_bytes(envelope: dict[str, object]) -> bytes:
    """The one byte form of an envelope: sorted keys, no spaces, a final newline."""
    return json.dumps(envelope, sort_keys=True, separators=(",", ":")).encode("ascii") + b"\n"


def sign_bytes(body: bytes, key: bytes) -> bytes:
    """The envelope file's bytes for a receipt body signed with `key`."""
    envelope = {
        "payloadType": PAYLOAD_TYPE,
        "payload": base64.b64encode(body).decode("ascii"),
        "signatures": [{"keyid": key_id(key), "sig": base64.b64encode(_mac(key, body)).decode("ascii")}],
    }
    return envelope_bytes(envelope)


def envelope_path(receipt: str | os.PathLike[str]) -> Path:
    """`<stem>.dsse.json` beside a `<stem>.json` receipt."""
    path = Path(receipt)
    stem = path.name[: -len(".json")] if path.name.endswith(".json") else path.name
    return path.with_name(stem + ENVELOPE_SUFFIX)


def is_envelope_path(path: str | os.PathLike[str]) -> bool:
    return Path(path).name.endswith(ENVELOPE_SUFFIX)


def not_an_envelope(path: Path) -> Path:
    """`path`, unless it names a signature envelope, which only a check with the key can open."""
    if is_envelope_path(path):
        raise HarnessError(f"{path} is a signature envelope; pass --key-env NAME to check it")
    return path


def sign_receipt_file(path: str | os.PathLike[str], key_env: str) -> Path:
    """Sign a written receipt's exact bytes with the key in `key_env`; the envelope goes atomically beside it.

    Never replaces an existing envelope. Returns the envelope's path.
    """
    key = key_from_env(key_env)
    body = read_regular_file(path, MAX_RECEIPT_BYTES)
    parse_receipt_bytes(body, str(path))  # sign only what a verifier can read back
    target = envelope_path(path)
    with atomic_write(target, exclusive=True) as fh:
        fh.write(sign_bytes(body, key))
    return target


def _strict_b64(text: object, what: str, where: str) -> bytes:
    """Decode canonical base64 only: any other spelling of the same bytes counts as a change."""
    if not isinstance(text, str):
        raise SignatureError(f"{where}: {what} is not a base64 string")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise SignatureError(f"{where}: {what} is not valid base64; the envelope was changed") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise SignatureError(f"{where}: {what} is not canonical base64; the envelope was changed")
    return raw


def open_envelope(data: bytes, key: bytes, where: str) -> bytes:
    """The payload an envelope vouches for under `key` (SignatureError naming the first problem)."""
    try:
        envelope = parse_receipt_bytes(data, where)
    except HarnessError as exc:
        raise SignatureError(f"unreadable signature envelope: {exc}") from None
    if set(envelope) != {"payloadType", "payload", "signatures"}:
        raise SignatureError(f"{where}: not a DSSE envelope (fields {sorted(envelope)})")
    if envelope_bytes(envelope) != data:
        raise SignatureError(f"{where}: the envelope's bytes are not what the signer writes; it was changed")
    if envelope["payloadType"] != PAYLOAD_TYPE:
        found = str(envelope["payloadType"])[:80]
        raise SignatureError(f"{where}: payloadType {found!r} is not {PAYLOAD_TYPE}")
    payload = _strict_b64(envelope["payload"], "payload", where)
    signatures = envelope["signatures"]
    if not isinstance(signatures, list) or not signatures:
        raise SignatureError(f"{where}: the envelope holds no signatures")
    wanted = key_id(key)
    ids = []
    for entry in signatures:
        if not isinstance(entry, dict) or set(entry) != {"keyid", "sig"}:
            raise SignatureError(f"{where}: a signature entry is not {{keyid, sig}}")
        ids.append(str(entry["keyid"])[:32])
        if entry["keyid"] != wanted:
            continue
        sig = _strict_b64(entry["sig"], "signature", where)
        if not hmac.compare_digest(sig, _mac(key, payload)):
            raise SignatureError(
                f"{where}: signature by key {wanted} does not match the payload; the receipt or its "
                "envelope was changed after signing"
            )
        return payload
    raise SignatureError(
        f"{where}: signed by key id {', '.join(ids)}, but the given key has id {wanted}: wrong key"
    )


def verify_signed(path: str | os.PathLike[str], key: bytes) -> tuple[bytes, Path]:
    """(receipt bytes, envelope path) after checking the signature; `path` is a receipt or its envelope.

    For a receipt, its envelope must sit beside it and sign exactly its bytes.
    """
    path = Path(path)
    if is_envelope_path(path):
        envelope = path
    else:
        envelope = envelope_path(path)
        if not envelope.exists():
            raise SignatureError(f"{path} is not signed: no envelope {envelope.name} beside it")
    data = read_regular_file(envelope, MAX_ENVELOPE_BYTES, "signature envelope")
    payload = open_envelope(data, key, str(envelope))
    if envelope != path:
        body = read_regular_file(path, MAX_RECEIPT_BYTES)
        if not hmac.compare_digest(body, payload):
            raise SignatureError(f"{path}: the receipt's bytes are not the signed payload; it was changed")
    return payload, envelope
