"""Console entry point that honours Ctrl-C from the first instant.

`harness.cli` imports numba, pandas and the kernels (about a second); a SIGINT in that window would otherwise
print a KeyboardInterrupt traceback. Here the import itself is guarded, then `harness.cli.main` takes over.
"""

import sys

EXIT_INTERRUPTED = 130


def main() -> None:
    """Import the CLI and run it; an interrupt at any point exits 130 with one line."""
    try:
        from harness.cli import main as cli_main
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        raise SystemExit(EXIT_INTERRUPTED) from None
    cli_main()
