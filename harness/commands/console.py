"""The terminal side of a session's progress: spinners, notes and progress bars on stderr (rich)."""

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

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


def _human_bytes(n: int) -> str:
    units = ("B", "KB", "MB", "GB")
    size, i = float(n), 0
    while size >= 1024 and i < len(units) - 1:
        size /= 1024
        i += 1
    return f"{size:.2f} {units[i]}" if i else f"{n} B"


def write_with_progress(description: str, write: Callable[[Callable[[int, int, str], None]], Path]) -> str:
    """Run a model writer `write(progress)` under a per-tensor progress bar on stderr; the summary line."""
    start = time.perf_counter()
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[tensor]}"),
    )
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task(description, total=None, tensor="")
        written = 0

        def advance(done: int, total: int, name: str) -> None:
            nonlocal written
            written = done
            bar.update(task, total=total, completed=done, tensor=name)

        path = write(advance)
    seconds = time.perf_counter() - start
    return f"wrote {path} ({_human_bytes(path.stat().st_size)}, {written} tensors, {seconds:.1f} s)"
