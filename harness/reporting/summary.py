"""Markdown summaries for CI job pages and PR comments: verdicts first, speeds with their noise band, a
comparison's regressions first; and appending them to `$GITHUB_STEP_SUMMARY` and `--summary-md FILE`.

The speed of one receipt is the median of its per-repetition samples (percentile for token latencies) with
the receipt's noise band, p10-p90 (harness.comparison.history.band); a comparison's intervals are the 95 %
bootstrap intervals of NEW/BASE that `compare` computes.
"""

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from harness.comparison.compare import Comparison
from harness.comparison.history import samples_and_band
from harness.comparison.metrics import METRICS
from harness.comparison.stats import Verdict
from harness.comparison.tables import markdown
from harness.errors import HarnessError
from harness.machine.fingerprint import machine_of
from harness.receipts.verify import VerificationResult
from harness.reporting.comparison import comparison_frame, header, value_text
from harness.reporting.gates import FAIL, NOT_CHECKED, PASS, WARN, gate_records
from harness.reporting.values import field, shown

STEP_SUMMARY_ENV = "GITHUB_STEP_SUMMARY"
_VERDICT_ORDER = {
    Verdict.REGRESSION.value: 0,
    Verdict.INCONCLUSIVE.value: 1,
    Verdict.IMPROVEMENT.value: 2,
    Verdict.NO_CHANGE.value: 3,
    Verdict.NOT_JUDGED.value: 4,
}
_STATUS_TEXT = {PASS: "pass", FAIL: "**FAIL**", WARN: "warn", NOT_CHECKED: "not checked"}


@dataclass(frozen=True)
class RunReceipt:
    """A receipt a run produced, as a summary shows it."""

    label: str
    location: str
    receipt: Mapping[str, Any]
    verification: VerificationResult
    archived: str | None = None


def _code(text: object) -> str:
    return "`" + str(text).replace("`", "'") + "`"


def speed_frame(receipt: Mapping[str, Any]) -> pd.DataFrame:
    """Each metric of one receipt: its statistic, noise band (p10-p90) and sample count."""
    rows = []
    for m in METRICS:
        banded = samples_and_band(receipt, m)
        if banded is None:
            continue
        x, low, high = banded
        spread = "-" if low == high else f"{value_text(low, m.unit)} – {value_text(high, m.unit)}"
        rows.append(
            {
                "metric": f"{m.label} {'↑' if m.higher_is_better else '↓'}",
                "value": f"{value_text(float(m.statistic(x)), m.unit)} ({m.statistic_name})",
                "noise band p10-p90": spread,
                "n": int(x.size),
            }
        )
    return pd.DataFrame(rows, columns=["metric", "value", "noise band p10-p90", "n"])


def _verdict_line(result: VerificationResult) -> str:
    """The verifier's verdict (the level reached and what it leaves unproven), bold when it fails."""
    return result.verdict() if result.ok else f"**{result.verdict()}**"


def _receipt_facts(receipt: Mapping[str, Any]) -> str:
    model = field(receipt, "model")
    name = field(model, "preset") or Path(str(field(model, "path") or "?")).name
    return (
        f"model {_code(name)} ({shown(field(model, 'format'))}), {shown(field(receipt, 'threads'))} threads, "
        f"{shown(field(receipt, 'tokens_requested'))} tokens × "
        f"{len(field(receipt, 'phases', 'benchmark', 'repetitions') or [])} repetitions; "
        f"machine {_code(machine_of(receipt).id)} ({machine_of(receipt).label}); "
        f"commit {_code(shown(field(receipt, 'harness', 'git_commit'), 12))}"
    )


def gates_markdown(result: VerificationResult) -> str:
    """The gates as a table: failures first, with what was expected and found."""
    rows = []
    for record in gate_records(result):
        detail = "; ".join(f.line() for f in record.findings) if record.findings else record.note
        rows.append({"gate": record.title, "status": _STATUS_TEXT[record.status], "detail": detail})
    return markdown(pd.DataFrame(rows, columns=["gate", "status", "detail"]))


