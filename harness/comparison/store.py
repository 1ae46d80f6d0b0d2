"""Where archived receipts live: a local folder, or any filesystem fsspec knows (s3://bucket/prefix, ...).

One object per receipt, named `<UTC timestamp>_<model>_<backend>_<short commit>.json`, written once and
never replaced, so writers on many machines can share one archive:

- a folder (a path or file://...): engine.atomic's exclusive write: a hidden temporary file, fsynced, then
  hard-linked to its name (the link fails when the name exists). Readers see the whole file or nothing; a
  killed writer leaves only a hidden `.part` file, swept by the next writer on that host.
- s3:// (the `archive-s3` extra, s3fs): one PUT with `If-None-Match: *`. A PUT is atomic (the object appears
  complete or not at all; an upload cut off leaves nothing), and the condition makes the store refuse a name
  that exists (HTTP 412), so two writers never replace each other's receipt. Receipts are at most 16 MiB,
  always one PUT, never a multipart upload.
- any other fsspec filesystem: its `pipe_file(mode="create")`, which refuses an existing name; how atomic the
  write and how race-free the refusal is depends on that filesystem (the generic one checks, then writes).
"""

import contextlib
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from engine.atomic import TargetExistsError, atomic_write
from harness.errors import HarnessError
from harness.receipts.files import MAX_RECEIPT_BYTES, read_regular_file
from harness.receipts.signing import is_envelope_path

EXTRA_HINT = (
    "pip install 'bitnet-harness[archive-s3]' (fsspec and s3fs; other stores need their fsspec package)"
)
# Fail within seconds, not minutes, when an object store does not answer.
_S3_OPTIONS: dict[str, Any] = {
    "config_kwargs": {"connect_timeout": 10, "read_timeout": 60, "retries": {"max_attempts": 3}},
}


class NameTaken(HarnessError):
    """The store already holds an object of that name; nothing was written."""


class ReceiptStore(ABC):
    """An archive's storage: a flat set of named receipt objects."""

    url: str

    @abstractmethod
    def names(self) -> list[str]:
        """The names of the receipt objects at the top level (`*.json`, no signature envelopes), sorted."""

    @abstractmethod
    def read(self, name: str) -> bytes:
        """One object's bytes (at most the receipt size cap)."""

    @abstractmethod
    def create(self, name: str, data: bytes) -> None:
        """Write a new object, all at once; NameTaken when the name exists (the existing object is kept)."""

    @abstractmethod
    def delete(self, name: str) -> None:
        """Remove one object (gone already is fine)."""

    def location(self, name: str) -> str:
        """Where an object is, for people and messages."""
        return f"{self.url.rstrip('/')}/{name}"


def _is_receipt_name(name: str) -> bool:
    return name.endswith(".json") and not name.startswith(".") and not is_envelope_path(name)


class FolderStore(ReceiptStore):
    """A local folder; the archive is its top-level *.json files (subfolders such as baseline/ are not)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.url = str(folder)

    def names(self) -> list[str]:
        if not self.folder.is_dir():
            raise HarnessError(f"archive folder {self.folder} does not exist")
        return sorted(p.name for p in self.folder.glob("*.json") if p.is_file() and _is_receipt_name(p.name))

    def read(self, name: str) -> bytes:
        return read_regular_file(self.folder / name, MAX_RECEIPT_BYTES)

    def create(self, name: str, data: bytes) -> None:
        try:
            with atomic_write(self.folder / name, exclusive=True) as fh:
                fh.write(data)
        except TargetExistsError:
            raise NameTaken(f"{self.location(name)} exists") from None

    def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.folder / name)

    def location(self, name: str) -> str:
        return str(self.folder / name)


class FsspecStore(ReceiptStore):
    """A prefix on a filesystem fsspec knows; every failure of the store becomes one HarnessError line."""

    def __init__(self, url: str) -> None:
        try:
            import fsspec
        except ImportError:
            raise HarnessError(f"archive {url}: a remote archive needs fsspec: {EXTRA_HINT}") from None
        self.url = url.rstrip("/")
        protocol = url.split("://", 1)[0]
        options = _S3_OPTIONS if protocol in ("s3", "s3a") else {}
        try:
            self.fs, self.root = fsspec.core.url_to_fs(self.url, **options)
        except (ImportError, ValueError) as exc:
            raise HarnessError(f"archive {url}: {_one_line(exc)}; {EXTRA_HINT}") from None
        self.root = self.root.rstrip("/")

    def _path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def _fail(self, what: str, exc: BaseException) -> HarnessError:
        return HarnessError(f"archive {self.url}: cannot {what}: {_one_line(exc)}")

    def names(self) -> list[str]:
        try:
            self.fs.invalidate_cache(self.root)
            listing = self.fs.ls(self.root, detail=True)
        except FileNotFoundError:
            # On an object store only the bucket (the first part) must exist; prefixes come with objects.
            bucket = self.root.split("/", 1)[0]
            try:
                exists = self.fs.exists(bucket)
            except Exception as exc:  # the store's client raises its own types: one line each
                raise self._fail("list it", exc) from None
            if not exists:
                raise HarnessError(f"archive {self.url} does not exist") from None
            return []  # a prefix with no objects yet: an empty archive
        except Exception as exc:
            raise self._fail("list it", exc) from None
        names = [str(e["name"]).rstrip("/").rsplit("/", 1)[-1] for e in listing if e.get("type") == "file"]
        return sorted(n for n in names if _is_receipt_name(n))

    def read(self, name: str) -> bytes:
        try:  # one ranged GET: an object larger than the cap is never read whole
            data = self.fs.cat_file(self._path(name), start=0, end=MAX_RECEIPT_BYTES + 1)
        except Exception as exc:
            raise self._fail(f"read {name}", exc) from None
        if len(data) > MAX_RECEIPT_BYTES:
            raise HarnessError(
                f"{self.location(name)} is larger than {MAX_RECEIPT_BYTES} bytes; not a receipt"
            )
        return bytes(data)

    def create(self, name: str, data: bytes) -> None:
        try:
            self.fs.pipe_file(self._path(name), data, mode="create")
        except FileExistsError:
            raise NameTaken(f"{self.location(name)} exists") from None
        except Exception as exc:
            raise self._fail(f"write {name}", exc) from None
        finally:
            self.fs.invalidate_cache(self.root)

    def delete(self, name: str) -> None:
        try:
            self.fs.rm_file(self._path(name))
        except FileNotFoundError:
            return
        except Exception as exc:
            raise self._fail(f"delete {name}", exc) from None
        finally:
            self.fs.invalidate_cache(self.root)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def open_store(where: "str | os.PathLike[str] | ReceiptStore") -> ReceiptStore:
    """The store an `--archive` value names: a folder path or file:// URL, else an fsspec URL."""
    if isinstance(where, ReceiptStore):
        return where
    text = os.fspath(where)
    if "://" not in text:
        return FolderStore(Path(text))
    if text.startswith("file://"):
        return FolderStore(Path(text[len("file://") :]))
    return FsspecStore(text)
