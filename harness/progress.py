"""How a session tells its caller what it is doing, without knowing how (or whether) that is shown.

The command line passes a rich `Progress` board and a console; tests and library callers pass `SILENT`. The
task methods have rich.progress.Progress's names and arguments, so a rich board is a `TaskBoard` as it is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Protocol


class TaskBoard(Protocol):
    """Rows of progress, one per task; `total=None` is a task of unknown length."""

    def add_task(self, description: str, total: float | None = None) -> int: ...

    def update(
        self,
        task_id: int,
        *,
        total: float | None = None,
        completed: float | None = None,
        description: str | None = None,
    ) -> None: ...


class Progress(Protocol):
    """What a session reports: a step of unknown length, a line for the reader, a board of counted tasks."""

    def status(self, message: str) -> AbstractContextManager[object]: ...

    def note(self, message: str) -> None: ...

    def tasks(self) -> AbstractContextManager[TaskBoard]: ...


class _SilentBoard:
    def add_task(self, description: str, total: float | None = None) -> int:
        return 0

    def update(
        self,
        task_id: int,
        *,
        total: float | None = None,
        completed: float | None = None,
        description: str | None = None,
    ) -> None:
        return None


class Silent:
    """Reports nothing: for tests and for callers that only want the outcome."""

    def status(self, message: str) -> AbstractContextManager[object]:
        return contextlib.nullcontext()

    def note(self, message: str) -> None:
        return None

    @contextlib.contextmanager
    def tasks(self) -> Iterator[TaskBoard]:
        yield _SilentBoard()


SILENT = Silent()
