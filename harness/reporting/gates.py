"""A verification as plain per-gate records, the one shape the JUnit, markdown and HTML reports read.

`gate_records` is the only place that knows the verifier's result structure; the reports see a record per
gate: its name, its level (None where the verifier gives none), its status (pass, fail or not checked) and,
for a failure, each finding with what was expected, what was found and the reason.
"""

from dataclasses import dataclass

from harness.receipts.verify import VerificationResult

PASS, FAIL, NOT_CHECKED = "pass", "fail", "not_checked"
_NOT_RUN_BECAUSE = {
    "model_hash": "no model file was given to hash (--model or --replay)",
    "replay": "no replay was asked for (--replay)",
}


@dataclass(frozen=True)
class Finding:
    expected: str
    found: str
    reason: str

    def line(self) -> str:
        return f"expected {self.expected}; found {self.found}. {self.reason}"


@dataclass(frozen=True)
class GateRecord:
    name: str
    level: str | None
    status: str
    findings: tuple[Finding, ...] = ()
    note: str = ""

    @property
    def title(self) -> str:
        return f"{self.level}: {self.name}" if self.level else self.name


def gate_records(result: VerificationResult) -> list[GateRecord]:
    """One record per gate: failed gates first (in the verifier's order), then passed, then not checked."""
    failed: dict[str, list[Finding]] = {}
    for f in result.failures:
        failed.setdefault(f.gate, []).append(Finding(f.expected, f.found, f.action))
    records = [GateRecord(name, None, FAIL, tuple(found)) for name, found in failed.items()]
    records += [GateRecord(name, None, PASS) for name in result.passed if name not in failed]
    for name in result.skipped:
        why = _NOT_RUN_BECAUSE.get(name, "the data it needs is unusable (see the schema failures)")
        records.append(GateRecord(name, None, NOT_CHECKED, note=why))
    return records
