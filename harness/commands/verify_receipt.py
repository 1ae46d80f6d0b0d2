"""`verify-receipt`: every gate at the levels the given evidence allows; a verdict naming the level reached.

No flags: self-consistent (schema, arithmetic, physics). `--model FILE` binds the model file; `--replay`
re-runs the recorded workload on it (the recorded path, or `--rebuild-preset`), `--remeasure` also holds the
speed against this host's; `--public-key FILE` checks the signature (`--require-signature`: an unsigned
receipt fails). Exit codes: 0 valid, 1 invalid, 2 unusable input (unreadable file, unknown schema_version,
a missing or unreadable model or key file, replay impossible).
"""

import json
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from engine.errors import EngineError
from harness.commands.options import JunitOpt, StrictOpt, SummaryMdOpt, strict_flag
from harness.commands.render import Reports, fail_unusable
from harness.errors import HarnessError
from harness.receipts.checks import Evidence
from harness.receipts.files import MAX_RECEIPT_BYTES, load_checked, read_regular_file
from harness.receipts.signing import check_signature, not_an_envelope
from harness.receipts.verify import VerificationResult, verify
from harness.reporting.gates import gate_records
from harness.reporting.junit import unusable_junit, verification_junit
from harness.reporting.summary import problem_markdown, verification_markdown
from harness.session.evidence import gather

EXIT_VALID, EXIT_INVALID, EXIT_UNUSABLE = 0, 1, 2

ModelFileOpt = Annotated[
    Path | None, typer.Option("--model", help="Bind the model file: every model fact must match its header.")
]
ReplayOpt = Annotated[
    bool,
    typer.Option(
        "--replay", help="Run the recorded workload again: tokens, counters and variants must match."
    ),
]
RebuildOpt = Annotated[
    bool,
    typer.Option(
        "--rebuild-preset",
        help="Write the receipt's preset model again when its file is not here (its sha256 must match).",
    ),
]
RemeasureOpt = Annotated[
    bool, typer.Option("--remeasure", help="With --replay: fail a speed faster than this host's re-run.")
]
ToleranceOpt = Annotated[float, typer.Option("--tolerance", min=0.0, help="--remeasure tolerance, percent.")]
PublicKeyOpt = Annotated[
    Path | None,
    typer.Option("--public-key", help="Check the signature envelope with this Ed25519 public key."),
]
RequireOpt = Annotated[
    bool,
    typer.Option("--require-signature", help="Fail a receipt without a valid signature by --public-key."),
]


def register(app: typer.Typer) -> None:
    """Add `verify-receipt` to the top-level app."""
    app.command("verify-receipt")(verify_receipt)


def verify_receipt(
    path: Annotated[Path, typer.Option("--path", help="Receipt JSON file.")],
    model: ModelFileOpt = None,
    replay: ReplayOpt = False,
    rebuild_preset: RebuildOpt = False,
    remeasure: RemeasureOpt = False,
    tolerance: ToleranceOpt = 15.0,
    public_key: PublicKeyOpt = None,
    require_signature: RequireOpt = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    strict_loader: StrictOpt = False,
    junit: JunitOpt = None,
    summary_md: SummaryMdOpt = None,
) -> None:
    """Check a receipt: the schema and every honesty gate; with evidence, the model file, a replay, a
    signature. The verdict names the level reached and what was not checked.

    --junit FILE writes one JUnit test case per gate; with $GITHUB_STEP_SUMMARY set (or --summary-md FILE)
    a markdown summary is appended.
    """
    reports = Reports(junit, summary_md)
    try:
        if require_signature and public_key is None:
            raise HarnessError("--require-signature needs --public-key FILE")
        if remeasure and not replay:
            raise HarnessError("--remeasure re-measures during the replay; add --replay")
        body = read_regular_file(not_an_envelope(path), MAX_RECEIPT_BYTES)
        receipt = load_checked(path, body)
        evidence = gather(
            receipt,
            model=model,
            replay=replay,
            rebuild_preset=rebuild_preset,
            remeasure=tolerance / 100.0 if remeasure else None,
            strict=strict_flag(strict_loader),
        )
        attestation = None if public_key is None else check_signature(path, body, receipt, public_key)
        evidence = replace(evidence, attestation=attestation, require_signature=require_signature)
        result = verify(receipt, evidence)
    except (HarnessError, EngineError) as exc:
        message = str(exc)
        reports.write(
            lambda: unusable_junit(str(path), message),
            lambda: problem_markdown(str(path), "unusable input", message),
        )
        fail_unusable(message, as_json, path, EXIT_UNUSABLE)
        return
    att = evidence.attestation
    signed = f"OK (Ed25519 key {att.key_id[:16]})" if att is not None and att.ok else None
    reports.write(
        lambda: verification_junit(str(path), gate_records(result), result.ok),
        lambda: verification_markdown(str(path), receipt, result, signed),
    )
    if as_json:
        typer.echo(json.dumps({"path": str(path), **result.to_dict()}, indent=2))
    else:
        _print(path, result, evidence)
    raise typer.Exit(EXIT_VALID if result.ok else EXIT_INVALID)


def _print(path: Path, result: VerificationResult, evidence: Evidence) -> None:
    att = evidence.attestation
    if att is not None and att.ok:
        run = att.predicate.get("run_id", "?")
        typer.echo(f"signature: OK (Ed25519 key {att.key_id[:16]}, run {run}, {att.envelope})")
    for line in result.lines():
        typer.echo(line)
    typer.echo(f"{path}: {result.verdict()}; {len(result.passed)} gates passed")
