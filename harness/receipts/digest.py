"""The digests a receipt is built on: canonical JSON and its content digest, token ids, files.

Writer and verifier share these functions, so a receipt written with them checks out and a changed byte does
not.
"""

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from harness.errors import HarnessError

DIGEST_FIELD = "content_digest"
_INT32_MAX = 2**31 - 1
_HASH_CHUNK = 8 << 20


def canonical_json(obj: object) -> bytes:
    """Sorted keys, no whitespace, UTF-8, NaN/Infinity refused: the byte string the digest covers."""
    try:
        text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError as exc:
        raise HarnessError(f"receipt is not canonical JSON: {exc}") from None
    return text.encode("utf-8")


def content_digest(receipt: Mapping[str, Any]) -> str:
    """sha256 hex of the canonical JSON of the receipt without its content_digest field."""
    body = {k: v for k, v in receipt.items() if k != DIGEST_FIELD}
    return hashlib.sha256(canonical_json(body)).hexdigest()


def finalize(receipt: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the receipt with its content digest set (any previous digest replaced)."""
    out = {k: v for k, v in receipt.items() if k != DIGEST_FIELD}
    out[DIGEST_FIELD] = content_digest(out)
    return out


def token_digest(ids: Sequence[int] | np.ndarray) -> str:
    """sha256 hex of the token ids encoded as consecutive little-endian int32 values."""
    arr = np.asarray(ids)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise HarnessError("token ids must be a flat sequence of integers")
    if arr.size and (arr.min() < 0 or arr.max() > _INT32_MAX):
        raise HarnessError("token ids must lie in 0 .. 2**31-1")
    return hashlib.sha256(arr.astype("<i4").tobytes()).hexdigest()


class FileDigest(NamedTuple):
    """A file's identity as a receipt records it."""

    size: int
    sha256: str


def file_digest(path: str | Path) -> FileDigest:
    """Size and sha256 of a model file, read in chunks; HarnessError when it cannot be read."""
    p = Path(path)
    if not p.is_file():
        raise HarnessError(f"model file {p} does not exist or is not a regular file")
    h = hashlib.sha256()
    size = 0
    try:
        with p.open("rb") as fh:
            while chunk := fh.read(_HASH_CHUNK):
                h.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise HarnessError(f"cannot read model file {p}: {exc.strerror or exc}") from None
    return FileDigest(size, h.hexdigest())
