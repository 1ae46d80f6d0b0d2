"""Two-sample statistics behind `compare`: ratio of a statistic with a seeded bootstrap confidence interval,
the Mann-Whitney U p-value, the smallest p-value a pair of sample sizes can ever reach, and the verdict rule.

The verdict needs both significance and an effect beyond the threshold, so noise alone never reads as a
change and a real but tiny change reads as "no change". Everything is deterministic: the bootstrap is seeded.
"""

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from math import comb

import numpy as np

ALPHA = 0.05
THRESHOLD = 0.05
CONFIDENCE = 0.95
N_RESAMPLES = 2000
SEED = 1_000_003

Statistic = Callable[..., np.ndarray]


class Verdict(str, Enum):
    IMPROVEMENT = "improvement"
    REGRESSION = "regression"
    NO_CHANGE = "no change"
    INCONCLUSIVE = "inconclusive"
    NOT_JUDGED = "not judged"


@dataclass(frozen=True)
class Judgement:
    """One metric's comparison; ci/p are None where they cannot be computed (single values, n < 2)."""

    base: float
    new: float
    ratio: float
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    min_p: float | None
    n_base: int
    n_new: int
    verdict: Verdict
    note: str | None = None

    @classmethod
    def not_judged(cls, base: float, new: float, n_base: int, n_new: int, note: str) -> "Judgement":
        """A metric that cannot be judged (no ratio, interval or test), with the reason."""
        return cls(base, new, float("nan"), None, None, None, None, n_base, n_new, Verdict.NOT_JUDGED, note)


def median(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.median(x, axis=axis)


def percentile_of(q: float) -> Statistic:
    """The q-th percentile (numpy's linear interpolation, as the receipts' summaries use) as a statistic."""

    def stat(x: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.percentile(x, q, axis=axis)

    return stat


def min_p_value(n1: int, n2: int) -> float:
    """Smallest two-sided exact Mann-Whitney p-value reachable with n1 and n2 samples: 2 / C(n1+n2, n1).

    It is reached when the two samples do not overlap at all; no data can do better.
    """
    if n1 < 1 or n2 < 1:
        return 1.0
    return min(1.0, 2.0 / comb(n1 + n2, n1))


def samples_needed(alpha: float = ALPHA) -> int:
    """Smallest equal per-side sample count whose best reachable p-value is below alpha."""
    n = 1
    while min_p_value(n, n) >= alpha:
        n += 1
    return n


def mann_whitney_p(base: np.ndarray, new: np.ndarray) -> float:
    """Two-sided Mann-Whitney U p-value (exact for small samples without ties, asymptotic otherwise)."""
    from scipy.stats import mannwhitneyu  # imported on use: scipy.stats is slow to import for every command

    if np.unique(np.concatenate([base, new])).size == 1:
        return 1.0  # every value equal: scipy's normal approximation would divide by zero
    return float(mannwhitneyu(new, base, alternative="two-sided", method="auto").pvalue)


def ratio_ci(
    base: np.ndarray,
    new: np.ndarray,
    statistic: Statistic = median,
    *,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
) -> tuple[float, float]:
    """Percentile-bootstrap interval of statistic(new) / statistic(base), each side resampled on its own.

    The percentile method (not BCa) because BCa degenerates on the tiny, tied samples benchmarks produce.
    """
    from scipy.stats import bootstrap  # imported on use: scipy.stats is slow to import for every command

    def ratio(n: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
        return statistic(n, axis=axis) / statistic(b, axis=axis)

    result = bootstrap(
        (np.asarray(new, np.float64), np.asarray(base, np.float64)),
        ratio,
        n_resamples=n_resamples,
        vectorized=True,
        paired=False,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    low, high = result.confidence_interval
    return float(low), float(high)


def _effect_verdict(ratio: float, higher_is_better: bool, threshold: float) -> Verdict | None:
    """Improvement/regression when the ratio moves beyond the threshold, None when within it."""
    if abs(ratio - 1.0) <= threshold:
        return None
    better = ratio > 1.0 if higher_is_better else ratio < 1.0
    return Verdict.IMPROVEMENT if better else Verdict.REGRESSION


def judge(
    base: np.ndarray,
    new: np.ndarray,
    *,
    higher_is_better: bool,
    statistic: Statistic = median,
    threshold: float = THRESHOLD,
    alpha: float = ALPHA,
    seed: int = SEED,
) -> Judgement:
    """Compare two sample sets.

    - inconclusive when either side has < 2 samples or the best reachable p-value is not below alpha;
    - improvement / regression when p < alpha, the CI excludes 1 and the ratio is beyond the threshold;
    - no change when the whole CI lies within [1 - threshold, 1 + threshold];
    - inconclusive otherwise (too noisy to tell).
    """
    b = np.asarray(base, np.float64)
    n = np.asarray(new, np.float64)
    sb, sn = float(statistic(b)), float(statistic(n))
    if sb <= 0.0 or not np.isfinite(sb) or not np.isfinite(sn):
        return Judgement.not_judged(
            sb, sn, b.size, n.size, f"base statistic {sb:.4g} cannot be a denominator"
        )
    ratio = sn / sb
    floor = min_p_value(b.size, n.size)
    if b.size < 2 or n.size < 2 or floor >= alpha:
        note = (
            f"too few samples: with {b.size} and {n.size} the smallest reachable p-value is {floor:.3g} "
            f">= alpha {alpha:g}; take at least {samples_needed(alpha)} per side"
        )
        p = mann_whitney_p(b, n) if b.size and n.size else None
        return Judgement(sb, sn, ratio, None, None, p, floor, b.size, n.size, Verdict.INCONCLUSIVE, note)
    low, high = ratio_ci(b, n, statistic, seed=seed)
    p = mann_whitney_p(b, n)
    significant = p < alpha and (low > 1.0 or high < 1.0)
    effect = _effect_verdict(ratio, higher_is_better, threshold)
    if significant and effect is not None:
        verdict = effect
    elif 1.0 - threshold <= low and high <= 1.0 + threshold:
        verdict = Verdict.NO_CHANGE
    else:
        verdict = Verdict.INCONCLUSIVE
    return Judgement(sb, sn, ratio, low, high, p, floor, b.size, n.size, verdict)


def judge_single(
    base: float, new: float, *, higher_is_better: bool, threshold: float = THRESHOLD
) -> Judgement:
    """A metric with one value per run (peak RSS): judged by the threshold alone, no interval, no test.

    Memory peaks do not carry timing noise, so a move beyond the threshold counts; within it is no change.
    """
    if base <= 0:
        return Judgement.not_judged(base, new, 1, 1, "base is 0")
    ratio = new / base
    verdict = _effect_verdict(ratio, higher_is_better, threshold) or Verdict.NO_CHANGE
    return Judgement(
        base, new, ratio, None, None, None, None, 1, 1, verdict, "one value per run: threshold only"
    )


def geometric_mean(values: list[float]) -> float | None:
    """Geometric mean of positive finite values, None when there are none."""
    good = [v for v in values if np.isfinite(v) and v > 0]
    if not good:
        return None
    return float(np.exp(np.mean(np.log(good))))
