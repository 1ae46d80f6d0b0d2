"""Facts about the machine, the software and the harness checkout that a receipt records."""

import os
import platform
import resource
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

ENV_PREFIXES = ("BITNET_", "NUMBA_", "OMP_", "MKL_", "OPENBLAS_")
_CPUINFO = Path("/proc/cpuinfo")
_GIT_TIMEOUT_S = 5.0


def _cpuinfo_field(name: str) -> str | None:
    """First value of a `/proc/cpuinfo` field, or None where the file or field does not exist."""
    try:
        with _CPUINFO.open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, sep, value = line.partition(":")
                if sep and key.strip() == name:
                    return value.strip()
    except OSError:
        return None
    return None


def _package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _memory_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def threading_layer() -> str | None:
    """The numba threading layer in use, or None when no parallel kernel has run yet in this process."""
    if "numba" not in sys.modules:
        return None
    import numba

    try:
        return str(numba.threading_layer())
    except ValueError:
        return None


def host_facts() -> dict[str, Any]:
    """The receipt's `host` section; call it after the run so the threading layer is known."""
    flags = _cpuinfo_field("flags")
    return {
        "cpu_model": _cpuinfo_field("model name") or platform.processor() or None,
        "cpu_flags": sorted(set(flags.split())) if flags else [],
        "cores": _usable_cores(),
        "memory_bytes": _memory_bytes(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "numba": _package_version("numba"),
        "llvmlite": _package_version("llvmlite"),
        "numpy": _package_version("numpy"),
        "threading_layer": threading_layer(),
    }


def environment_facts(strict_loader: bool) -> dict[str, Any]:
    """The receipt's `environment` section: strict mode and every variable that can change the run."""
    variables = {k: v for k, v in sorted(os.environ.items()) if k.startswith(ENV_PREFIXES)}
    return {"strict_loader": bool(strict_loader), "variables": variables}


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args],
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_facts(root: Path | None = None) -> tuple[str | None, bool | None]:
    """(HEAD commit, dirty) of the harness checkout; (None, None) when it is not the top of a git checkout."""
    root = (root or Path(__file__).resolve().parents[2]).resolve()
    top = _git(root, "rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != root:
        return None, None
    commit = _git(root, "rev-parse", "HEAD")
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    if commit is None or status is None:
        return None, None
    return commit, bool(status)


def harness_facts(harness_version: str) -> dict[str, Any]:
    """The receipt's `harness` section."""
    commit, dirty = git_facts()
    return {"version": harness_version, "git_commit": commit, "git_dirty": dirty}


def peak_rss_bytes() -> int:
    """Peak resident set size of this process (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)