def verification_markdown(
    location: str, receipt: Mapping[str, Any], result: VerificationResult, signature: str | None = None
) -> str:
    """`verify-receipt`: the verdict, the receipt's speeds with their bands, every gate."""
    lines = [f"### verify-receipt {_code(location)}: {_verdict_line(result)}", ""]
    if signature:
        lines += [f"signature: {signature}", ""]
    lines += [_receipt_facts(receipt), "", markdown(speed_frame(receipt)), "", gates_markdown(result)]
    return "\n".join(lines)


def problem_markdown(location: str, verdict: str, message: str) -> str:
    """A receipt that could not be verified (unusable input) or whose signature failed."""
    return f"### verify-receipt {_code(location)}: **{verdict}**\n\n{message}"


def comparison_markdown(comp: Comparison) -> str:
    """A comparison: the verdict and which receipt is which, then the metrics with regressions first."""
    lines = [f"**Verdict: {comp.overall}**<br>{header(comp, '<br>')}", ""]
    if comp.reasons:
        lines += [f"- not comparable ({r.key}): {r.message}" for r in comp.reasons] + [""]
    if comp.refused:
        lines.append("Refused: `--force` compares anyway, `--ignore KEY` skips one check.")
        return "\n".join(lines)
    frame = comparison_frame(comp)
    metric_rows, geomean_row = frame.iloc[:-1], frame.iloc[-1:]
    order = metric_rows["verdict"].map(_VERDICT_ORDER).fillna(len(_VERDICT_ORDER))
    ordered = pd.concat([metric_rows.iloc[order.argsort(kind="stable")], geomean_row])
    lines.append(markdown(ordered))
    if comp.notes:
        lines += ["", *(f"- {n}" for n in comp.notes)]
    return "\n".join(lines)


def comparability_markdown(comp: Comparison, verdict: str) -> str:
    """`compare --comparability-only`: the verdict, which receipt is which, the reasons."""
    lines = [f"### compare --comparability-only: **{verdict}**", "", f"BASE {_code(comp.base_label)}<br>"]
    lines += [f"NEW {_code(comp.new_label)}", ""]
    lines += [f"- not comparable ({r.key}): {r.message}" for r in comp.reasons]
    return "\n".join(lines).rstrip() + "\n"


def benchmark_markdown(receipts: Sequence[RunReceipt], comparison: Comparison | None) -> str:
    """`benchmark`: each receipt's verdict and speeds, then the comparison when one ran."""
    failed = [r for r in receipts if not r.verification.ok]
    overall = "FAILED verification" if failed else "verified"
    if comparison is not None:
        overall = f"{overall}; comparison: {comparison.overall}"
    lines = [f"### bitnet-harness benchmark: {overall}", ""]
    for r in receipts:
        lines += [f"**{r.label}** {_code(r.location)}: {_verdict_line(r.verification)}", ""]
        if r.archived:
            lines += [f"archived as {_code(r.archived)}", ""]
        lines += [_receipt_facts(r.receipt), "", markdown(speed_frame(r.receipt)), ""]
        if not r.verification.ok:
            lines += [gates_markdown(r.verification), ""]
    if comparison is not None:
        lines += ["#### Comparison", "", comparison_markdown(comparison), ""]
    return "\n".join(lines).rstrip() + "\n"


def summary_targets(summary_md: Path | None, environ: Mapping[str, str] | None = None) -> list[Path]:
    """Where a summary goes: `--summary-md FILE` and the file `$GITHUB_STEP_SUMMARY` names (each once)."""
    env = os.environ if environ is None else environ
    targets = [summary_md] if summary_md is not None else []
    if env.get(STEP_SUMMARY_ENV):
        step = Path(env[STEP_SUMMARY_ENV])
        if not targets or step.resolve() != targets[0].resolve():
            targets.append(step)
    return targets


def check_targets(targets: Sequence[Path]) -> None:
    """Fail before any work when a summary could not be written (its folder does not exist)."""
    for path in targets:
        if not path.parent.is_dir():
            raise HarnessError(f"cannot write the summary {path}: folder {path.parent} does not exist")


def append_summary(text: str, targets: Sequence[Path]) -> None:
    """Append the markdown to each target in one write (steps of a CI job append to the same file)."""
    data = (text.rstrip("\n") + "\n\n").encode("utf-8")
    for path in targets:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
        except OSError as exc:
            raise HarnessError(f"cannot write the summary {path}: {exc.strerror or exc}") from None
