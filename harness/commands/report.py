"""`report`: show any receipt in the terminal (model, host, run, kernels, phase summaries, the verdict), or
write it as one self-contained HTML page with the archive's history of a metric (`--html FILE`)."""

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from engine.atomic import atomic_write
from engine.errors import EngineError
from harness.commands.render import fail_unusable
from harness.comparison import archive, history
from harness.comparison.metrics import BY_KEY, Metric, metric
from harness.errors import HarnessError
from harness.machine.fingerprint import machine_of
from harness.receipts.files import load_checked
from harness.receipts.signing import not_an_envelope
from harness.receipts.verify import verify
from harness.reporting.html import History, render_html
from harness.reporting.receipt import render


def register(app: typer.Typer) -> None:
    """Add `report` to the top-level app."""
    app.command("report")(report)


def report(
    path: Annotated[Path, typer.Argument(help="Receipt JSON file.")],
    html: Annotated[
        Path | None,
        typer.Option(
            "--html", help="Write one self-contained HTML page (charts inline, no network).", dir_okay=False
        ),
    ] = None,
    archive_url: Annotated[
        str | None,
        typer.Option(
            "--archive",
            help="Archive whose history of --metric the HTML page shows (a folder or an fsspec URL; default: "
            "receipts/ when it exists).",
        ),
    ] = None,
    metric_key: Annotated[
        str, typer.Option("--metric", help=f"The metric of the page's history: {', '.join(BY_KEY)}.")
    ] = "decode_tok_s",
) -> None:
    """Show a receipt: model, host, run, kernels with their counters, phase summaries and the verdict; with
    --html FILE, the same and the latency distribution, phases, every gate and the archive's history as a
    page."""
    m = metric(metric_key)
    if html is not None and not html.parent.is_dir():
        raise HarnessError(f"cannot write {html}: folder {html.parent} does not exist")
    try:
        receipt = load_checked(not_an_envelope(path))
        result = verify(receipt)
    except (HarnessError, EngineError) as exc:
        fail_unusable(str(exc), False, path)
        return
    if html is None:
        render(receipt, Console(), result)
        return
    page = render_html(receipt, result, str(path), _history(receipt, archive_url, m))
    with atomic_write(html) as fh:
        fh.write(page.encode("utf-8"))
    typer.echo(f"report: {html}")


def _history(receipt: dict[str, Any], archive_url: str | None, m: Metric) -> History:
    """The metric over the archive for this receipt's model, threads and machine: the receipts that pass
    verification, as `history` takes them."""
    if archive_url is None:
        if not Path(archive.DEFAULT_ARCHIVE).is_dir():
            return History(
                None, m, "no archive", f"(no {archive.DEFAULT_ARCHIVE}/ folder here; --archive URL)"
            )
        archive_url = archive.DEFAULT_ARCHIVE
    model = receipt.get("model") or {}
    entries, refused = archive.verified(archive.usable(archive_url))
    table = history.frame(
        entries,
        m,
        model=model.get("preset") or Path(str(model.get("path", "?"))).stem,
        threads=receipt.get("threads"),
        machine=machine_of(receipt).id,
    )
    left_out = f"Left out: {len(refused)} archived receipt(s) that fail verification." if refused else ""
    return History(table, m, archive_url, left_out)
