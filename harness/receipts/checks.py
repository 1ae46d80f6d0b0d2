"""What a verification gate is and what it returns: levels, statuses, results, and the evidence it may use.

A gate belongs to one level of assurance:
- `self-consistent`: the receipt alone, held against the schema, its own arithmetic and physics;
- `evidence`: the receipt's claims re-derived from the model file (`--model`) and from a re-run (`--replay`);
- `attested`: a signature by a key the verifier was given (`--public-key`).
Each gate ends in one status: `pass`, `fail`, `warn` (an inconsistency the receipt itself explains as noise:
the receipt stays valid, its speed unreliable) or `not_checked` (with the reason: a fact it needs is absent,
or the evidence was not given).
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.receipts.kind import receipt_kind

SELF_CONSISTENT, EVIDENCE, ATTESTED = "self-consistent", "evidence", "attested"
LEVELS = (SELF_CONSISTENT, EVIDENCE, ATTESTED)
PASS, FAIL, WARN, NOT_CHECKED = "pass", "fail", "warn", "not_checked"

REL_TOL = 0.01
ABS_TOL = 1e-9
_MAX_SHOWN = 300


def short(value: object) -> str:
    """A value as shown in a message, cut to a bounded length (receipts can hold huge strings)."""
    text = str(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def close(a: float, b: float) -> bool:
    """Equal within the 1 % the verifier allows for recomputed figures."""
    return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=ABS_TOL)


@dataclass(frozen=True)
class Problem:
    """One thing a gate found: what it expected, what it found, and what to do about it."""

    expected: str
    found: str
    action: str


@dataclass(frozen=True)
class GateResult:
    """The outcome of one gate. For `fail` and `warn`, expected/found/reason describe the first problem
    (`problems` holds them all); for `not_checked`, `reason` says why; a `pass` leaves them empty."""

    name: str
    level: str
    status: str
    expected: str = ""
    found: str = ""
    reason: str = ""
    problems: tuple[Problem, ...] = ()

    def lines(self) -> list[str]:
        """How the gate reads in a terminal: one line per problem, or one line saying why it did not run."""
        tag = f"{self.name} [{self.level}]"
        if self.status == NOT_CHECKED:
            return [f"NOT CHECKED {tag}: {self.reason}"]
        word = {FAIL: "FAIL", WARN: "WARN"}.get(self.status)
        if word is None:
            return []
        return [f"{word} {tag}: expected {p.expected}; found {p.found}. {p.action}" for p in self.problems]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "level": self.level,
            "status": self.status,
            "expected": self.expected,
            "found": self.found,
            "reason": self.reason,
        }
        if len(self.problems) > 1:
            out["problems"] = [p.__dict__ for p in self.problems]
        return out


@dataclass(frozen=True)
class ModelFacts:
    """What the model file given to the verifier says about itself (engine's loader), in the receipt's terms.

    `section` has the receipt's `model` keys (path excluded); `weight_bytes_per_token` is what one decode step
    reads with the receipt's kernel families and logits path, None when the receipt does not let it be
    derived.
    """

    path: str
    section: dict[str, Any]
    weight_bytes_per_token: int | None = None


@dataclass(frozen=True)
class ReplayRun:
    """The receipt's workload run again here: a `phases.benchmark`-shaped section, the counters over its
    measured repetitions, the variant each kernel took, and the host and thread count it ran with;
    `remeasured` holds the repetitions of further timed rounds (for --remeasure), with `rounds` and
    `seconds`."""

    benchmark: dict[str, Any]
    kernel_counts: dict[str, dict[str, int]]
    variants: dict[str, str]
    threads: int
    cpu_model: str | None
    cpu_flags: tuple[str, ...]
    prompt_matches: bool = True
    remeasured: dict[str, Any] | None = None


@dataclass(frozen=True)
class Attestation:
    """A checked signature envelope: `problem` is None when it is valid and vouches for this receipt."""

    envelope: str | None
    key_id: str
    problem: str | None = None
    predicate: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.envelope is not None and self.problem is None


@dataclass(frozen=True)
class Evidence:
    """What the verifier holds besides the receipt; None fields were not given (their gates are not checked).

    `remeasure` is the tolerance (a fraction) for `--remeasure`; `require_signature` turns a missing
    signature into a failure; `withheld` names evidence that was asked for but not gathered, with the reason.
    """

    model: ModelFacts | None = None
    replay: ReplayRun | None = None
    remeasure: float | None = None
    attestation: Attestation | None = None
    require_signature: bool = False
    withheld: Mapping[str, str] = field(default_factory=dict)


class NotChecked(Exception):
    """Raised by a gate that cannot be evaluated; the message says why. `requested` is False when the
    evidence the gate needs was not asked for (a level not attempted, rather than a gap in this receipt)."""

    def __init__(self, reason: str, requested: bool = True) -> None:
        super().__init__(reason)
        self.requested = requested


@dataclass
class Check:
    """What a gate sees (the receipt and the evidence) and where it reports."""

    receipt: Mapping[str, Any]
    evidence: Evidence
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def fail(self, expected: object, found: object, action: str) -> None:
        self.problems.append(Problem(short(expected), short(found), action))

    def warn(self, expected: object, found: object, action: str) -> None:
        self.warnings.append(Problem(short(expected), short(found), action))

    def note(self, text: str) -> None:
        """A part of the gate that could not be checked although the rest was (shown as its reason)."""
        self.notes.append(text)

    @staticmethod
    def skip(reason: str, requested: bool = True) -> None:
        raise NotChecked(reason, requested)

    def benchmark(self) -> Mapping[str, Any]:
        """The benchmark phase. A phase receipt (probe or timing alone) has none and claims nothing a
        benchmark would: the gate is not applicable there, which leaves its verdict whole; elsewhere a gap."""
        bench = self.receipt["phases"].get("benchmark")
        if bench is None:
            kind = receipt_kind(self.receipt)
            if kind == "none":
                self.skip("no benchmark phase")
            self.skip(f"not applicable: a {kind} receipt has no benchmark phase", requested=False)
        return bench
