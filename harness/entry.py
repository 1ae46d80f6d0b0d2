"""Console entry point that honours Ctrl-C from the first instant.

`harness.cli` imports numba, pandas and the kernels (about a second). A KeyboardInterrupt raised in that
window can surface as another exception (Python wraps it in a RuntimeError when it lands in a class
body's `__set_name__`, as during pydantic's import), so catching it is not enough: while importing, SIGINT
has its own handler, which writes one line and exits 130 at once (nothing has been written yet that would
need cleaning up). Then Python's default handler is back and `harness.cli.main` handles interrupts itself.

After an interrupt the process leaves without the interpreter's teardown (exit handlers still run): freeing
numba's compiled code takes about 0.45 s of CPU, 0.6-1 s on a loaded host, and the user is waiting.
"""

import atexit
import os
import signal
import sys
from types import FrameType

EXIT_INTERRUPTED = 130
_MESSAGE = b"error: interrupted\n"


def _interrupted_while_starting(_signum: int, _frame: FrameType | None) -> None:
    os.write(2, _MESSAGE)
    os._exit(EXIT_INTERRUPTED)


def main() -> None:
    """Import the CLI and run it; an interrupt at any point exits 130 with one line."""
    previous = signal.signal(signal.SIGINT, _interrupted_while_starting)
    try:
        from harness.cli import main as cli_main
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        cli_main()
    except KeyboardInterrupt:  # landed between restoring the handler and the CLI's own guard
        sys.stderr.write(_MESSAGE.decode())
        _leave_interrupted()
    except SystemExit as exc:
        if exc.code == EXIT_INTERRUPTED:
            _leave_interrupted()
        raise
    finally:
        # the work is done and its files written: an interrupt now would only turn the exit into a traceback
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _leave_interrupted() -> None:
    """Exit 130 at once: exit handlers run and output is flushed, the interpreter's teardown is skipped
    (every file of the command was already written or removed while the interrupt unwound)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_INTERRUPTED)
