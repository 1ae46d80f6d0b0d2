"""Atomic file writes: readers see the old file or the complete new one, never a half-written one.

The data goes to a hidden temporary file in the target's folder (`.<name>.<host>-<pid>.<random>.part`), is
fsynced, then renamed (or hard-linked, for exclusive writes) into place. A process killed with SIGKILL cannot
remove its temporary file, so every write first sweeps the folder of temporary files whose writer (same host,
process id) is no longer alive. Temporary names start with a dot and end in `.part`: listings of `*.json` or
`*.gguf` never see them. Disk and permission errors become one-line EngineErrors naming the target.
"""

import contextlib
import errno
import hashlib
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from engine.errors import EngineError

TEMP_SUFFIX = ".part"
_TEMP_NAME = re.compile(r"^\..+\.([0-9a-f]{8})-(\d+)\.[^.]+\.part$")


class TargetExistsError(EngineError):
    """An exclusive write found its target name taken; the existing file is untouched."""


def _host_tag() -> str:
    """8 hex digits naming this host, so a sweep never judges another machine's process ids."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_temps(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove temporary files left in `folder` by writers on this host that have died; returns them."""
    removed: list[Path] = []
    host = _host_tag()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP_NAME.match(entry.name)
        if match is None or match.group(1) != host or _pid_alive(int(match.group(2))):
            continue
        with contextlib.suppress(OSError):
            os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


def _write_error(target: Path, exc: OSError) -> EngineError:
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        reason = f"{reason} (the disk is full; free space and run again)"
    return EngineError(f"cannot write {target}: {reason}")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], *, exclusive: bool = False) -> Iterator[BinaryIO]:
    """Yield a binary file in the target's folder; on success fsync it and rename it into place.

    `exclusive=True` never replaces an existing file (a hard link, which fails if the name exists) and raises
    TargetExistsError instead. On any error the temporary file is removed and the target is untouched;
    OSErrors (a full disk, no permission) become one-line EngineErrors.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale_temps(target.parent)
        prefix = f".{target.name}.{_host_tag()}-{os.getpid()}."
        fd, tmp_name = tempfile.mkstemp(prefix=prefix, suffix=TEMP_SUFFIX, dir=target.parent)
    except OSError as exc:
        raise _write_error(target, exc) from None
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, 0o666 & ~_current_umask())  # mkstemp creates 0600; give the usual permissions
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        if exclusive:
            try:
                os.link(tmp, target)
            except FileExistsError:
                raise TargetExistsError(f"{target} already exists; refusing to overwrite it") from None
            tmp.unlink()
        else:
            os.replace(tmp, target)
        _fsync_dir(target.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _write_error(target, exc) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
