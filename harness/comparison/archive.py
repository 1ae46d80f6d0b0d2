"""The receipt archive: one object per receipt in a store, a folder or an fsspec URL such as s3://bucket/prefix
(harness.comparison.store). In a folder the archive is its top-level *.json files (not phases/, baseline/).

Selectors name one archived receipt: a file path, `latest`, `latest~N`, a commit prefix (newest receipt of
that commit) or a UTC date YYYY-MM-DD (newest receipt of that day). Order is by the receipt's own timestamp.
The archive also holds phase receipts (`probe`, `timing`); they are listed with their kind, but only a path
names one: the other selectors pick benchmark receipts, the ones `compare` and `history` judge.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from harness.comparison.metrics import BY_KEY, value
from harness.comparison.runs import verdict
from harness.comparison.store import NameTaken, ReceiptStore, open_store
from harness.errors import HarnessError
from harness.machine.fingerprint import machine_of
from harness.receipts.files import (
    MAX_RECEIPT_BYTES,
    load_checked,
    parse_receipt_bytes,
    parse_timestamp,
    read_regular_file,
    receipt_filename,
)
from harness.receipts.kind import BENCHMARK, receipt_kind
from harness.receipts.verify import VerificationResult, verify

DEFAULT_ARCHIVE = "receipts"
_LATEST = re.compile(r"latest(?:~(\d+))?")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_COMMIT = re.compile(r"[0-9a-f]{4,40}")
_MAX_NAME_ATTEMPTS = 100
Where = str | Path | ReceiptStore


@dataclass(frozen=True)
class Entry:
    """An archived receipt object: parsed, or with the one-line reason it could not be used."""

    name: str
    location: str
    receipt: dict[str, Any] | None
    moment: datetime | None
    error: str | None = None

    @property
    def commit(self) -> str | None:
        return (self.receipt or {}).get("harness", {}).get("git_commit")

    @property
    def machine(self) -> str | None:
        return machine_of(self.receipt).id if self.receipt is not None else None


@dataclass(frozen=True)
class Selected:
    """The receipt a selector named: where it is (a path or an archive location) and its parsed contents."""

    location: str
    receipt: dict[str, Any]


def _entry(store: ReceiptStore, name: str) -> Entry:
    location = store.location(name)
    try:
        receipt = parse_receipt_bytes(store.read(name), location)
        moment = parse_timestamp(str(receipt.get("timestamp")))
    except HarnessError as exc:
        return Entry(name, location, None, None, str(exc))
    return Entry(name, location, receipt, moment)


def scan(where: Where) -> list[Entry]:
    """Every receipt object of the archive, oldest first; unusable ones last, with their reason."""
    store = open_store(where)
    entries = [_entry(store, name) for name in store.names()]
    good = sorted((e for e in entries if e.moment is not None), key=lambda e: (e.moment, e.name))
    return good + [e for e in entries if e.moment is None]


def usable(where: Where) -> list[Entry]:
    """The archive's receipts that parse, oldest first."""
    return [e for e in scan(where) if e.receipt is not None]


def benchmarks(where: Where) -> list[Entry]:
    """The archive's benchmark receipts that parse, oldest first (what the selectors choose from)."""
    return [e for e in usable(where) if e.receipt is not None and receipt_kind(e.receipt) == BENCHMARK]


def _checked(store: ReceiptStore, entry: Entry) -> Selected:
    """The selected entry read again with the schema-version check every receipt reader applies."""
    return Selected(entry.location, load_checked(entry.location, store.read(entry.name)))


def resolve(selector: str, where: Where = DEFAULT_ARCHIVE) -> Selected:
    """The receipt a selector names (HarnessError with the reason when none or several do)."""
    as_path = Path(selector)
    if as_path.is_file():
        return Selected(str(as_path), load_checked(as_path))
    store = open_store(where)
    if match := _LATEST.fullmatch(selector):
        back = int(match.group(1) or 0)
        entries = benchmarks(store)
        if back >= len(entries):
            raise HarnessError(
                f"{selector}: the archive {store.url} holds only {len(entries)} benchmark receipts"
            )
        return _checked(store, entries[-1 - back])
    if _DATE.fullmatch(selector):
        try:
            day = datetime.strptime(selector, "%Y-%m-%d").date()
        except ValueError:
            raise HarnessError(f"{selector} is not a valid date (YYYY-MM-DD)") from None
        on_day = [e for e in benchmarks(store) if e.moment is not None and e.moment.date() == day]
        if not on_day:
            raise HarnessError(f"no benchmark receipt in {store.url} was written on {selector} (UTC)")
        return _checked(store, on_day[-1])
    if _COMMIT.fullmatch(selector.lower()):
        hits = [e for e in benchmarks(store) if (e.commit or "").startswith(selector.lower())]
        commits = {e.commit for e in hits}
        if len(commits) > 1:
            shown = ", ".join(sorted(c[:12] for c in commits if c))
            raise HarnessError(f"commit prefix {selector} is ambiguous ({shown}); give more digits")
        if hits:
            return _checked(store, hits[-1])
    raise HarnessError(
        f"{selector!r} is not a file and matches no benchmark receipt in {store.url} "
        "(selectors: a path, latest, latest~N, a commit prefix, YYYY-MM-DD)"
    )


def verdict_text(receipt: Mapping[str, Any]) -> str:
    return verdict(verify(receipt))


