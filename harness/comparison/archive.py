"""The receipt archive: a folder whose top-level *.json files are receipts; its subfolders (baseline/)
are not part of it.

Selectors name one archived receipt: a file path, `latest`, `latest~N`, a commit prefix (newest receipt of
that commit) or a UTC date YYYY-MM-DD (newest receipt of that day). Order is by the receipt's own timestamp.
The archive also holds phase receipts (`probe`, `timing`); they are listed with their kind, but only a path
names one: the other selectors pick benchmark receipts, the ones `compare` and `history` judge.
"""

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from engine.atomic import atomic_write
from harness.comparison.metrics import BY_KEY, value
from harness.comparison.runs import verdict
from harness.errors import HarnessError
from harness.receipts.files import load_checked, load_receipt, parse_timestamp, receipt_filename
from harness.receipts.kind import BENCHMARK, receipt_kind
from harness.receipts.signing import is_envelope_path
from harness.receipts.verify import verify

DEFAULT_ARCHIVE = Path("receipts")
_LATEST = re.compile(r"latest(?:~(\d+))?")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_COMMIT = re.compile(r"[0-9a-f]{4,40}")


@dataclass(frozen=True)
class Entry:
    """An archived receipt file: parsed, or with the one-line reason it could not be used."""

    path: Path
    receipt: dict[str, Any] | None
    moment: datetime | None
    error: str | None = None

    @property
    def commit(self) -> str | None:
        return (self.receipt or {}).get("harness", {}).get("git_commit")


def _entry(path: Path) -> Entry:
    try:
        receipt = load_receipt(path)
        moment = parse_timestamp(str(receipt.get("timestamp")))
    except HarnessError as exc:
        return Entry(path, None, None, str(exc))
    return Entry(path, receipt, moment)


def scan(folder: Path) -> list[Entry]:
    """Every top-level *.json file of the archive, oldest first; unusable files last, with their reason."""
    if not folder.is_dir():
        raise HarnessError(f"archive folder {folder} does not exist")
    files = [p for p in sorted(folder.glob("*.json")) if p.is_file() and not is_envelope_path(p)]
    entries = [_entry(p) for p in files]
    good = sorted((e for e in entries if e.moment is not None), key=lambda e: (e.moment, e.path.name))
    return good + [e for e in entries if e.moment is None]


def usable(folder: Path) -> list[Entry]:
    """The archive's receipts that parse, oldest first."""
    return [e for e in scan(folder) if e.receipt is not None]


def benchmarks(folder: Path) -> list[Entry]:
    """The archive's benchmark receipts that parse, oldest first (what the selectors choose from)."""
    return [e for e in usable(folder) if e.receipt is not None and receipt_kind(e.receipt) == BENCHMARK]


def resolve(selector: str, folder: Path = DEFAULT_ARCHIVE) -> Path:
    """The receipt file a selector names (HarnessError with the reason when none or several do)."""
    as_path = Path(selector)
    if as_path.is_file():
        return as_path
    if match := _LATEST.fullmatch(selector):
        back = int(match.group(1) or 0)
        entries = benchmarks(folder)
        if back >= len(entries):
            raise HarnessError(
                f"{selector}: the archive {folder} holds only {len(entries)} benchmark receipts"
            )
        return entries[-1 - back].path
    if _DATE.fullmatch(selector):
        try:
            day = datetime.strptime(selector, "%Y-%m-%d").date()
        except ValueError:
            raise HarnessError(f"{selector} is not a valid date (YYYY-MM-DD)") from None
        on_day = [e for e in benchmarks(folder) if e.moment is not None and e.moment.date() == day]
        if not on_day:
            raise HarnessError(f"no benchmark receipt in {folder} was written on {selector} (UTC)")
        return on_day[-1].path
    if _COMMIT.fullmatch(selector.lower()):
        hits = [e for e in benchmarks(folder) if (e.commit or "").startswith(selector.lower())]
        commits = {e.commit for e in hits}
        if len(commits) > 1:
            shown = ", ".join(sorted(c[:12] for c in commits if c))
            raise HarnessError(f"commit prefix {selector} is ambiguous ({shown}); give more digits")
        if hits:
            return hits[-1].path
    raise HarnessError(
        f"{selector!r} is not a file and matches no benchmark receipt in {folder} "
        "(selectors: a path, latest, latest~N, a commit prefix, YYYY-MM-DD)"
    )


def verdict_text(receipt: Mapping[str, Any]) -> str:
    return verdict(verify(receipt))


def verified(entries: list[Entry]) -> tuple[list[Entry], list[str]]:
    """The entries that pass verification, and one line per refused one naming its failing gate."""
    kept, refused = [], []
    for e in entries:
        line = None if e.receipt is None else verify(e.receipt).refusal(e.path.name)
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
                    "file": e.path.name,
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
                "file": e.path.name,
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
        "file",
    ]
    return pd.DataFrame(rows, columns=columns)


def _metric_or_none(receipt: Mapping[str, Any], key: str) -> float | None:
    try:
        return value(receipt, BY_KEY[key])
    except HarnessError:
        return None


def add(source: Path, folder: Path) -> tuple[Path, bool]:
    """Validate a receipt and copy its bytes into the archive under its canonical name.

    Returns (archived path, copied). An identical file already there is not copied again; a different file
    under the same name is refused (archived receipts are never overwritten).
    """
    receipt = load_checked(source)
    line = verify(receipt).refusal(str(source))
    if line is not None:
        raise HarnessError(f"{line}; not archived")
    data = source.read_bytes()
    target = folder / receipt_filename(receipt)
    if target.exists():
        if target.read_bytes() == data:
            return target, False
        raise HarnessError(
            f"{target} exists with different contents; archived receipts are never overwritten"
        )
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_write(target, exclusive=True) as fh:
        fh.write(data)
    return target, True


def prune_plan(folder: Path, keep: int) -> list[Path]:
    """The receipts `prune --keep N` would delete: the oldest beyond the newest `keep` (top level only)."""
    if keep < 1:
        raise HarnessError(f"--keep must be >= 1 (got {keep})")
    dated = [e for e in scan(folder) if e.moment is not None]
    return [e.path for e in dated[: max(0, len(dated) - keep)]]


def prune(folder: Path, keep: int) -> list[Path]:
    """Delete the planned files one unlink each; the plan is fixed before the first deletion, so a receipt
    written meanwhile is never touched, and subfolders (baseline/ and any other) are never looked into."""
    doomed = prune_plan(folder, keep)
    for path in doomed:
        try:
            os.unlink(path)
        except FileNotFoundError:
            continue  # removed concurrently: the goal holds
    return doomed
