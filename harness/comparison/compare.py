"""Is NEW slower than BASE? Comparability first (same model, workload, machine; both receipts honest),
then each metric judged by harness.comparison.stats, a geometric-mean row, and the gate's exit code. A receipt
whose `noise` section says the run was noisy cannot decide a timing: those verdicts are inconclusive, and a
note says why (`ignore=("noise",)` judges them anyway).

Exit codes: 0 no regression, 1 regression, 2 error or not comparable, 3 inconclusive.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd

from harness.comparison.metrics import METRICS, PER_TOKEN, SINGLE, Metric, groups, samples
from harness.comparison.stats import (
    ALPHA,
    SEED,
    THRESHOLD,
    Judgement,
    Verdict,
    geometric_mean,
    judge,
    judge_blocks,
    judge_single,
)
from harness.comparison.tables import records
from harness.errors import HarnessError
from harness.machine.fingerprint import differences, machine_of
from harness.receipts.kind import BENCHMARK, receipt_kind
from harness.receipts.verify import VerificationResult, verify

EXIT_OK, EXIT_REGRESSION, EXIT_ERROR, EXIT_INCONCLUSIVE = 0, 1, 2, 3
# Checks --ignore may skip; verification is not one of them (a receipt that fails it is never compared).
REASON_KEYS = (
    "schema_version",
    "model_sha256",
    "preset",
    "threads",
    "cpu_model",
    "machine",
    "workload",
    "output",
)
JUDGEMENT_KEYS = ("noise",)  # --ignore keys that change how metrics are judged, not whether the pair is
_MISSING = object()
Verified = tuple[VerificationResult | None, VerificationResult | None]


@dataclass(frozen=True)
class Reason:
    key: str
    message: str


def _get(receipt: Mapping[str, Any], *keys: str) -> Any:
    obj: Any = receipt
    for key in keys:
        if not isinstance(obj, Mapping) or key not in obj:
            return _MISSING
        obj = obj[key]
    return obj


def _workload(receipt: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "prompt tokens": _get(receipt, "prompt", "token_count"),
        "prompt ids": _get(receipt, "prompt", "token_ids_sha256"),
        "tokens requested": _get(receipt, "tokens_requested"),
        "sampling": _get(receipt, "sampling"),
        "seed": _get(receipt, "seed"),
    }


def require_verified(receipt: Mapping[str, Any], label: str) -> VerificationResult:
    """The receipt's verification; HarnessError (exit 2) with refusal()'s line when it fails."""
    result = verify(receipt)
    line = result.refusal(label)
    if line is not None:
        raise HarnessError(f"{line}; not used")
    return result


def _show(value: Any) -> str:
    return "missing" if value is _MISSING else repr(value)


def comparability(
    base: Mapping[str, Any],
    new: Mapping[str, Any],
    ignore: Iterable[str] = (),
    *,
    same_output: bool = False,
    verified: Verified = (None, None),
) -> list[Reason]:
    """Why the pair cannot be compared honestly (empty when it can); keys in `ignore` are not checked.

    same_output also requires identical generated tokens (the CI check against the committed baseline: the
    engine must compute the same tokens on any machine); otherwise differing tokens are only a note.
    `verified` holds a side's verification when the caller has just run it (it is not run again).
    """
    skip = set(ignore)
    unknown = skip - set(REASON_KEYS) - set(JUDGEMENT_KEYS)
    if unknown:
        known = ", ".join(REASON_KEYS + JUDGEMENT_KEYS)
        raise HarnessError(f"unknown comparability check(s) {sorted(unknown)}; known: {known}")
    out: list[Reason] = []
    for side, receipt, known in (("BASE", base, verified[0]), ("NEW", new, verified[1])):
        line = (known if known is not None else verify(receipt)).refusal(side)
        if line is not None:
            out.append(Reason("verification", line))
    fields = {
        "schema_version": ("schema_version",),
        "model_sha256": ("model", "sha256"),
        "preset": ("model", "preset"),
        "threads": ("threads",),
        "cpu_model": ("host", "cpu_model"),
    }
    for key, path in fields.items():
        if key in skip:
            continue
        a, b = _get(base, *path), _get(new, *path)
        if a != b or a is _MISSING:
            out.append(Reason(key, f"{'.'.join(path)} differs: BASE {_show(a)}, NEW {_show(b)}"))
    phase_receipts = [
        (side, kind) for side, r in (("BASE", base), ("NEW", new)) if (kind := receipt_kind(r)) != BENCHMARK
    ]
    for side, kind in phase_receipts:
        out.append(Reason("workload", f"{side} is a {kind} receipt; compare judges benchmark receipts"))
    if "machine" not in skip:
        out.extend(_machine_reason(base, new))
    if "workload" not in skip and not phase_receipts:
        wa, wb = _workload(base), _workload(new)
        diff = [k for k in wa if wa[k] != wb[k] or wa[k] is _MISSING]
        if diff:
            shown = "; ".join(f"{k}: BASE {_show(wa[k])}, NEW {_show(wb[k])}" for k in diff)
            out.append(Reason("workload", f"workload differs ({shown})"))
    if same_output and "output" not in skip and (note := output_note(base, new)):
        out.append(Reason("output", note))
    return out


def noise_reasons(receipt: Mapping[str, Any]) -> list[str] | None:
    """The reasons a receipt's run was noisy, or None when it was not (or does not say)."""
    noise = _get(receipt, "noise")
    if not isinstance(noise, Mapping) or noise.get("noisy") is not True:
        return None
    reasons = noise.get("reasons")
    return [str(r) for r in reasons] if isinstance(reasons, list) and reasons else ["no reason given"]


