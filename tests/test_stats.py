"""The aggregate statistics against scipy, statsmodels and closed-form cases, at every sample size."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as scipy_stats

from evalkit.statistics.summary import holm, mcnemar_exact, mean_ci, proportion_ci, summarize


def test_constant_sample_has_a_degenerate_interval():
    s = summarize([0.5] * 20)
    assert (s.mean, s.std, s.n, s.ci95) == (0.5, 0.0, 20, (0.5, 0.5))


def test_missing_values_are_ignored_counted_as_errors_and_one_value_has_no_interval():
    assert summarize([None, 1.0, None, 3.0]).n == 2
    assert summarize([], errors=3).to_dict() == {"mean": None, "std": None, "n": 0, "ci95": None, "errors": 3}
    # one value: no spread to build an interval from -- never a zero-width [0.7, 0.7]
    assert summarize([0.7], errors=1).to_dict() == {"mean": 0.7, "std": 0.0, "n": 1, "ci95": None, "errors": 1}


def test_mean_and_std_match_numpy_sample_std():
    values = np.random.default_rng(3).normal(0.4, 0.1, size=200)
    s = summarize(values.tolist())
    assert s.mean == pytest.approx(values.mean(), abs=1e-12)
    assert s.std == pytest.approx(values.std(ddof=1), abs=1e-12)


@pytest.mark.parametrize("n", [2, 3, 5, 30, 400])
def test_mean_ci_is_scipys_student_t_interval(n):
    values = np.random.default_rng(n).beta(2, 5, size=n)
    ref = scipy_stats.ttest_1samp(values, values.mean()).confidence_interval(0.95)
    low, high = mean_ci(values)
    assert (low, high) == pytest.approx((ref.low, ref.high), abs=1e-12)
    # at n = 2 the interval is wide (t with 1 df is 12.7), as it must be for two values
    se = values.std(ddof=1) / np.sqrt(n)
    assert high - low == pytest.approx(2 * scipy_stats.t.ppf(0.975, n - 1) * se, rel=1e-9)


def test_the_mean_interval_covers_the_true_mean_at_small_n():
    """Seeded simulation: 95% intervals of normal samples of size 3 cover the mean about 95% of the time
    (the percentile bootstrap it replaced covered 76% at this size in the same simulation)."""
    rng = np.random.default_rng(0)
    covered = sum(lo <= 0.5 <= hi for lo, hi in (mean_ci(rng.normal(0.5, 0.1, 3)) for _ in range(2000)))
    assert covered / 2000 == pytest.approx(0.95, abs=0.015)


def test_a_bounded_metrics_interval_stays_in_its_range_and_keeps_its_coverage():
    """44 of 45 at the top of [0, 1]: the t interval reaches past 1; clipped to the range it ends at 1. Clipping
    cannot lower coverage (the true mean is inside the range): seeded simulation of skewed [0, 1] scores at n=4."""
    values = [1.0] * 44 + [0.0]
    raw = mean_ci(values)
    assert raw[1] > 1.0
    assert mean_ci(values, bounds=(0.0, 1.0)) == (raw[0], 1.0)
    assert summarize(values, bounds=(0.0, 1.0)).ci95 == (raw[0], 1.0)
    rng = np.random.default_rng(1)
    true_mean = 0.9 / (0.9 + 0.1)  # beta(0.9, 0.1) piles up at 1
    draws = [rng.beta(0.9, 0.1, 4) for _ in range(2000)]
    clipped = [mean_ci(d, bounds=(0.0, 1.0)) for d in draws]
    unclipped = [mean_ci(d) for d in draws]
    assert all(0.0 <= lo <= hi <= 1.0 for lo, hi in clipped)
    assert sum(lo <= true_mean <= hi for lo, hi in clipped) == sum(lo <= true_mean <= hi for lo, hi in unclipped)


@pytest.mark.parametrize(("k", "n"), [(0, 10), (10, 10), (0, 1), (1, 1), (3, 30), (500, 1000)])
def test_proportion_ci_is_wilson_and_never_zero_width(k, n):
    from statsmodels.stats.proportion import proportion_confint

    low, high = proportion_ci(k, n)
    assert (low, high) == pytest.approx(proportion_confint(k, n, alpha=0.05, method="wilson"), abs=1e-12)
    assert high - low > 0.0 and 0.0 <= low <= k / n <= high <= 1.0
    z = scipy_stats.norm.ppf(0.975)  # Wilson's closed form at 0/n: [0, z^2 / (n + z^2)]
    if k == 0:
        assert (low, high) == pytest.approx((0.0, z * z / (n + z * z)), abs=1e-12)
    assert proportion_ci(0, 0) is None


def test_holm_matches_the_step_down_procedure_by_hand():
    p = [0.01, 0.04, 0.03, 0.20]
    # sorted: 0.01*4=0.04, 0.03*3=0.09, 0.04*2=0.08 -> monotone 0.09, 0.20*1=0.20
    assert holm(p) == pytest.approx([0.04, 0.09, 0.09, 0.20])
    assert holm([0.3]) == [0.3] and holm([]) == []


def test_mcnemar_exact_is_a_two_sided_binomial_test_on_the_discordant_pairs():
    assert mcnemar_exact(0, 0) == 1.0
    for only_a, only_b in ((0, 6), (5, 1), (7, 3), (2, 2)):
        expected = scipy_stats.binomtest(only_a, only_a + only_b, 0.5).pvalue
        assert mcnemar_exact(only_a, only_b) == pytest.approx(expected, abs=1e-12)
