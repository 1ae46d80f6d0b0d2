"""Ctrl-C that numba would swallow: remembered, and raised again where the harness can act on it.

numba loads cached kernels through LLVM callbacks made with ctypes, and frees LLVM objects in finalizers;
a KeyboardInterrupt raised inside either is printed as "Exception ignored" and dropped, and the command
would run on to the end. `install()` (called by `harness.cli.main`) makes SIGINT raise KeyboardInterrupt as
Python's own handler does, and also remember it. A dropped one is sent again within milliseconds (it lands
in the next Python code outside the callback or finalizer), and `raise_if_swallowed()`, called after each
stretch of kernel loading, raises it in case that was lost too. The "Exception ignored" report of such an
interrupt is not printed, nor, once an interrupt arrived, the reports of finalizers that fail while the
interpreter tears down (Python's other unraisable reports are).
"""

import _thread
import signal
import sys
import threading
from types import FrameType

_seen = False
_AGAIN_SECONDS = 0.005


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    global _seen
    _seen = True
    raise KeyboardInterrupt


def _unraisable(report: "sys.UnraisableHookArgs") -> None:
    if isinstance(report.exc_value, KeyboardInterrupt):
        _deliver_again()
        return
    if _seen:
        return  # the command is ending on Ctrl-C: finalizers of half-built LLVM objects may fail in teardown
    sys.__unraisablehook__(report)


def _deliver_again() -> None:
    """SIGINT once more, a few milliseconds from now, from a helper thread: delivered from here, the handler
    would run inside this hook and be dropped again. Without it, a dropped interrupt waits for the next
    `raise_if_swallowed()`, seconds away while numba imports modules to load a cached kernel."""
    while True:
        try:
            timer = threading.Timer(_AGAIN_SECONDS, _thread.interrupt_main, args=(signal.SIGINT,))
            timer.daemon = True
            timer.start()
            return
        except KeyboardInterrupt:
            continue  # an earlier helper's delivery landed here, inside the hook: send another
        except RuntimeError:
            return  # no new threads while the interpreter shuts down; the command is ending anyway


def install() -> None:
    """Use the remembering handler for SIGINT (main thread only, where Python runs signal handlers)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _interrupt)
        sys.unraisablehook = _unraisable


def raise_if_swallowed() -> None:
    """KeyboardInterrupt when a SIGINT arrived since `install()`; nothing otherwise."""
    if _seen:
        raise KeyboardInterrupt