def _machine_reason(base: Mapping[str, Any], new: Mapping[str, Any]) -> list[Reason]:
    """The host fingerprints differ beyond the CPU model (its own check): cores, instruction-set flags or
    memory, i.e. the two runs are not from one machine (harness.machine.fingerprint)."""
    a, b = machine_of(base), machine_of(new)
    facts = [k for k in differences(a, b) if k != "cpu_model"]
    if not facts:
        return []
    fa, fb = a.facts(), b.facts()
    shown = "; ".join(f"{k}: BASE {fa[k]!r}, NEW {fb[k]!r}" for k in facts if k != "isa_flags")
    if "isa_flags" in facts:
        only_base = sorted(set(fa["isa_flags"]) - set(fb["isa_flags"]))
        only_new = sorted(set(fb["isa_flags"]) - set(fa["isa_flags"]))
        flags = f"isa_flags: only BASE {' '.join(only_base) or '-'}, only NEW {' '.join(only_new) or '-'}"
        shown = f"{shown}; {flags}" if shown else flags
    return [Reason("machine", f"machine {a.id} vs {b.id} differs ({shown})")]


def output_note(base: Mapping[str, Any], new: Mapping[str, Any]) -> str | None:
    """A note when the two runs generated different tokens (the engine's numerics changed)."""
    a, b = _get(base, "output_digest", "sha256"), _get(new, "output_digest", "sha256")
    if a != b:
        return f"the runs generated different tokens (output digest {str(a)[:12]} vs {str(b)[:12]})"
    return None


@dataclass
class Row:
    metric: Metric
    judgement: Judgement


@dataclass
class Comparison:
    base_label: str
    new_label: str
    threshold: float
    alpha: float
    reasons: list[Reason] = field(default_factory=list)
    forced: bool = False
    rows: list[Row] = field(default_factory=list)
    geomean: float | None = None
    notes: list[str] = field(default_factory=list)

    unreliable: list[str] = field(default_factory=list)

    @property
    def refused(self) -> bool:
        """Not comparable and not forced; a receipt failing verification is refused even when forced."""
        unverified = any(r.key == "verification" for r in self.reasons)
        return unverified or (bool(self.reasons) and not self.forced)

    @property
    def exit_code(self) -> int:
        if self.refused:
            return EXIT_ERROR
        if self.unreliable:
            return EXIT_INCONCLUSIVE  # a side whose speed its own receipt calls unreliable decides nothing
        verdicts = [r.judgement.verdict for r in self.rows]
        if Verdict.REGRESSION in verdicts:
            return EXIT_REGRESSION
        if Verdict.INCONCLUSIVE in verdicts:
            return EXIT_INCONCLUSIVE
        return EXIT_OK

    @property
    def overall(self) -> str:
        return {
            EXIT_OK: "no regression",
            EXIT_REGRESSION: "regression",
            EXIT_ERROR: "not comparable",
            EXIT_INCONCLUSIVE: "inconclusive",
        }[self.exit_code]

    def detectable(self, key: str = "decode_tok_s") -> float | None:
        """The minimum detectable effect of metric `key` for this pair (a fraction), None when not judged."""
        for row in self.rows:
            if row.metric.key == key:
                return row.judgement.mde
        return None

    def frame(self) -> pd.DataFrame:
        """The table: one row per metric and the geometric-mean row."""
        rows = []
        for row in self.rows:
            j, m = row.judgement, row.metric
            rows.append(
                {
                    "metric": m.label,
                    "unit": m.unit,
                    "statistic": m.statistic_name,
                    "better": "higher" if m.higher_is_better else "lower",
                    "n base": j.n_base,
                    "n new": j.n_new,
                    "base": j.base,
                    "new": j.new,
                    "ratio": j.ratio,
                    "ci low": j.ci_low,
                    "ci high": j.ci_high,
                    "p": j.p_value,
                    "mde": j.mde if j.mde is None or j.mde < float("inf") else None,
                    "verdict": j.verdict.value,
                    "note": j.note or "",
                }
            )
        if self.rows:
            rows.append(
                {
                    "metric": "geometric mean speed-up",
                    "unit": "x (>1 better)",
                    "statistic": "geomean",
                    "better": "higher",
                    "ratio": self.geomean,
                    "verdict": None,
                    "note": "direction-adjusted ratios of the judged metrics; informational",
                }
            )
        return pd.DataFrame(rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "base": self.base_label,
            "new": self.new_label,
            "threshold": self.threshold,
            "alpha": self.alpha,
            "comparable": not self.reasons,
            "forced": self.forced,
            "reasons": [r.__dict__ for r in self.reasons],
            "unreliable": self.unreliable,
            "notes": self.notes,
            "rows": records(self.frame()) if self.rows else [],
            "verdict": self.overall,
            "exit_code": self.exit_code,
        }


