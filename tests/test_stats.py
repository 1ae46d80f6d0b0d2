"""harness.comparison.stats: each verdict on sample sets whose answer is known, the reachable-p floor,
determinism."""

from math import comb

import numpy as np
import pytest

from harness.comparison.stats import (
    Verdict,
    geometric_mean,
    judge,
    judge_single,
    mann_whitney_p,
    min_p_value,
    percentile_of,
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
