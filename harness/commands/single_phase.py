"""What `probe` and `timing` share: the phase run under the resource limits, then its tables or JSON and the
receipt written with --receipts-dir (exit 1 when that receipt fails verification, as `benchmark`)."""

import json
from enum import Enum
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from harness.commands.console import ConsoleProgress
from harness.runtime.limits import resource_limits
from harness.session.phase import PhaseOutcome, PhaseRequest, run_phase_session


def phase_request(phase: str, options: dict[str, Any]) -> PhaseRequest:
    """A command's parameters as the request: every one but --json and the limits is a field of that name."""
    given = {k: v.value if isinstance(v, Enum) else v for k, v in options.items()}
    return PhaseRequest(
        phase, **{k: v for k, v in given.items() if k not in ("as_json", "max_memory", "timeout")}
    )


def run_phase(request: PhaseRequest, limits: tuple[int | None, float | None]) -> PhaseOutcome:
    """The phase with its model, under --max-memory and --timeout."""
    with resource_limits(*limits):
        return run_phase_session(request, ConsoleProgress())


def finish(outcome: PhaseOutcome, as_json: bool, tables: list[Table]) -> None:
    """The section as JSON (stdout stays pure JSON) or as tables, then the receipt's path and verdict."""
    if as_json:
        typer.echo(json.dumps(outcome.section, indent=2))
    else:
        for table in tables:
            Console().print(table)
    if outcome.path is not None and outcome.verification is not None:
        for failure in outcome.verification.failures:
            for line in failure.lines():
                typer.echo(line, err=as_json)
        state = "verified" if outcome.verification.ok else "FAILED verification"
        typer.echo(f"receipt: {outcome.path} ({state})", err=as_json)
    raise typer.Exit(outcome.exit_code)
