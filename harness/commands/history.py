"""`history`: one metric over the archive by date and commit, with each receipt's noise band.

Receipts that fail verification are left out, each with a warning line naming its failing gate: one bad file
does not hide the rest of the archive, and none of its numbers reach the table.
"""

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from harness.commands.options import ArchiveOpt, OutputFormatOpt
from harness.commands.render import emit_frame
from harness.comparison import archive, history
from harness.comparison.metrics import BY_KEY, metric
from harness.comparison.tables import OutputFormat
from harness.errors import HarnessError


def register(app: typer.Typer) -> None:
    """Add `history` to the top-level app."""
    app.command("history")(history_cmd)


def history_cmd(
    metric_key: Annotated[
        str, typer.Option("--metric", help=f"One of: {', '.join(BY_KEY)}.")
    ] = "decode_tok_s",
    archive_dir: ArchiveOpt = archive.DEFAULT_ARCHIVE,
    model: Annotated[
        str | None, typer.Option("--model", help="Only this model (preset or file stem).")
    ] = None,
    threads: Annotated[
        int | None, typer.Option("--threads", min=1, help="Only runs with this many threads.")
    ] = None,
    machine: Annotated[
        str | None,
        typer.Option(
            "--machine", help="Only this machine (a host fingerprint id or prefix; `archive machines`)."
        ),
    ] = None,
    chart: Annotated[
        Path | None, typer.Option("--chart", help="Also write a .png or .svg chart (needs the plot extra).")
    ] = None,
    fmt: OutputFormatOpt = OutputFormat.rich,
) -> None:
    """A metric over the archive by date and commit with each receipt's noise band, as a table and a chart
    (a terminal chart; PNG/SVG with --chart when matplotlib is installed)."""
    m = metric(metric_key)
    entries, refused = archive.verified(archive.usable(archive_dir))
    for line in refused:
        typer.echo(f"warning: skipped {line}", err=True)
    table = history.frame(entries, m, model=model, threads=threads, machine=machine)
    if table.empty:
        raise HarnessError(f"no receipt in {archive_dir} has {m.label} samples (after the filters)")
    if chart is not None:
        written = history.write_chart(table, m, chart)
        typer.echo(f"chart: {written}", err=True)
    emit_frame(table, fmt, f"{m.label} over {archive_dir}")
    mixed = table["machine"].nunique()
    if mixed > 1:
        typer.echo(
            f"note: {mixed} machines in this history; --machine ID keeps one (see `archive machines`)",
            err=True,
        )
    if fmt is OutputFormat.rich:
        for line in history.terminal_chart(table, m):
            Console().print(Text(line))
