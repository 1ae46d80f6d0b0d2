"""The terminal side of a session's progress: spinners, notes and progress bars on stderr (rich)."""

from contextlib import AbstractContextManager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

err = Console(stderr=True)


class ConsoleProgress:
    """harness.progress.Progress on stderr: stdout stays for the report and JSON."""

    def status(self, message: str) -> AbstractContextManager[object]:
        return err.status(message)

    def note(self, message: str) -> None:
        err.print(message, markup=False)

    def tasks(self) -> Progress:
        columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
        return Progress(*columns, TimeElapsedColumn(), console=err, transient=False)
