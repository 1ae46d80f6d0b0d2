"""Receipt verification: the schema, then every gate of the registry below, each at its level of assurance.

Levels (harness.receipts.checks): `self-consistent` (the receipt alone: schema, arithmetic, physics),
`evidence` (the claims re-derived from the model file and a re-run), `attested` (a signature by a key the
verifier was given). Every gate reports pass, fail, warn or not_checked with the reason; none is skipped
silently. The verdict names the level reached and what it leaves unproven, e.g.
`VALID (self-consistent; unsigned: speed is self-reported)`. docs/verification.md has the threat model and
the table of lies each level catches.

When the schema fails, the other gates still run where the data they need is usable; where it is not, they
are not checked, with that reason.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.errors import HarnessError
from harness.receipts.checks import (
    ATTESTED,
    EVIDENCE,
    FAIL,
    NOT_CHECKED,
    PASS,
    SELF_CONSISTENT,
    WARN,
    Check,
    Evidence,
    GateResult,
    NotChecked,
    Problem,
    short,
)
from harness.receipts.gates import evidence as ev
from harness.receipts.gates import kernels as kn
from harness.receipts.gates import measurements as ms
from harness.receipts.schema import schema_errors

MAX_SCHEMA_FAILURES = 100


@dataclass(frozen=True)
class Gate:
    name: str
    level: str
    check: Callable[[Check], None]


# The registry, in report order. Each gate's docstring (or its module's) says what it holds.
GATES: tuple[Gate, ...] = (
    Gate("harness_version", SELF_CONSISTENT, ms.harness_version_gate),
    Gate("compute_path", SELF_CONSISTENT, kn.compute_path),
    Gate("backend", SELF_CONSISTENT, kn.backend),
    Gate("ternary_kernel", SELF_CONSISTENT, kn.ternary_kernel),
    Gate("gpu_kernels", SELF_CONSISTENT, kn.gpu_kernels),
    Gate("known_kernels", SELF_CONSISTENT, kn.known_kernels),
    Gate("parity_only", SELF_CONSISTENT, kn.parity_only),
    Gate("kernel_counts", SELF_CONSISTENT, kn.kernel_counts),
    Gate("kernel_format", SELF_CONSISTENT, kn.kernel_format),
    Gate("kernel_choice", SELF_CONSISTENT, kn.kernel_choice),
    Gate("kernel_variants", SELF_CONSISTENT, kn.kernel_variants),
    Gate("kernel_expectations", SELF_CONSISTENT, kn.kernel_expectations),
    Gate("model_facts", SELF_CONSISTENT, ms.model_facts),
    Gate("throughput", SELF_CONSISTENT, ms.throughput),
    Gate("summaries", SELF_CONSISTENT, ms.summaries),
    Gate("tokens", SELF_CONSISTENT, ms.tokens),
    Gate("determinism", SELF_CONSISTENT, ms.determinism),
    Gate("duplicate_samples", SELF_CONSISTENT, ms.duplicate_samples),
    Gate("latencies", SELF_CONSISTENT, ms.latencies),
    Gate("timestamps", SELF_CONSISTENT, ms.timestamps),
    Gate("host_resources", SELF_CONSISTENT, ms.host_resources),
    Gate("bandwidth", SELF_CONSISTENT, ms.bandwidth),
    Gate("bandwidth_floor", SELF_CONSISTENT, ms.bandwidth_floor),
    Gate("timing_consistency", SELF_CONSISTENT, ms.timing_consistency),
    Gate("probe", SELF_CONSISTENT, ms.probe),
    Gate("peer", SELF_CONSISTENT, ms.peer),
    Gate("parity", SELF_CONSISTENT, ms.parity),
    Gate("checksum", SELF_CONSISTENT, ms.checksum),
    Gate("model_binding", EVIDENCE, ev.model_binding),
    Gate("replay", EVIDENCE, ev.replay),
    Gate("remeasure", EVIDENCE, ev.remeasure),
    Gate("signature", ATTESTED, ev.signature),
)
_UNUSABLE_DATA = (KeyError, TypeError, ValueError, AttributeError, IndexError, ArithmeticError, HarnessError)


@dataclass
class VerificationResult:
    """Every gate's result, in registry order (the schema first); `unrequested` names the gates whose
    evidence was not asked for."""

    gates: list[GateResult] = field(default_factory=list)
    unrequested: set[str] = field(default_factory=set)

    def _with(self, status: str) -> list[GateResult]:
        return [g for g in self.gates if g.status == status]

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def failures(self) -> list[GateResult]:
        return self._with(FAIL)

    @property
    def warnings(self) -> list[GateResult]:
        return self._with(WARN)

    @property
    def passed(self) -> list[str]:
        return [g.name for g in self._with(PASS)]

    @property
    def not_checked(self) -> list[GateResult]:
        return self._with(NOT_CHECKED)

    @property
    def schema_ok(self) -> bool:
        """The receipt matched the schema (a writer need not check it again)."""
        return "schema" in self.passed

    @property
    def speed_unreliable(self) -> bool:
        """A gate found the speed inconsistent in a way the receipt explains as noise (or cannot rule out)."""
        return bool(self.warnings)

    def gate(self, name: str) -> GateResult:
        return next(g for g in self.gates if g.name == name)

    @property
    def level(self) -> str | None:
        """The level of assurance reached: None when a gate failed."""
        if not self.ok:
            return None
        if "signature" in self.passed:
            return ATTESTED
        if any(g.level == EVIDENCE for g in self._with(PASS)):
            return EVIDENCE
        return SELF_CONSISTENT

    def verdict(self) -> str:
        """One line: VALID or INVALID, the level reached, and what was not checked or not proven."""
        if not self.ok:
            failed = ", ".join(f"{g.name} [{g.level}]" for g in self.failures)
            return f"INVALID (failed: {failed})"
        proved = [label for name, label in _EVIDENCE_LABELS if name in self.passed]
        level = self.level or SELF_CONSISTENT
        parts = [f"{level}: {', '.join(proved)}" if proved else level]
        if self.speed_unreliable:
            parts.append("noisy: speed unreliable")
        gaps = [g.name for g in self.not_checked if g.name not in self.unrequested and g.name != "signature"]
        if gaps:
            parts.append(f"not checked: {', '.join(gaps)}")
        if level != ATTESTED:
            remeasured = "remeasure" in self.passed
            parts.append(
                "unsigned: speed not beyond this host's" if remeasured else "unsigned: speed is self-reported"
            )
        return f"VALID ({'; '.join(parts)})"

    def refusal(self, label: str) -> str | None:
        """One line naming the gates `label` fails (the first with its finding), or None when it verifies:
        what compare, archive add and history say when they refuse a receipt."""
        if self.ok:
            return None
        first, others = self.failures[0], [g.name for g in self.failures[1:]]
        more = f"; also {', '.join(others)}" if others else ""
        finding = f"expected {first.expected}; found {first.found}"
        return f"{label} fails verification (gate {first.name}: {finding}{more})"

    def lines(self) -> list[str]:
        """Every failure, warning and unchecked gate, one line each."""
        return [line for g in self.gates for line in g.lines()]

    def to_dict(self) -> dict[str, Any]:
        return {
            "valid": self.ok,
            "level": self.level,
            "verdict": self.verdict(),
            "gates": [g.to_dict() for g in self.gates],
        }


_EVIDENCE_LABELS = (
    ("signature", "signed"),
    ("model_binding", "model bound"),
    ("replay", "replayed"),
    ("remeasure", "speed not beyond this host's"),
)


def _schema_result(receipt_obj: object) -> tuple[GateResult, bool]:
    errors = schema_errors(receipt_obj)
    if not errors:
        return GateResult("schema", SELF_CONSISTENT, PASS), True
    want = "a receipt matching receipt schema 1.0.0"
    action = "Write receipts with harness.receipts.files; fix or regenerate this one."
    problems = [
        Problem(want, short(f"{path}: {message}"), action) for path, message in errors[:MAX_SCHEMA_FAILURES]
    ]
    if len(errors) > MAX_SCHEMA_FAILURES:
        more = f"{len(errors) - MAX_SCHEMA_FAILURES} more schema errors not listed"
        problems.append(Problem(want, more, "This file is far from a receipt; regenerate it."))
    first = problems[0]
    return GateResult(
        "schema", SELF_CONSISTENT, FAIL, first.expected, first.found, first.action, tuple(problems)
    ), False


def _run(
    gate: Gate, receipt: Mapping[str, Any], evidence: Evidence, schema_ok: bool
) -> tuple[GateResult, bool]:
    """One gate's result, and whether its evidence was asked for."""
    c = Check(receipt, evidence)
    try:
        gate.check(c)
    except NotChecked as exc:
        return GateResult(gate.name, gate.level, NOT_CHECKED, reason=str(exc)), exc.requested
    except _UNUSABLE_DATA:
        if schema_ok:
            raise
        reason = "the data it needs is unusable (see the schema failures)"
        return GateResult(gate.name, gate.level, NOT_CHECKED, reason=reason), True
    found = c.problems or c.warnings
    if not found:
        return GateResult(gate.name, gate.level, PASS, reason="; ".join(c.notes)), True
    first = found[0]
    status = FAIL if c.problems else WARN
    return GateResult(
        gate.name, gate.level, status, first.expected, first.found, first.action, tuple(found)
    ), True


def verify(receipt_obj: object, evidence: Evidence | None = None) -> VerificationResult:
    """Check a parsed receipt with whatever evidence the caller gathered (harness.session.evidence).

    Every problem with the receipt is a reported result; an exception means a bug, not a bad receipt.
    """
    evidence = evidence or Evidence()
    schema, schema_ok = _schema_result(receipt_obj)
    result = VerificationResult([schema])
    for gate in GATES:
        if not isinstance(receipt_obj, Mapping):
            result.gates.append(GateResult(gate.name, gate.level, NOT_CHECKED, reason="not a JSON object"))
            continue
        outcome, requested = _run(gate, receipt_obj, evidence, schema_ok)
        result.gates.append(outcome)
        if not requested:
            result.unrequested.add(gate.name)
    return result
