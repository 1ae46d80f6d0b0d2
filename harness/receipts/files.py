"""Receipt files: names, timestamps, atomic writes that never overwrite, and defensive reading.

A receipt is written only when a verifier could read it back, and read only when it is a regular file of
bounded size, depth and value count.
"""

import json
import math
import os
import re
import stat
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from engine.atomic import TargetExistsError, atomic_write
from harness.errors import HarnessError
from harness.receipts.digest import DIGEST_FIELD, content_digest
from harness.receipts.kind import BENCHMARK, receipt_kind
from harness.receipts.schema import SCHEMA_VERSION, schema_errors

MAX_RECEIPT_BYTES = 16 * 1024 * 1024  # real receipts are tens of kB; the cap bounds memory (~3x)
MAX_DEPTH = 32
MAX_RECEIPT_VALUES = 1 << 19  # ~20x the values of a 2b-4t receipt with 10 repetitions of 4096 tokens
_MAX_NAME_ATTEMPTS = 100
_RFC3339 = re.compile(r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|z|[+-]\d{2}:\d{2})")
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9.-]+")


def utc_timestamp(moment: datetime | None = None) -> str:
    """RFC 3339 UTC timestamp with microseconds, e.g. 2025-01-31T12:00:00.123456Z."""
    moment = moment or datetime.now(timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def receipt_filename(receipt: Mapping[str, Any]) -> str:
    """`<UTC timestamp>_<model>_<backend>_<short commit>.json` from the receipt's own fields; a phase
    receipt's name ends in its kind (`..._probe.json`, `..._timing.json`)."""
    moment = parse_timestamp(str(receipt["timestamp"]))
    model = receipt["model"]
    model_name = model.get("preset") or Path(str(model["path"])).stem
    commit = (receipt["harness"].get("git_commit") or "nogit")[:10]
    parts = [moment.strftime("%Y%m%dT%H%M%S.%fZ"), model_name, str(receipt["backend"]), commit]
    kind = receipt_kind(receipt)
    if kind != BENCHMARK:
        parts.append(kind)
    return "_".join(_NAME_UNSAFE.sub("-", p).strip("-") or "x" for p in parts) + ".json"


def parse_timestamp(text: str) -> datetime:
    """An RFC 3339 timestamp with a time zone as an aware datetime (HarnessError otherwise)."""
    match = _RFC3339.fullmatch(text)
    try:
        if match is None:
            raise ValueError(text)
        head, frac, zone = match.groups()
        micro = f".{(frac or '0')[:6]:0<6}"
        moment = datetime.fromisoformat(head + micro + ("+00:00" if zone in ("Z", "z") else zone))
    except ValueError:
        raise HarnessError(f"not an RFC 3339 timestamp with a time zone: {text[:64]!r}") from None
    return moment


def write_receipt(receipt: Mapping[str, Any], folder: str | Path, *, schema_checked: bool = False) -> Path:
    """Validate against the schema, check the digest, write atomically under a new name; never overwrites.

    `schema_checked`: the caller's verify() of this very object found it matching the schema, which is then
    not checked a second time. Two writers that pick the same name (same microsecond, model and commit) never
    clash: the second takes the next free `_2`, `_3`... name. Writing the very same bytes again is refused.
    """
    errors = [] if schema_checked else schema_errors(receipt)
    if errors:
        path, message = errors[0]
        raise HarnessError(
            f"refusing to write a receipt that fails the schema ({len(errors)} errors; {path}: {message})"
        )
    if receipt[DIGEST_FIELD] != content_digest(receipt):
        raise HarnessError("refusing to write a receipt whose content_digest is stale; call finalize() first")
    name = receipt_filename(receipt)
    data = json.dumps(receipt, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False).encode("utf-8")
    data += b"\n"
    problem = _shape_problem(receipt)
    if len(data) > MAX_RECEIPT_BYTES or problem is not None:
        raise HarnessError(
            f"refusing to write a receipt no verifier would read ({len(data)} bytes"
            f"{'; ' + problem if problem else ''}; the cap is {MAX_RECEIPT_BYTES} bytes)"
        )
    for attempt in range(1, _MAX_NAME_ATTEMPTS + 1):
        target = Path(folder) / (name if attempt == 1 else f"{name[: -len('.json')]}_{attempt}.json")
        try:
            with atomic_write(target, exclusive=True) as fh:
                fh.write(data)
        except TargetExistsError:
            if _same_bytes(target, data):
                raise
            continue
        return target
    raise HarnessError(f"{folder}: {_MAX_NAME_ATTEMPTS} receipts already use the name {name}")


def _same_bytes(path: Path, data: bytes) -> bool:
    try:
        return path.stat().st_size == len(data) and path.read_bytes() == data
    except OSError:
        return False


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} overflows a float")
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _shape_problem(obj: object) -> str | None:
    """Why parsed JSON cannot be a receipt by shape alone: nesting deeper than MAX_DEPTH or more than
    MAX_RECEIPT_VALUES values (each costs schema-check time). Iterative: deep input cannot overflow."""
    stack = [(obj, 1)]
    values = 0
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"nests deeper than {MAX_DEPTH} levels"
        children = node.values() if isinstance(node, dict) else node
        values += len(children)
        if values > MAX_RECEIPT_VALUES:
            return f"holds more than {MAX_RECEIPT_VALUES} JSON values"
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return None


