"""harness.comparison.stats: each verdict on sample sets whose answer is known, the reachable-p floor,
determinism."""

from math import comb

import numpy as np
import pytest

from harness.comparison.stats import (
    Verdict,
    block_bootstrap,
    block_length,
    bootstrap_p,
    detectable_effect,
    geometric_mean,
    judge,
    judge_runs,
    judge_single,
    mann_whitney_p,
    min_p_value,
    percentile_of,
    rate,
    ratio_ci,
    samples_needed,
)

BASE = np.array([100.0, 101.0, 99.0, 100.5, 99.5, 100.2, 99.8, 100.8])


def test_min_p_value_is_two_over_the_binomial() -> None:
    assert min_p_value(3, 3) == pytest.approx(0.1)
    assert min_p_value(4, 4) == pytest.approx(2 / 70)
    assert min_p_value(2, 5) == pytest.approx(2 / comb(7, 2))
    assert min_p_value(1, 1) == 1.0
    assert min_p_value(0, 4) == 1.0


def test_min_p_value_is_what_scipy_reaches_on_separated_samples() -> None:
    for n1, n2 in ((3, 3), (4, 4), (3, 5), (5, 5)):
        low = np.arange(n1, dtype=float)
        high = np.arange(n2, dtype=float) + 100
        assert mann_whitney_p(low, high) == pytest.approx(min_p_value(n1, n2))


def test_samples_needed_follows_alpha() -> None:
    assert samples_needed(0.05) == 4  # 3 vs 3 can reach only p = 0.1
    assert samples_needed(0.01) == 5  # 4 vs 4 reaches 0.029, 5 vs 5 reaches 0.0079
    assert samples_needed(0.2) == 3


def test_clear_improvement_higher_is_better() -> None:
    j = judge(BASE, BASE * 1.2, higher_is_better=True)
    assert j.verdict is Verdict.IMPROVEMENT
    assert j.ratio == pytest.approx(1.2)
    assert j.ci_low > 1.15 and j.ci_high < 1.25
    assert j.p_value < 0.001


def test_clear_regression_higher_is_better() -> None:
    j = judge(BASE, BASE * 0.8, higher_is_better=True)
    assert j.verdict is Verdict.REGRESSION
    assert j.ci_high < 1.0


def test_direction_lower_is_better() -> None:
    assert judge(BASE, BASE * 1.2, higher_is_better=False).verdict is Verdict.REGRESSION
    assert judge(BASE, BASE * 0.8, higher_is_better=False).verdict is Verdict.IMPROVEMENT


def test_identical_samples_are_no_change() -> None:
    j = judge(BASE, BASE.copy(), higher_is_better=True)
    assert j.verdict is Verdict.NO_CHANGE
    assert j.ratio == 1.0
    assert j.ci_low <= 1.0 <= j.ci_high
    assert j.p_value == 1.0


def test_constant_samples_are_no_change() -> None:
    j = judge(np.full(6, 5.0), np.full(6, 5.0), higher_is_better=True)
    assert j.verdict is Verdict.NO_CHANGE
    assert (j.ci_low, j.ci_high, j.p_value) == (1.0, 1.0, 1.0)


def test_significant_but_below_threshold_is_no_change() -> None:
    j = judge(BASE, BASE * 1.02, higher_is_better=True)
    assert j.p_value < 0.05  # the shift is real...
    assert j.verdict is Verdict.NO_CHANGE  # ...but smaller than the 5 % threshold
    assert judge(BASE, BASE * 1.02, higher_is_better=True, threshold=0.01).verdict is Verdict.IMPROVEMENT


def test_noise_larger_than_the_effect_is_inconclusive() -> None:
    rng = np.random.default_rng(3)
    base = 100 * (1 + 0.5 * rng.uniform(-1, 1, 6))
    new = 110 * (1 + 0.5 * rng.uniform(-1, 1, 6))
    j = judge(base, new, higher_is_better=True)
    assert j.p_value > 0.05
    assert j.verdict is Verdict.INCONCLUSIVE
    assert j.note is None


