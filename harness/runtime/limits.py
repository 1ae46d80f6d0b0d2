"""`--max-memory` and `--timeout` for long commands: limits become one-line HarnessErrors (exit 2).

`resource_limits(max_memory_mb, timeout_s)` wraps a command's body. A watchdog thread checks the deadline and
the process's resident memory every 50 ms; when either is crossed it interrupts the main thread with a
signal whose handler raises `LimitExceeded`, a BaseException, so no `except Exception` on the way swallows it
and every `atomic_write` on the way removes its temporary file. At the context's edge it becomes a
HarnessError naming the limit. A sudden huge allocation (MemoryError, capped by RLIMIT_DATA at twice the
limit so the kernel refuses it before the machine swaps) is reported the same way. Ctrl-C needs nothing
here: Python raises KeyboardInterrupt in the main thread and `harness.cli.main` exits 130.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import threading
import time
from collections.abc import Iterator

from harness.errors import HarnessError

POLL_SECONDS = 0.05
_SIGNAL = signal.SIGUSR1
_PAGE = os.sysconf("SC_PAGE_SIZE")


class LimitExceeded(BaseException):
    """Raised in the main thread when a limit trips; a BaseException so ordinary handlers let it through."""


def rss_bytes() -> int:
    """Current resident set size of this process (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


class _Watchdog(threading.Thread):
    def __init__(self, max_bytes: int | None, deadline: float | None, main_ident: int) -> None:
        super().__init__(name="limits-watchdog", daemon=True)
        self.max_bytes = max_bytes
        self.deadline = deadline
        self.main_ident = main_ident
        self.reason: str | None = None
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.armed = True

    def run(self) -> None:
        while not self.done.wait(POLL_SECONDS):
            if self.deadline is not None and time.monotonic() >= self.deadline:
                self.reason = "timeout"
            elif self.max_bytes is not None and rss_bytes() > self.max_bytes:
                self.reason = "memory"
            if self.reason is not None:
                with self.lock:
                    if self.armed:
                        signal.pthread_kill(self.main_ident, _SIGNAL)
                return

    def disarm(self) -> None:
        """After this, no signal is sent; one already sent finds the handler disarmed too."""
        with self.lock:
            self.armed = False
        self.done.set()
        self.join()


def _message(reason: str, max_memory_mb: int | None, timeout_s: float | None) -> str:
    if reason == "timeout":
        return f"stopped after the --timeout of {timeout_s:g} s"
    return f"stopped: resident memory passed the --max-memory of {max_memory_mb} MB"


@contextlib.contextmanager
def resource_limits(max_memory_mb: int | None = None, timeout_s: float | None = None) -> Iterator[None]:
    """Run the body under the limits (None = no limit); crossing one raises a one-line HarnessError."""
    if max_memory_mb is None and timeout_s is None:
        yield
        return
    if threading.current_thread() is not threading.main_thread():
        raise HarnessError("--max-memory and --timeout work only in the main thread")
    max_bytes = None if max_memory_mb is None else max_memory_mb * 2**20
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    watchdog = _Watchdog(max_bytes, deadline, threading.main_thread().ident or 0)

    def on_signal(_signum: int, _frame: object) -> None:
        if watchdog.armed:
            raise LimitExceeded(watchdog.reason or "timeout")

    previous = signal.signal(_SIGNAL, on_signal)
    old_data = resource.getrlimit(resource.RLIMIT_DATA)
    if max_bytes is not None:
        hard = old_data[1]
        soft = 2 * max_bytes if hard == resource.RLIM_INFINITY else min(2 * max_bytes, hard)
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))
    watchdog.start()
    try:
        yield
    except LimitExceeded as exc:
        raise HarnessError(_message(str(exc), max_memory_mb, timeout_s)) from None
    except MemoryError:
        if max_bytes is None:
            raise
        raise HarnessError(_message("memory", max_memory_mb, timeout_s)) from None
    finally:
        watchdog.disarm()
        resource.setrlimit(resource.RLIMIT_DATA, old_data)
        signal.signal(_SIGNAL, previous)
