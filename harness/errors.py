"""Errors the harness raises for bad input or unusable files: one line, exit code 2."""


class HarnessError(Exception):
    """A user-facing failure; the CLI prints `error: <message>` and exits 2."""
