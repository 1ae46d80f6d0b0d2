"""`verify-receipt`: check a receipt file's signature (with --key-env), its schema and every honesty gate.

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

from engine.errors import EngineError
from harness.commands.options import JunitOpt, StrictOpt, SummaryMdOpt, strict_flag
from harness.commands.render import Reports, fail_unusable
from harness.errors import HarnessError
from harness.receipts.files import load_checked
from harness.receipts.signing import SignatureError, key_from_env, key_id, not_an_envelope, verify_signed
from harness.receipts.verify import ReplayFn, VerificationResult, verify
from harness.reporting.gates import gate_records
from harness.reporting.junit import signature_junit, unusable_junit, verification_junit
from harness.reporting.summary import problem_markdown, verification_markdown

EXIT_VALID, EXIT_INVALID, EXIT_UNUSABLE = 0, 1, 2


def register(app: typer.Typer) -> None:
    """Add `verify-receipt` to the top-level app."""
    app.command("verify-receipt")(verify_receipt)


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
    junit: JunitOpt = None,
    summary_md: SummaryMdOpt = None,
) -> None:
    """Check a receipt: the signature (with --key-env), the schema, then every honesty gate.

    --junit FILE writes one JUnit test case per gate; with $GITHUB_STEP_SUMMARY set (or --summary-md FILE)
    a markdown summary is appended.
    """
    reports = Reports(junit, summary_md)
    signature: dict[str, Any] | None = None
    try:
        body = None
        if key_env is not None:
            body, signature = _signed_body(path, key_env, as_json, reports)
        receipt = load_checked(path, body) if body is not None else load_checked(not_an_envelope(path))
        model_path, replay_fn = model, None
        if replay:
            model_path, replay_fn = _replay(receipt, model, strict_flag(strict_loader))
        result = verify(receipt, model_path=model_path, replay=replay_fn)
    except (HarnessError, EngineError) as exc:
        message = str(exc)
        reports.write(
            lambda: unusable_junit(str(path), message),
            lambda: problem_markdown(str(path), "unusable input", message),
        )
        fail_unusable(message, as_json, path, EXIT_UNUSABLE)
        return
    signed = None if signature is None else f"OK (HMAC-SHA256, key id {signature['keyid']})"
    reports.write(
        lambda: verification_junit(str(path), gate_records(result), result.ok),
        lambda: verification_markdown(str(path), receipt, result, signed),
    )
    if as_json:
        extra = {} if signature is None else {"signature": signature}
        typer.echo(json.dumps({"path": str(path), **result.to_dict(), **extra}, indent=2))
    else:
        _print(path, result, signature)
    raise typer.Exit(EXIT_VALID if result.ok else EXIT_INVALID)


def _print(path: Path, result: VerificationResult, signature: dict[str, Any] | None) -> None:
    if signature is not None:
        typer.echo(f"signature: OK (HMAC-SHA256, key id {signature['keyid']}, {signature['envelope']})")
    for failure in result.failures:
        typer.echo(failure.line())
    verdict = "VALID" if result.ok else f"INVALID ({len(result.failures)} failures)"
    skipped = f"; skipped: {', '.join(result.skipped)}" if result.skipped else ""
    typer.echo(f"{path}: {verdict}; {len(result.passed)} gates passed{skipped}")


def _replay(receipt: Mapping[str, Any], model: Path | None, strict: bool | None) -> tuple[Path, ReplayFn]:
    """The file to replay on (--model, else the recorded path, else the recorded preset rebuilt) and the
    engine-side replay, imported only when asked for: missing means replay is unavailable."""
    try:
        module = importlib.import_module("harness.session.replay")
        replay_digest, replay_model_path = module.replay_digest, module.replay_model_path
    except (ImportError, AttributeError) as exc:
        raise HarnessError(f"replay is unavailable in this installation ({exc})") from None
    recorded = receipt.get("model", {}).get("path") if isinstance(receipt.get("model"), Mapping) else None
    if model is None and isinstance(recorded, str) and recorded:
        model = Path(recorded)
    model_path = replay_model_path(receipt, model)

    def replay(r: Mapping[str, Any]) -> str:
        return replay_digest(r, model_path, strict)

    return model_path, replay


def _signed_body(path: Path, key_env: str, as_json: bool, reports: Reports) -> tuple[bytes, dict[str, Any]]:
    """The signed receipt bytes and the signature facts; a bad signature prints its failure and exits 1."""
    key = key_from_env(key_env)
    try:
        body, envelope = verify_signed(path, key)
    except SignatureError as exc:
        message = str(exc)
        reports.write(
            lambda: signature_junit(str(path), message),
            lambda: problem_markdown(str(path), "INVALID", message),
        )
        if as_json:
            failed = {"ok": False, "error": str(exc)}
            typer.echo(json.dumps({"path": str(path), "valid": False, "signature": failed}))
        else:
            typer.echo(f"FAIL signature: {exc}")
            typer.echo(f"{path}: INVALID (signature)")
        raise typer.Exit(EXIT_INVALID) from None
    return body, {"ok": True, "keyid": key_id(key), "envelope": str(envelope)}
