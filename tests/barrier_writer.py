"""Run one `bitnet-harness` command in its own process, the moment a start file appears.

`python -m tests.barrier_writer START ARGS...`: imports the command line and the S3 client first (seconds on a
busy machine), says so by creating `START.ready.<pid>`, waits for the file START, then runs the command with
ARGS. Concurrent-writer tests line up many such processes so that their writes really meet.
"""

import os
import sys
import time
from pathlib import Path

_WAIT_S = 120.0


def main() -> None:
    start, args = Path(sys.argv[1]), sys.argv[2:]
    import s3fs  # noqa: F401 - imported before the start signal, as the command would import it after

    from harness.cli import main as cli_main

    Path(f"{start}.ready.{os.getpid()}").touch()
    deadline = time.monotonic() + _WAIT_S
    while not start.exists():
        if time.monotonic() > deadline:
            sys.exit(f"start file {start} never appeared")
        time.sleep(0.002)
    sys.argv = ["bitnet-harness", *args]
    cli_main()


if __name__ == "__main__":
    main()
