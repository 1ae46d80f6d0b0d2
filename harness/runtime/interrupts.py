"""Ctrl-C that numba would swallow: remembered, and raised again where the harness can act on it.

numba loads cached kernels through LLVM callbacks made with ctypes; a KeyboardInterrupt raised inside one is
printed as "Exception ignored" and dropped, and the command would run on to the end. `install()` (called by
`harness.cli.main`) makes SIGINT raise KeyboardInterrupt as Python's own handler does, and also remember it;
`raise_if_swallowed()`, called after each stretch of kernel loading, raises it again when it was lost; the
"Exception ignored" report of such an interrupt is not printed, nor, once an interrupt arrived, the reports of
finalizers that fail while the interpreter tears down (Python's other unraisable reports are).
"""

import signal
import sys
import threading
from types import FrameType

_seen = False


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    global _seen
    _seen = True
    raise KeyboardInterrupt


def _unraisable(report: "sys.UnraisableHookArgs") -> None:
    if isinstance(report.exc_value, KeyboardInterrupt):
        return  # remembered: raise_if_swallowed raises it again
    if _seen:
        return  # the command is ending on Ctrl-C: finalizers of half-built LLVM objects may fail in teardown
    sys.__unraisablehook__(report)


def install() -> None:
    """Use the remembering handler for SIGINT (main thread only, where Python runs signal handlers)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _interrupt)
        sys.unraisablehook = _unraisable


def raise_if_swallowed() -> None:
    """KeyboardInterrupt when a SIGINT arrived since `install()`; nothing otherwise."""
    if _seen:
        raise KeyboardInterrupt
