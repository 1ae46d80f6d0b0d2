"""Is NEW slower than BASE? Comparability first (same model, workload, machine; both receipts honest),
then each metric judged by harness.comparison.stats, a geometric-mean row, and the gate's exit code. A side is
one receipt or several (separate runs of one configuration; the statistics then carry the spread between
runs). A receipt whose `noise` section says the run was noisy cannot decide a timing: those verdicts are
inconclusive, and a note says why (`ignore=("noise",)` judges them anyway). On a side of several runs only the
reasons outside the samples' own spread count (load, steal, other processes, probes that disagree): the spread
within and between the runs is in the interval.

Exit codes: 0 no regression, 1 regression, 2 error or not comparable, 3 inconclusive.
"""

from collections.abc import Iterable, Mapping, Sequence
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
    judge_runs,
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
Side = Mapping[str, Any] | Sequence[Mapping[str, Any]]  # one receipt, or several runs of one configuration


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


def noise_reasons(receipt: Mapping[str, Any], *, of_several_runs: bool = False) -> list[str] | None:
    """The reasons a receipt's run was noisy, or None when it was not (or does not say). For one run of a side
    of several, the reasons about the samples' own spread (`noise.sample_reasons`) do not count: the
    run-level bootstrap carries that spread. A receipt without that field keeps every reason."""
    noise = _get(receipt, "noise")
    if not isinstance(noise, Mapping) or noise.get("noisy") is not True:
        return None
    reasons = noise.get("reasons")
    out = [str(r) for r in reasons] if isinstance(reasons, list) and reasons else ["no reason given"]
    spread = noise.get("sample_reasons")
    if of_several_runs and isinstance(spread, list):
        carried = set(map(str, spread))
        out = [r for r in out if r not in carried]
    return out or None


def _runs(side: Side) -> list[Mapping[str, Any]]:
    runs = [side] if isinstance(side, Mapping) else list(side)
    if not runs:
        raise HarnessError("a side of the comparison needs at least one receipt")
    return runs


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
    runs: tuple[int, int] = (1, 1)  # receipts (runs) per side

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
            "runs": {"base": self.runs[0], "new": self.runs[1]},
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
    base: Side,
    new: Side,
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
    """Compare two sides, each one receipt or several runs of one configuration. Not comparable and not
    forced: only the reasons, no rows.

    same_process: both receipts come from one process (A/B), so peak RSS was not measured per side.
    verified: the verification of BASE and NEW where the caller already has it (see comparability; for
    sides of several runs, that of each side's first receipt).
    """
    if not 0 < threshold < 1:
        raise HarnessError(f"--threshold must be a fraction in (0, 1) (got {threshold})")
    if not 0 < alpha < 1:
        raise HarnessError(f"--alpha must be in (0, 1) (got {alpha})")
    base_runs, new_runs = _runs(base), _runs(new)
    checks = {
        "BASE": [verified[0] or verify(base_runs[0]), *(verify(r) for r in base_runs[1:])],
        "NEW": [verified[1] or verify(new_runs[0]), *(verify(r) for r in new_runs[1:])],
    }
    first = (checks["BASE"][0], checks["NEW"][0])
    reasons = comparability(base_runs[0], new_runs[0], ignore, verified=first)
    extra = [("BASE", i, r) for i, r in enumerate(base_runs[1:], 1)]
    extra += [("NEW", i, r) for i, r in enumerate(new_runs[1:], 1)]
    said_of_base = first[0].refusal("BASE")  # already among the reasons
    for side, i, run in extra:
        for reason in comparability(base_runs[0], run, ignore, verified=(first[0], checks[side][i])):
            if reason.message != said_of_base:
                reasons.append(Reason(reason.key, f"{side} run {i + 1}: {reason.message}"))
    result = Comparison(base_label, new_label, threshold, alpha, reasons, force)
    result.runs = (len(base_runs), len(new_runs))
    if result.refused:
        return result
    for side, results in checks.items():
        for i, check in enumerate(results):
            if check.speed_unreliable:
                gates = ", ".join(g.name for g in check.warnings)
                run = f" run {i + 1}" if len(results) > 1 else ""
                why = f"speed unreliable ({gates}); the verdict is inconclusive"
                result.unreliable.append(f"{side}{run}: {why}")
    note = output_note(base_runs[0], new_runs[0])
    if note:
        result.notes.append(note)
    noisy = [] if "noise" in ignore else _noisy_sides(result, base_runs, new_runs)
    several = len(base_runs) > 1 or len(new_runs) > 1
    for m in METRICS:
        j = _judge_metric(m, base_runs, new_runs, several, same_process, threshold, alpha, seed)
        if noisy and m.kind != SINGLE and j.verdict != Verdict.NOT_JUDGED:
            said = f"noisy run: {' and '.join(noisy)}"
            j = replace(j, verdict=Verdict.INCONCLUSIVE, note=f"{said}; {j.note}" if j.note else said)
        result.rows.append(Row(m, j))
        if j.note and j.note.startswith("too few runs"):
            if j.note not in result.notes:  # the same for every timing metric: said once
                result.notes.append(j.note)
        elif j.note and j.note.startswith(("too few samples", "too few repetitions")):
            result.notes.append(f"{m.label}: {j.note}")
    judged = [
        _speed_up(r.metric, r.judgement.ratio)
        for r in result.rows
        if r.judgement.verdict != Verdict.NOT_JUDGED
    ]
    result.geomean = geometric_mean(judged)
    return result


