"""Output shared by several commands: tables in the chosen format, a comparison, an unusable-input line."""

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import typer
from junitparser import JUnitXml
from rich.console import Console
from rich.text import Text

from harness.comparison.compare import Comparison
from harness.comparison.tables import OutputFormat, dumps, frame_text
from harness.reporting.comparison import comparison_frame, header
from harness.reporting.junit import write_junit
from harness.reporting.summary import append_summary, check_targets, comparison_markdown, summary_targets
from harness.reporting.tables import rich_table


def emit_frame(frame: pd.DataFrame, fmt: OutputFormat, title: str) -> None:
    """A table as JSON records, CSV, markdown (with a bold title) or a rich table."""
    if fmt is OutputFormat.rich:
        Console().print(rich_table(frame, title))
    else:
        typer.echo(frame_text(frame, fmt.value, title), nl=False)


def render_comparison(comp: Comparison, fmt: OutputFormat, console: Console | None = None) -> None:
    """Print a comparison in the chosen format; refusal reasons go with it (stderr for the table formats)."""
    console = console or Console()
    err = Console(stderr=True)
    if fmt is OutputFormat.json:
        typer.echo(dumps(comp.to_dict()))
        return
    for reason in comp.reasons:
        err.print(Text(f"not comparable ({reason.key}): {reason.message}"))
    if comp.refused:
        unverified = any(r.key == "verification" for r in comp.reasons)
        hint = (
            "a receipt that fails verification is never compared"
            if unverified
            else ("--force compares anyway, --ignore KEY skips one check")
        )
        err.print(Text(f"refusing to compare; {hint}"))
        return
    if fmt is OutputFormat.csv:
        typer.echo(comp.frame().to_csv(index=False), nl=False)
        return
    notes = [*comp.unreliable, *comp.notes]
    if fmt is OutputFormat.md:
        typer.echo(comparison_markdown(comp))
        return
    console.print(rich_table(comparison_frame(comp), header(comp)))
    for note in notes:
        console.print(Text(f"note: {note}"))
    console.print(Text(f"verdict: {comp.overall}"))


class Reports:
    """The files a command writes beside its output: JUnit XML (--junit) and markdown summaries
    (--summary-md and $GITHUB_STEP_SUMMARY). Their folders are checked when the command starts."""

    def __init__(self, junit: Path | None, summary_md: Path | None) -> None:
        self.junit = junit
        self.summaries = summary_targets(summary_md)
        check_targets([*self.summaries, *([junit] if junit is not None else [])])

    def write(self, xml: Callable[[], JUnitXml] | None, text: Callable[[], str]) -> None:
        """Build and write what was asked for (nothing is built otherwise: a summary bootstraps intervals)."""
        if self.junit is not None and xml is not None:
            write_junit(xml(), self.junit)
        if self.summaries:
            append_summary(text(), self.summaries)


def fail_unusable(message: str, as_json: bool, path: Path, code: int = 2) -> None:
    """Unusable input: one `error:` line (or a JSON object saying so), then exit `code`."""
    if as_json:
        typer.echo(json.dumps({"path": str(path), "valid": None, "error": message}))
    else:
        typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)