def test_too_few_samples_is_inconclusive_with_the_computed_warning() -> None:
    j = judge(BASE[:3], BASE[:3] * 2, higher_is_better=True)  # a 2x change, but 3 vs 3 cannot reach p < 0.05
    assert j.verdict is Verdict.INCONCLUSIVE
    assert j.min_p == pytest.approx(0.1)
    assert "0.1" in j.note and ">= alpha 0.05" in j.note and "at least 4 per side" in j.note
    assert j.ci_low is None
    four = judge(BASE[:4], BASE[:4] * 2, higher_is_better=True)  # 4 vs 4 can
    assert four.verdict is Verdict.IMPROVEMENT and four.note is None
    loose = judge(BASE[:3], BASE[:3] * 2, higher_is_better=True, alpha=0.2)
    assert loose.verdict is Verdict.IMPROVEMENT


def test_single_sample_side_is_inconclusive() -> None:
    j = judge(BASE[:1], BASE * 2, higher_is_better=True)
    assert j.verdict is Verdict.INCONCLUSIVE
    assert "too few samples" in j.note


def test_bootstrap_is_deterministic_and_seeded() -> None:
    rng = np.random.default_rng(9)
    base, new = rng.normal(100, 5, 10), rng.normal(105, 5, 10)
    assert ratio_ci(base, new) == ratio_ci(base, new)
    assert ratio_ci(base, new, seed=1) != ratio_ci(base, new, seed=2)
    assert judge(base, new, higher_is_better=True) == judge(base, new, higher_is_better=True)


def test_percentile_statistic_for_tail_latency() -> None:
    rng = np.random.default_rng(5)
    base = rng.exponential(1.0, 400) + 1.0
    j = judge(base, base * 1.5, higher_is_better=False, statistic=percentile_of(99))
    assert j.base == pytest.approx(np.percentile(base, 99))
    assert j.ratio == pytest.approx(1.5)
    assert j.verdict is Verdict.REGRESSION


def test_single_value_metric_by_threshold_only() -> None:
    assert judge_single(100.0, 110.0, higher_is_better=False).verdict is Verdict.REGRESSION
    assert judge_single(100.0, 90.0, higher_is_better=False).verdict is Verdict.IMPROVEMENT
    same = judge_single(100.0, 103.0, higher_is_better=False)
    assert same.verdict is Verdict.NO_CHANGE and same.p_value is None and same.ci_low is None
    assert judge_single(0.0, 1.0, higher_is_better=False).verdict is Verdict.NOT_JUDGED


def test_zero_base_is_not_judged() -> None:
    assert judge(np.zeros(5), np.ones(5), higher_is_better=True).verdict is Verdict.NOT_JUDGED


def test_geometric_mean() -> None:
    assert geometric_mean([2.0, 0.5]) == pytest.approx(1.0)
    assert geometric_mean([4.0, 1.0, float("nan")]) == pytest.approx(2.0)
    assert geometric_mean([]) is None


def _steps(rep_speeds: list[float], steps: int = 60, jitter: float = 0.02, seed: int = 0) -> list[np.ndarray]:
    """Per-step decode seconds of repetitions decoding at the given speeds, with a little seeded jitter."""
    rng = np.random.default_rng(seed)
    return [(1.0 / v) * (1 + jitter * rng.standard_normal(steps)) for v in rep_speeds]