def _noisy_sides(
    result: Comparison, base_runs: list[Mapping[str, Any]], new_runs: list[Mapping[str, Any]]
) -> list[str]:
    """The sides whose noise makes their timings undecidable, each with a note saying why."""
    noisy = []
    for side, runs in (("BASE", base_runs), ("NEW", new_runs)):
        found = [
            (i, why)
            for i, run in enumerate(runs)
            if (why := noise_reasons(run, of_several_runs=len(runs) > 1)) is not None
        ]
        if not found:
            continue
        noisy.append(side)
        said = "; ".join((f"run {i + 1}: " if len(runs) > 1 else "") + "; ".join(why) for i, why in found)
        result.notes.append(
            f"{side} was a noisy run, so its timings cannot decide "
            f"(--ignore noise judges them anyway): {said}"
        )
    return noisy


def _judge_metric(
    m: Metric,
    base_runs: list[Mapping[str, Any]],
    new_runs: list[Mapping[str, Any]],
    several: bool,
    same_process: bool,
    threshold: float,
    alpha: float,
    seed: int,
) -> Judgement:
    """One metric's judgement: per-token samples by the run/repetition/block bootstrap; per-repetition
    samples by Mann-Whitney and a bootstrap with one run per side, by the run-level bootstrap with several;
    a single value per run by the threshold with one run per side, and like the others with several (peak
    RSS differs between processes of one build too)."""
    rule = {"higher_is_better": m.higher_is_better, "threshold": threshold, "alpha": alpha, "seed": seed}
    if m.kind == PER_TOKEN:
        return judge_runs(
            [groups(r, m) for r in base_runs], [groups(r, m) for r in new_runs], statistic=m.statistic, **rule
        )
    if m.kind == SINGLE and same_process:
        b, n = samples(base_runs[0], m)[0], samples(new_runs[0], m)[0]
        return Judgement.not_judged(b, n, 1, 1, "one process for both sides: not measured per side")
    if m.kind == SINGLE and not several:
        rule.pop("alpha"), rule.pop("seed")
        return judge_single(samples(base_runs[0], m)[0], samples(new_runs[0], m)[0], **rule)
    if several:
        return judge_runs(
            [[v[None] for v in samples(r, m)] for r in base_runs],
            [[v[None] for v in samples(r, m)] for r in new_runs],
            statistic=m.statistic,
            **rule,
        )
    b, n = samples(base_runs[0], m), samples(new_runs[0], m)
    if b.size == 0 or n.size == 0:
        return Judgement.not_judged(float("nan"), float("nan"), b.size, n.size, "no samples on one side")
    return judge(b, n, statistic=m.statistic, **rule)