def _speed_up(metric: Metric, ratio: float) -> float:
    return ratio if metric.higher_is_better else 1.0 / ratio


def compare(
    base: Mapping[str, Any],
    new: Mapping[str, Any],
    *,
    base_label: str = "BASE",
    new_label: str = "NEW",
    threshold: float = THRESHOLD,
    alpha: float = ALPHA,
    force: bool = False,
    ignore: Iterable[str] = (),
    same_process: bool = False,
    seed: int = SEED,
    verified: Verified = (None, None),
) -> Comparison:
    """Compare two receipts. Not comparable and not forced: only the reasons, no rows.

    same_process: both receipts come from one process (A/B), so peak RSS was not measured per side.
    verified: the verification of BASE and NEW where the caller already has it (see comparability).
    """
    if not 0 < threshold < 1:
        raise HarnessError(f"--threshold must be a fraction in (0, 1) (got {threshold})")
    if not 0 < alpha < 1:
        raise HarnessError(f"--alpha must be in (0, 1) (got {alpha})")
    verified = (verified[0] or verify(base), verified[1] or verify(new))
    result = Comparison(
        base_label, new_label, threshold, alpha, comparability(base, new, ignore, verified=verified), force
    )
    if result.refused:
        return result
    for side, check in (("BASE", verified[0]), ("NEW", verified[1])):
        if check.speed_unreliable:
            gates = ", ".join(g.name for g in check.warnings)
            result.unreliable.append(f"{side}: speed unreliable ({gates}); the verdict is inconclusive")
    note = output_note(base, new)
    if note:
        result.notes.append(note)
    noisy = [] if "noise" in ignore else [s for s, r in (("BASE", base), ("NEW", new)) if noise_reasons(r)]
    for side, receipt in (("BASE", base), ("NEW", new)):
        if side in noisy:
            result.notes.append(
                f"{side} was a noisy run, so its timings cannot decide (--ignore noise judges them anyway): "
                + "; ".join(noise_reasons(receipt) or [])
            )
    for m in METRICS:
        b, n = samples(base, m), samples(new, m)
        if m.kind == PER_TOKEN:
            j = judge_blocks(
                groups(base, m),
                groups(new, m),
                higher_is_better=m.higher_is_better,
                statistic=m.statistic,
                threshold=threshold,
                alpha=alpha,
                seed=seed,
            )
        elif m.kind == SINGLE:
            if same_process:
                j = Judgement.not_judged(
                    float(b[0]), float(n[0]), 1, 1, "one process for both sides: not measured per side"
                )
            else:
                j = judge_single(
                    float(b[0]), float(n[0]), higher_is_better=m.higher_is_better, threshold=threshold
                )
        elif b.size == 0 or n.size == 0:
            j = Judgement.not_judged(float("nan"), float("nan"), b.size, n.size, "no samples on one side")
        else:
            j = judge(
                b,
                n,
                higher_is_better=m.higher_is_better,
                statistic=m.statistic,
                threshold=threshold,
                alpha=alpha,
                seed=seed,
            )
        if noisy and m.kind != SINGLE and j.verdict != Verdict.NOT_JUDGED:
            said = f"noisy run: {' and '.join(noisy)}"
            j = replace(j, verdict=Verdict.INCONCLUSIVE, note=f"{said}; {j.note}" if j.note else said)
        result.rows.append(Row(m, j))
        if j.note and j.note.startswith(("too few samples", "too few repetitions")):
            result.notes.append(f"{m.label}: {j.note}")
    judged = [
        _speed_up(r.metric, r.judgement.ratio)
        for r in result.rows
        if r.judgement.verdict != Verdict.NOT_JUDGED
    ]
    result.geomean = geometric_mean(judged)
    return result
