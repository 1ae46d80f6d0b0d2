"""Two-sample statistics behind `compare`: the ratio of a statistic with a seeded bootstrap confidence
interval, a p-value, the smallest p-value a pair of sample sizes can ever reach, the minimum detectable effect
of the pair, and the verdict rule.

Two sample designs. One value per repetition (prefill, time to first token): Mann-Whitney U and a percentile
bootstrap of the ratio, each side resampled on its own. Per-token samples (decode speed, its floor, token
latencies): the decode steps of each repetition stay in order, and a block bootstrap resamples them level by
level: the side's runs (separate processes) with replacement, then each drawn run's repetitions with
replacement, then circular blocks of consecutive steps inside each repetition. The interval so carries the
run-to-run spread (when a side has several runs), the repetition-to-repetition spread and the correlation of
neighbouring steps; its p-value is the percentile-bootstrap test of ratio = 1. With one run per side the top
level has nothing to draw from: the spread between processes is then not in the interval. With several, the
runs are few and differ the most, so a verdict needs as many runs as a rank test over them would (the
reachable-p floor below, over runs). A side of several runs judges its per-repetition metrics the same way,
each repetition a group of one value.

The verdict needs both significance and an effect beyond the threshold, so noise alone never reads as a
change and a real but tiny change reads as "no change". The minimum detectable effect is the change that
would be significant with 80 % probability given the pair's bootstrap spread: (z(1 - alpha/2) + z(0.8)) times
the standard deviation of the log-ratio. Everything is deterministic: the bootstraps are seeded.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from math import comb
from statistics import NormalDist

import numpy as np

ALPHA = 0.05
THRESHOLD = 0.05
CONFIDENCE = 0.95
N_RESAMPLES = 2000
SEED = 1_000_003
POWER = 0.80
NEVER = float("inf")  # the minimum detectable effect of a pair that can detect no change
_CHUNK_VALUES = 4_000_000  # values the block bootstrap draws at once (bounds its memory)

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
    mde: float | None = None  # relative change detectable with 80 % power; inf: none is; None: no test

    @classmethod
    def not_judged(cls, base: float, new: float, n_base: int, n_new: int, note: str) -> "Judgement":
        """A metric that cannot be judged (no ratio, interval or test), with the reason."""
        return cls(base, new, float("nan"), None, None, None, None, n_base, n_new, Verdict.NOT_JUDGED, note)


def median(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """The median; NaN marks no sample (the padding of the block bootstrap)."""
    return np.nanmedian(x, axis=axis)


def rate(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Events per second from per-event seconds: their count over their sum (NaN marks no event)."""
    x = np.asarray(x, np.float64)
    return np.sum(~np.isnan(x), axis=axis) / np.nansum(x, axis=axis)