def verified(entries: list[Entry]) -> tuple[list[Entry], list[str]]:
    """The entries that pass verification, and one line per refused one naming its failing gate."""
    kept, refused = [], []
    for e in entries:
        line = None if e.receipt is None else verify(e.receipt).refusal(e.name)
        if line is None:
            kept.append(e)
        else:
            refused.append(line)
    return kept, refused


def table(entries: list[Entry]) -> pd.DataFrame:
    """`archive list`: one row per archived file, oldest first."""
    rows = []
    for e in entries:
        r = e.receipt
        if r is None:
            rows.append(
                {
                    "date": None,
                    "commit": None,
                    "kind": None,
                    "model": None,
                    "threads": None,
                    "decode tok/s": None,
                    "prefill tok/s": None,
                    "verification": f"unreadable: {e.error}",
                    "machine": None,
                    "file": e.name,
                }
            )
            continue
        model = r.get("model") or {}
        rows.append(
            {
                "date": e.moment.strftime("%Y-%m-%d %H:%M") if e.moment else None,
                "commit": (e.commit or "-")[:8],
                "kind": receipt_kind(r),
                "model": model.get("preset") or Path(str(model.get("path", "?"))).stem,
                "threads": r.get("threads"),
                "decode tok/s": _metric_or_none(r, "decode_tok_s"),
                "prefill tok/s": _metric_or_none(r, "prefill_tok_s"),
                "verification": verdict_text(r),
                "machine": e.machine,
                "file": e.name,
            }
        )
    columns = [
        "date",
        "commit",
        "kind",
        "model",
        "threads",
        "decode tok/s",
        "prefill tok/s",
        "verification",
        "machine",
        "file",
    ]
    return pd.DataFrame(rows, columns=columns)


def _metric_or_none(receipt: Mapping[str, Any], key: str) -> float | None:
    try:
        return value(receipt, BY_KEY[key])
    except HarnessError:
        return None


def add(source: Path, where: Where) -> tuple[str, bool]:
    """Validate a receipt file and store its bytes in the archive; see add_bytes."""
    data = read_regular_file(source, MAX_RECEIPT_BYTES)
    return add_bytes(data, load_checked(source, data), where, str(source))


def add_bytes(
    data: bytes,
    receipt: Mapping[str, Any],
    where: Where,
    label: str,
    verified: VerificationResult | None = None,
) -> tuple[str, bool]:
    """Store a verified receipt's exact bytes under its canonical name; returns (location, stored).

    The archive never replaces an object: a name another receipt holds makes this one take the next free
    `_2`, `_3`... name (as two benchmarks writing in the same microsecond do), and the very same bytes already
    archived under one of those names are "already archived" (stored False). A receipt failing verification is
    refused before anything is written; `verified` is that receipt's verification when the caller has it.
    """
    result = verified if verified is not None else verify(receipt)
    line = result.refusal(label)
    if line is not None:
        raise HarnessError(f"{line}; not archived")
    store = open_store(where)
    name = receipt_filename(receipt)
    for attempt in range(1, _MAX_NAME_ATTEMPTS + 1):
        candidate = name if attempt == 1 else f"{name[: -len('.json')]}_{attempt}.json"
        try:
            store.create(candidate, data)
        except NameTaken:
            if store.read(candidate) == data:
                return store.location(candidate), False
            continue
        return store.location(candidate), True
    raise HarnessError(f"{store.url}: {_MAX_NAME_ATTEMPTS} receipts already use the name {name}")


def prune_plan(where: Where, keep: int) -> list[Entry]:
    """The receipts `prune --keep N` would delete: the oldest beyond the newest `keep` (top level only)."""
    if keep < 1:
        raise HarnessError(f"--keep must be >= 1 (got {keep})")
    dated = [e for e in scan(where) if e.moment is not None]
    return dated[: max(0, len(dated) - keep)]


def prune(where: Where, keep: int) -> list[Entry]:
    """Delete the planned objects one at a time; the plan is fixed before the first deletion, so a receipt
    written meanwhile is never touched, and subfolders (baseline/, phases/) are never looked into."""
    store = open_store(where)
    doomed = prune_plan(store, keep)
    for entry in doomed:
        store.delete(entry.name)  # gone already (removed concurrently) is fine: the goal holds
    return doomed


def machines(entries: list[Entry]) -> pd.DataFrame:
    """`archive machines`: one row per host fingerprint in the archive, with its receipts' date range."""
    seen: dict[str, dict[str, Any]] = {}
    for e in entries:
        if e.receipt is None or e.moment is None:
            continue
        m = machine_of(e.receipt)
        row = seen.setdefault(
            m.id,
            {
                "machine": m.id,
                "cpu": m.cpu_model,
                "cores": m.cores,
                "memory GiB": m.memory_gib,
                "isa flags": " ".join(m.isa_flags),
                "receipts": 0,
                "first": e.moment,
                "last": e.moment,
            },
        )
        row["receipts"] += 1
        row["first"], row["last"] = min(row["first"], e.moment), max(row["last"], e.moment)
    rows = [
        {**r, "first": r["first"].strftime("%Y-%m-%d %H:%M"), "last": r["last"].strftime("%Y-%m-%d %H:%M")}
        for r in seen.values()
    ]
    columns = ["machine", "cpu", "cores", "memory GiB", "isa flags", "receipts", "first", "last"]
    return pd.DataFrame(rows, columns=columns)
