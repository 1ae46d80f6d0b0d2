"""`verify-receipt` and `report`: check a receipt file's honesty gates and show any receipt in the terminal.

Exit codes: 0 valid, 1 invalid, 2 unusable input (unreadable file, not a JSON object, unknown schema_version,
unreadable model file, replay unavailable).
"""

import importlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from engine.errors import EngineError
from harness.errors import HarnessError
from harness.options import StrictOpt, strict_flag
from harness.receipt import load_receipt
from harness.report import render
from harness.schema import SCHEMA_VERSION
from harness.verify import ReplayFn, verify

EXIT_VALID, EXIT_INVALID, EXIT_UNUSABLE = 0, 1, 2


def _load(path: Path) -> dict[str, Any]:
    """A parsed receipt of the schema version this harness knows (HarnessError otherwise)."""
    receipt = load_receipt(path)
    version = receipt.get("schema_version")
    if version != SCHEMA_VERSION:
        raise HarnessError(
            f"{path}: unknown schema_version {version!r}; this harness reads {SCHEMA_VERSION!r} receipts"
        )
    return receipt


def _replay_fn(model_path: Path, strict: bool | None) -> ReplayFn:
    """The engine-side replay, imported only when asked for; missing means replay is unavailable."""
    try:
        module = importlib.import_module("harness.replay")
        replay_digest = module.replay_digest
    except (ImportError, AttributeError) as exc:
        raise HarnessError(f"replay is unavailable in this installation ({exc})") from None

    def replay(receipt: Mapping[str, Any]) -> str:
        return replay_digest(receipt, model_path, strict)

    return replay


def _model_for_replay(receipt: Mapping[str, Any], model: Path | None) -> Path:
    """--model, else the recorded path, else the recorded preset rebuilt (a preset receipt needs no file)."""
    recorded = receipt.get("model", {}).get("path") if isinstance(receipt.get("model"), Mapping) else None
    if model is None and isinstance(recorded, str) and recorded:
        model = Path(recorded)
    try:
        from harness.replay import replay_model_path
    except ImportError as exc:
        raise HarnessError(f"replay is unavailable in this installation ({exc})") from None
    return replay_model_path(receipt, model)


def _fail_unusable(message: str, as_json: bool, path: Path) -> None:
    if as_json:
        typer.echo(json.dumps({"path": str(path), "valid": None, "error": message}))
    else:
        typer.echo(f"error: {message}", err=True)
    raise typer.Exit(EXIT_UNUSABLE)


def verify_receipt(
    path: Annotated[Path, typer.Option("--path", help="Receipt JSON file.")],
    model: Annotated[
        Path | None, typer.Option("--model", help="Check the model file's size and sha256.")
    ] = None,
    replay: Annotated[bool, typer.Option("--replay", help="Re-generate the tokens and compare.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    strict_loader: StrictOpt = False,
) -> None:
    """Check a receipt: the schema, then every honesty gate; all failures are listed."""
    try:
        receipt = _load(path)
        model_path = model
        replay_fn = None
        if replay:
            model_path = _model_for_replay(receipt, model)
            replay_fn = _replay_fn(model_path, strict_flag(strict_loader))
        result = verify(receipt, model_path=model_path, replay=replay_fn)
    except (HarnessError, EngineError) as exc:
        _fail_unusable(str(exc), as_json, path)
        return
    if as_json:
        typer.echo(json.dumps({"path": str(path), **result.to_dict()}, indent=2))
    else:
        for failure in result.failures:
            typer.echo(failure.line())
        verdict = "VALID" if result.ok else f"INVALID ({len(result.failures)} failures)"
        skipped = f"; skipped: {', '.join(result.skipped)}" if result.skipped else ""
        typer.echo(f"{path}: {verdict}; {len(result.passed)} gates passed{skipped}")
    raise typer.Exit(EXIT_VALID if result.ok else EXIT_INVALID)


def report(path: Annotated[Path, typer.Argument(help="Receipt JSON file.")]) -> None:
    """Show a receipt: model, host, run, kernels with their counters, phase summaries and the verdict."""
    try:
        receipt = _load(path)
        result = verify(receipt)
    except (HarnessError, EngineError) as exc:
        _fail_unusable(str(exc), False, path)
        return
    render(receipt, Console(), result)


def register(app: typer.Typer) -> None:
    """Add `verify-receipt` and `report` to the given app."""
    app.command("verify-receipt")(verify_receipt)
    app.command("report")(report)