def read_regular_file(path: str | Path, limit: int, what: str = "receipt") -> bytes:
    """The bytes of a regular file of at most `limit` bytes (HarnessError otherwise).

    The file is opened non-blocking and its type checked on the open descriptor before reading: a FIFO,
    socket or device never blocks the reader, and nothing can swap the file between the check and the read.
    """
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except IsADirectoryError:
        raise HarnessError(f"{p} is a directory, not a {what} file") from None
    except OSError as exc:
        raise HarnessError(f"cannot read {p}: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise HarnessError(f"{p} is a directory, not a {what} file")
        if not stat.S_ISREG(info.st_mode):
            raise HarnessError(f"{p} is not a regular file (a FIFO, socket or device); not a {what}")
        if info.st_size > limit:
            raise HarnessError(f"{p} is larger than {limit} bytes; not a {what}")
        chunks = []
        total = 0
        while total <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise HarnessError(f"cannot read {p}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if total > limit:
        raise HarnessError(f"{p} is larger than {limit} bytes; not a {what}")
    return b"".join(chunks)


def parse_receipt_bytes(data: bytes, where: str) -> dict[str, Any]:
    """Parse receipt bytes defensively: strict UTF-8 JSON, no NaN/Infinity, no duplicate keys, bounded
    nesting, a JSON object at the top. Anything else is a one-line HarnessError starting with `where`."""
    if len(data) > MAX_RECEIPT_BYTES:
        raise HarnessError(f"{where} is larger than {MAX_RECEIPT_BYTES} bytes; not a receipt")
    try:
        obj = json.loads(
            data.decode("utf-8"),
            parse_constant=_reject_constant,
            parse_float=_finite_float,
            object_pairs_hook=_no_duplicates,
        )
    except UnicodeDecodeError as exc:
        raise HarnessError(f"{where} is not UTF-8 text (byte {exc.start})") from None
    except RecursionError:
        raise HarnessError(f"{where} nests deeper than {MAX_DEPTH} levels; not a receipt") from None
    except ValueError as exc:
        raise HarnessError(f"{where} is not valid JSON: {str(exc).splitlines()[0]}") from None
    if not isinstance(obj, dict):
        raise HarnessError(f"{where} holds a JSON {type(obj).__name__}, not an object; not a receipt")
    problem = _shape_problem(obj)
    if problem is not None:
        raise HarnessError(f"{where} {problem}; not a receipt")
    try:  # JSON escapes can smuggle in lone surrogates, which no UTF-8 digest or terminal can encode
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = exc.object[exc.start : exc.end].encode("unicode_escape").decode()
        raise HarnessError(f"{where} holds a lone surrogate {bad} (not Unicode); not a receipt") from None
    return obj


def load_receipt(path: str | Path) -> dict[str, Any]:
    """Read and parse a receipt file: a regular file under the size cap, then parse_receipt_bytes."""
    return parse_receipt_bytes(read_regular_file(path, MAX_RECEIPT_BYTES), str(path))


def load_checked(path: str | Path, body: bytes | None = None) -> dict[str, Any]:
    """A parsed receipt (from `body` when given, else read from `path`) of the schema version this harness
    reads (HarnessError otherwise)."""
    receipt = load_receipt(path) if body is None else parse_receipt_bytes(body, str(path))
    version = receipt.get("schema_version")
    if version != SCHEMA_VERSION:
        raise HarnessError(
            f"{path}: unknown schema_version {version!r}; this harness reads {SCHEMA_VERSION!r} receipts"
        )
    return receipt