def percentile_of(q: float) -> Statistic:
    """The q-th percentile (numpy's linear interpolation, as the receipts' summaries use) as a statistic;
    NaN marks no sample."""

    def stat(x: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.nanpercentile(x, q, axis=axis)

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
    """Percentile-bootstrap interval of statistic(new) / statistic(base), each side resampled on its own."""
    low, high, _ = _ratio_bootstrap(base, new, statistic, confidence, n_resamples, seed)
    return low, high


def _ratio_bootstrap(
    base: np.ndarray, new: np.ndarray, statistic: Statistic, confidence: float, n_resamples: int, seed: int
) -> tuple[float, float, np.ndarray]:
    """The interval and the bootstrap distribution of the ratio. The percentile method, not BCa: BCa
    degenerates on the tiny, tied samples benchmarks produce."""
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
    return float(low), float(high), np.asarray(result.bootstrap_distribution, np.float64)


def block_length(n: int) -> int:
    """Steps per block: the cube root of a repetition's length, the usual order for a block bootstrap."""
    return max(1, round(n ** (1 / 3)))


Runs = Sequence[Sequence[np.ndarray]]  # a side: its runs, each run its repetitions' ordered samples


def block_bootstrap(
    groups: Sequence[np.ndarray] | None,
    statistic: Statistic,
    n_resamples: int,
    rng: np.random.Generator,
    *,
    runs: Runs | None = None,
) -> np.ndarray:
    """Bootstrap distribution of `statistic` over the pooled samples of one side. `groups` is one run (one
    ordered array per repetition); `runs` several. Each resample draws as many runs as there are, with
    replacement, then as many repetitions as each drawn run has, from that run, with replacement, and rebuilds
    each drawn repetition from circular blocks of its consecutive samples, cut to its own length."""
    runs = [list(groups)] if runs is None else [list(r) for r in runs]
    flat = [g for run in runs for g in run]
    lens = np.array([len(g) for g in flat])
    per_run = np.array([len(run) for run in runs])
    offsets = np.concatenate([[0], np.cumsum(per_run)[:-1]])
    n_runs, slots, longest = len(runs), int(per_run.max()), int(lens.max())
    padded = np.full((len(flat), longest), np.nan)
    for i, g in enumerate(flat):
        padded[i, : len(g)] = g
    size = block_length(int(np.median(lens)))
    blocks = -(-longest // size)
    out = np.empty(n_resamples)
    chunk = max(1, _CHUNK_VALUES // (n_runs * slots * blocks * size))
    for start in range(0, n_resamples, chunk):
        b = min(chunk, n_resamples - start)
        run = rng.integers(0, n_runs, (b, n_runs))[..., None]
        kept = np.arange(slots) < per_run[run]  # a drawn run fills as many slots as it has repetitions
        rep = (rng.random((b, n_runs, slots)) * per_run[run]).astype(np.int64)
        pick = (offsets[run] + np.where(kept, rep, 0)).reshape(b, n_runs * slots)
        n = lens[pick]
        first = (rng.random((b, n_runs * slots, blocks)) * n[..., None]).astype(np.int64)
        idx = (first[..., None] + np.arange(size)) % n[..., None, None]
        idx = idx.reshape(b, n_runs * slots, blocks * size)[..., :longest]
        values = padded[pick[..., None], idx]
        values[(np.arange(longest) >= n[..., None]) | ~kept.reshape(b, -1)[..., None]] = np.nan
        out[start : start + b] = statistic(values.reshape(b, n_runs * slots * longest), axis=-1)
    return out


def bootstrap_p(ratios: np.ndarray) -> float:
    """Two-sided percentile-bootstrap p-value of ratio = 1: twice the smaller share of resampled ratios on
    either side of 1, the observed pair counted as one resample (so it is never 0)."""
    below, above = int(np.sum(ratios <= 1.0)), int(np.sum(ratios >= 1.0))
    return min(1.0, 2.0 * (min(below, above) + 1) / (ratios.size + 1))


def detectable_effect(ratios: np.ndarray, alpha: float = ALPHA, power: float = POWER) -> float:
    """The relative change that is significant with probability `power` at `alpha`, from the spread of the
    bootstrap ratios: exp((z(1 - alpha/2) + z(power)) * sd(log ratio)) - 1."""
    logs = np.log(ratios[np.isfinite(ratios) & (ratios > 0)])
    if logs.size < 2:
        return float("inf")
    z = NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)
    return float(np.expm1(z * np.std(logs, ddof=1)))


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
        return Judgement(
            sb, sn, ratio, None, None, p, floor, b.size, n.size, Verdict.INCONCLUSIVE, note, NEVER
        )
    low, high, ratios = _ratio_bootstrap(b, n, statistic, CONFIDENCE, N_RESAMPLES, seed)
    p = mann_whitney_p(b, n)
    verdict = _verdict(ratio, low, high, p, higher_is_better, threshold, alpha)
    mde = detectable_effect(ratios, alpha)
    return Judgement(sb, sn, ratio, low, high, p, floor, b.size, n.size, verdict, mde=mde)


def judge_runs(
    base: Runs,
    new: Runs,
    *,
    higher_is_better: bool,
    statistic: Statistic,
    threshold: float = THRESHOLD,
    alpha: float = ALPHA,
    seed: int = SEED,
) -> Judgement:
    """Compare two sides of one or more runs each (the level-by-level block bootstrap of the module
    docstring), by `judge`'s verdict rule. Each side needs two repetitions in all, so that a spread between
    repetitions is part of the interval. When a side has several runs, the runs are the units that differ
    the most, and a percentile bootstrap over a few of them is too narrow: as for a rank test over the runs,
    no verdict but inconclusive is given unless 2 / C(runs + runs, runs) < alpha (4 runs per side at 0.05);
    the interval and the detectable effect are still shown."""
    base = [r for r in ([np.asarray(g, np.float64) for g in run if len(g)] for run in base) if r]
    new = [r for r in ([np.asarray(g, np.float64) for g in run if len(g)] for run in new) if r]
    pooled_b = [g for run in base for g in run]
    pooled_n = [g for run in new for g in run]
    nb, nn = sum(g.size for g in pooled_b), sum(g.size for g in pooled_n)
    if not nb or not nn:
        return Judgement.not_judged(float("nan"), float("nan"), nb, nn, "no samples on one side")
    sb, sn = float(statistic(np.concatenate(pooled_b))), float(statistic(np.concatenate(pooled_n)))
    if sb <= 0.0 or not np.isfinite(sb) or not np.isfinite(sn):
        return Judgement.not_judged(sb, sn, nb, nn, f"base statistic {sb:.4g} cannot be a denominator")
    ratio = sn / sb
    if len(pooled_b) < 2 or len(pooled_n) < 2:
        counts = f"{len(pooled_b)} and {len(pooled_n)}"
        note = f"too few repetitions: {counts}; the interval needs at least 2 per side"
        return Judgement(sb, sn, ratio, None, None, None, None, nb, nn, Verdict.INCONCLUSIVE, note, NEVER)
    rng = np.random.default_rng(seed)
    base_stats = block_bootstrap(None, statistic, N_RESAMPLES, rng, runs=base)
    new_stats = block_bootstrap(None, statistic, N_RESAMPLES, rng, runs=new)
    ratios = new_stats / base_stats
    low, high = (float(v) for v in np.percentile(ratios, [50 * (1 - CONFIDENCE), 50 * (1 + CONFIDENCE)]))
    p, mde = bootstrap_p(ratios), detectable_effect(ratios, alpha)
    floor = min_p_value(len(base), len(new)) if len(base) > 1 or len(new) > 1 else None
    if floor is not None and floor >= alpha:
        note = (
            f"too few runs: with {len(base)} and {len(new)} runs per side the smallest reachable p-value is "
            f"{floor:.3g} >= alpha {alpha:g}; take at least {samples_needed(alpha)} per side"
        )
        return Judgement(sb, sn, ratio, low, high, p, floor, nb, nn, Verdict.INCONCLUSIVE, note, mde)
    verdict = _verdict(ratio, low, high, p, higher_is_better, threshold, alpha)
    return Judgement(sb, sn, ratio, low, high, p, floor, nb, nn, verdict, mde=mde)


def _verdict(
    ratio: float, low: float, high: float, p: float, higher_is_better: bool, threshold: float, alpha: float
) -> Verdict:
    """Improvement / regression when significant (p < alpha and the interval excludes 1) and beyond the
    threshold; no change when the whole interval lies within the threshold; inconclusive otherwise."""
    significant = p < alpha and (low > 1.0 or high < 1.0)
    effect = _effect_verdict(ratio, higher_is_better, threshold)
    if significant and effect is not None:
        return effect
    if 1.0 - threshold <= low and high <= 1.0 + threshold:
        return Verdict.NO_CHANGE
    return Verdict.INCONCLUSIVE


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
