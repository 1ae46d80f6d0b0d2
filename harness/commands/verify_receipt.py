"""`verify-receipt` and `report`: check a receipt file's honesty gates and show any receipt in the terminal.

Exit codes: 0 valid, 1 invalid, 2 unusable input (unreadable file, not a JSON object, unknown schema_version,
unreadable model file, replay unavailable). With `--key-env NAME` the receipt must carry a valid signature
(harness/receipts/signing.py): a missing, changed or wrongly keyed signature is invalid (1); a missing key
is 2.
"""

import importlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from engine.errors import EngineError
from harness.commands.options import StrictOpt, strict_flag
from harness.errors import HarnessError
from harness.receipts.files import load_receipt, parse_receipt_bytes
from harness.receipts.schema import SCHEMA_VERSION
from harness.receipts.signing import SignatureError, is_envelope_path, key_from_env, key_id, verify_signed
from harness.receipts.verify import ReplayFn, verify
from harness.reporting.receipt import render

EXIT_VALID, EXIT_INVALID, EXIT_UNUSABLE = 0, 1, 2


def _load(path: Path, body: bytes | None = None) -> dict[str, Any]:
    """A parsed receipt (from `body` when given) of the schema version this harness knows."""
    if body is None and is_envelope_path(path):
        raise HarnessError(f"{path} is a signature envelope; pass --key-env NAME to check it")
    receipt = load_receipt(path) if body is None else parse_receipt_bytes(body, str(path))
    version = receipt.get("schema_version")
    if version != SCHEMA_VERSION:
        raise HarnessError(
            f"{path}: unknown schema_version {version!r}; this harness reads {SCHEMA_VERSION!r} receipts"
        )
    return receipt


def _replay_fn(model_path: Path, strict: bool | None) -> ReplayFn:
    """The engine-side replay, imported only when asked for; missing means replay is unavailable."""
    try:
        module = importlib.import_module("harness.session.replay")
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
        from harness.session.replay import replay_model_path
    except ImportError as exc:
        raise HarnessError(f"replay is unavailable in this installation ({exc})") from None
    return replay_model_path(receipt, model)


def _fail_unusable(message: str, as_json: bool, path: Path) -> None:
    if as_json:
        typer.echo(json.dumps({"path": str(path), "valid": None, "error": message}))
    else:
        typer.echo(f"error: {message}", err=True)
    raise typer.Exit(EXIT_UNUSABLE)


def _signed_body(path: Path, key_env: str, as_json: bool) -> tuple[bytes, dict[str, Any]]:
    """The signed receipt bytes and the signature facts; a bad signature prints its failure and exits 1."""
    key = key_from_env(key_env)
    try:
        body, envelope = verify_signed(path, key)
    except SignatureError as exc:
        if as_json:
            failed = {"ok": False, "error": str(exc)}
            typer.echo(json.dumps({"path": str(path), "valid": False, "signature": failed}))
        else:
            typer.echo(f"FAIL signature: {exc}")
            typer.echo(f"{path}: INVALID (signature)")
        raise typer.Exit(EXIT_INVALID) from None
    return body, {"ok": True, "keyid": key_id(key), "envelope": str(envelope)}


def verify_receipt(
    path: Annotated[Path, typer.Option("--path", help="Receipt JSON file (or its .dsse.json envelope).")],
    model: Annotated[
        Path | None, typer.Option("--model", help="Check the model file's size and sha256.")
    ] = None,
    replay: Annotated[bool, typer.Option("--replay", help="Re-generate the tokens and compare.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    strict_loader: StrictOpt = False,
    key_env: Annotated[
        str | None,
        typer.Option("--key-env", help="Require a valid signature by the key in this environment variable."),
    ] = None,
) -> None:
    """Check a receipt: the signature (with --key-env), the schema, then every honesty gate."""
    signature: dict[str, Any] | None = None
    try:
        body = None
        if key_env is not None:
            body, signature = _signed_body(path, key_env, as_json)
        receipt = _load(path, body)
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
        extra = {} if signature is None else {"signature": signature}
        typer.echo(json.dumps({"path": str(path), **result.to_dict(), **extra}, indent=2))
    else:
        if signature is not None:
            typer.echo(f"signature: OK (HMAC-SHA256, key id {signature['keyid']}, {signature['envelope']})")
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