def test_block_bootstrap_keeps_each_repetition_whole_and_its_length() -> None:
    groups = [np.arange(10.0), np.arange(20.0)]

    def count(x: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.sum(~np.isnan(x), axis=axis)

    counts = block_bootstrap(groups, count, 500, np.random.default_rng(0))
    assert set(counts.astype(int)) == {20, 30, 40}  # two drawn repetitions, each at its own length
    constant = block_bootstrap([np.full(7, 2.0)] * 3, rate, 200, np.random.default_rng(0))
    assert np.all(constant == 0.5)
    assert block_length(127) == 5 and block_length(1) == 1


def test_blocked_judgement_decides_a_default_sized_run() -> None:
    base = _steps([100.0] * 5, 127, seed=1)
    slower = _steps([92.0] * 5, 127, seed=2)  # 8 % slower
    j = judge_runs([base], [slower], higher_is_better=True, statistic=rate)
    assert j.verdict is Verdict.REGRESSION and j.ci_high < 1.0 and j.p_value < 0.01
    assert j.n_base == j.n_new == 5 * 127 and j.min_p is None
    assert j.ratio == pytest.approx(rate(np.concatenate(slower)) / rate(np.concatenate(base)))
    same = judge_runs([base], [_steps([100.0] * 5, 127, seed=3)], higher_is_better=True, statistic=rate)
    assert same.verdict is Verdict.NO_CHANGE and same.mde < 0.02


def test_spread_between_repetitions_widens_the_interval() -> None:
    """Steps of one repetition share its conditions; the interval must not treat them as independent."""
    drifting = _steps([90.0, 110.0, 95.0, 105.0, 100.0], seed=4)
    shuffled = np.random.default_rng(5).permutation(np.concatenate(drifting)).reshape(5, -1)
    new = _steps([100.0] * 5, seed=6)
    wide = judge_runs([drifting], [new], higher_is_better=True, statistic=rate)
    narrow = judge_runs([list(shuffled)], [new], higher_is_better=True, statistic=rate)
    assert (wide.ci_high - wide.ci_low) > 3 * (narrow.ci_high - narrow.ci_low)
    assert wide.mde > 3 * narrow.mde


def test_blocked_judgement_needs_two_repetitions_per_side() -> None:
    j = judge_runs([_steps([100.0])], [_steps([50.0] * 3)], higher_is_better=True, statistic=rate)
    assert j.verdict is Verdict.INCONCLUSIVE and j.mde == float("inf")
    assert j.note == "too few repetitions: 1 and 3; the interval needs at least 2 per side"
    assert (
        judge_runs([[]], [_steps([1.0] * 2)], higher_is_better=True, statistic=rate).verdict
        is Verdict.NOT_JUDGED
    )


def test_blocked_percentiles_and_determinism() -> None:
    base = _steps([100.0] * 4, seed=7)
    new = [g * 1.3 for g in _steps([100.0] * 4, seed=8)]
    j = judge_runs([base], [new], higher_is_better=False, statistic=percentile_of(99))
    assert j.verdict is Verdict.REGRESSION
    assert j == judge_runs([base], [new], higher_is_better=False, statistic=percentile_of(99))


def test_bootstrap_p_and_detectable_effect() -> None:
    assert bootstrap_p(np.full(999, 1.2)) == pytest.approx(2 / 1000)
    assert bootstrap_p(np.array([0.9, 1.1] * 500)) == 1.0
    logs = np.random.default_rng(0).normal(0.0, 0.01, 20000)
    assert detectable_effect(np.exp(logs)) == pytest.approx(np.expm1(2.8016 * 0.01), rel=0.03)
    assert detectable_effect(np.ones(1)) == float("inf")


def test_per_repetition_judgement_reports_its_detectable_effect() -> None:
    j = judge(BASE, BASE * 1.2, higher_is_better=True)
    assert 0 < j.mde < 0.05
    few = judge(BASE[:3], BASE[:3], higher_is_better=True)
    assert few.mde == float("inf")  # 3 vs 3 cannot reach p < 0.05: no change is detectable


FLOOR = percentile_of(1)  # the decode step floor compare judges


def _run(
    seed: int, floor: float = 1.0, spells: float = 0.0, reps: int = 5, steps: int = 127
) -> list[np.ndarray]:
    """One run's decode steps as a shared host makes them: a floor that grows with the position, noise that
    only adds time (exponential, 2 % on average), and with `spells` > 0 stretches of 20-120 consecutive steps
    slowed 1.2-1.5x until about that share of the run is slowed."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(reps):
        x = floor * (1 + np.arange(steps) / 500) * (1 + rng.exponential(0.02, steps))
        slowed = np.zeros(steps, bool)
        while slowed.mean() < spells:
            start, length = rng.integers(0, steps), rng.integers(20, 121)
            slowed[start : start + length] = True
            x[start : start + length] *= rng.uniform(1.2, 1.5)
        out.append(x)
    return out


def test_slow_spells_on_one_side_leave_the_floor_unchanged() -> None:
    base = [_run(seed) for seed in (1, 2, 3, 4)]
    new = [_run(seed, spells=0.4) for seed in (5, 6, 7, 8)]
    floor = judge_runs(base, new, higher_is_better=False, statistic=FLOOR)
    assert floor.verdict == Verdict.NO_CHANGE
    assert 0.95 <= floor.ci_low <= floor.ratio <= floor.ci_high <= 1.05
    # the mean step time (decode tok/s) reads the same spells as a slowdown
    mean = judge_runs(
        base, new, higher_is_better=False, statistic=lambda x, axis=-1: np.nanmean(x, axis=axis)
    )
    assert mean.verdict != Verdict.NO_CHANGE and mean.ratio > 1.1


def test_a_ten_percent_higher_floor_is_a_regression_through_spells() -> None:
    base = [_run(seed, spells=0.3) for seed in (11, 12, 13, 14)]
    new = [_run(seed, floor=1.1, spells=0.3) for seed in (15, 16, 17, 18)]
    j = judge_runs(base, new, higher_is_better=False, statistic=FLOOR)
    assert j.verdict == Verdict.REGRESSION
    assert 1.05 < j.ci_low <= j.ratio <= j.ci_high < 1.15
    assert j.mde is not None and j.mde < 0.05
    # the same shift seen through two runs a side: a verdict over two runs is out of reach, and it says so
    two = judge_runs(base[:2], new[:2], higher_is_better=False, statistic=FLOOR)
    assert two.verdict == Verdict.INCONCLUSIVE and two.ci_low > 1.05
    assert two.note is not None and two.note.startswith("too few runs: with 2 and 2 runs per side")


def test_the_spread_between_runs_enters_the_interval_only_with_several_runs() -> None:
    # eight runs of one build whose floors differ from process to process by up to 12 %
    floors = (1.0, 1.12, 1.06, 0.99, 1.1, 1.02, 0.98, 1.08)
    runs = [_run(20 + i, floor=f) for i, f in enumerate(floors)]
    single = judge_runs([runs[0]], [runs[1]], higher_is_better=False, statistic=FLOOR)
    assert single.verdict == Verdict.REGRESSION  # one run per side: the interval cannot hold that spread
    several = judge_runs(runs[::2], runs[1::2], higher_is_better=False, statistic=FLOOR)
    assert several.verdict == Verdict.INCONCLUSIVE and several.note is None
    assert several.ci_low < 1.0 < several.ci_high and several.mde > single.mde


def test_run_level_resamples_keep_each_runs_repetitions() -> None:
    runs = [[np.full(4, 1.0)] * 2, [np.full(6, 3.0)] * 3]  # run 1: 2 x 4 steps of 1 s; run 2: 3 x 6 of 3 s
    total = block_bootstrap(
        None, lambda x, axis=-1: np.nansum(x, axis=axis), 400, np.random.default_rng(0), runs=runs
    )
    assert set(np.round(total, 6)) <= {16.0, 8.0 + 54.0, 108.0}  # each draw: 2 runs, each with all its steps
    assert {16.0, 62.0, 108.0} <= set(np.round(total, 6))
