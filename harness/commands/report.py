"""`report`: show any receipt in the terminal (model, host, run, kernels, phase summaries, the verdict)."""

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from engine.errors import EngineError
from harness.commands.render import fail_unusable
from harness.errors import HarnessError
from harness.receipts.files import load_checked
from harness.receipts.signing import not_an_envelope
from harness.receipts.verify import verify
from harness.reporting.receipt import render


def register(app: typer.Typer) -> None:
    """Add `report` to the top-level app."""
    app.command("report")(report)


def report(path: Annotated[Path, typer.Argument(help="Receipt JSON file.")]) -> None:
    """Show a receipt: model, host, run, kernels with their counters, phase summaries and the verdict."""
    try:
        receipt = load_checked(not_an_envelope(path))
        result = verify(receipt)
    except (HarnessError, EngineError) as exc:
        fail_unusable(str(exc), False, path)
        return
    render(receipt, Console(), result)
