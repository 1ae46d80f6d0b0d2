"""A verification as plain per-gate records, the one shape the JUnit, markdown and HTML reports read.

`gate_records` is the only place these reports meet the verifier's result: a record per gate with its name,
its level of assurance, its status (pass, fail, warn or not checked) and, for a failure or a warning, each
finding with what was expected, what was found and what to do.
"""

from dataclasses import dataclass

from harness.receipts.checks import FAIL, NOT_CHECKED, PASS, WARN
from harness.receipts.verify import VerificationResult

__all__ = ["FAIL", "NOT_CHECKED", "PASS", "WARN", "Finding", "GateRecord", "gate_records", "STATUS_TEXT"]

STATUS_TEXT = {PASS: "pass", FAIL: "FAIL", WARN: "warn", NOT_CHECKED: "not checked"}
_ORDER = {FAIL: 0, WARN: 1, PASS: 2, NOT_CHECKED: 3}


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
    """One record per gate: failed gates first, then warnings, passes and gates not checked, each group in
    the verifier's order."""
    records = [
        GateRecord(
            g.name,
            g.level,
            g.status,
            tuple(Finding(p.expected, p.found, p.action) for p in g.problems),
            g.reason,
        )
        for g in result.gates
    ]
    return sorted(records, key=lambda r: _ORDER[r.status])
