"""Paired statistics of the regression gate: closed-form cases and agreement with scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from evalkit.paired import (
    PairedSample,
    compare,
    minimum_detectable_effect,
    paired_bootstrap,
    required_pairs,
)
from evalkit.stats import bootstrap_ci


def test_all_differences_equal_collapse_the_interval_and_p_is_exact():
    (low, high), p = paired_bootstrap([-0.1] * 40, max_drop=0.05)
    assert (low, high) == (-0.1, -0.1) and p == 0.0  # a sure drop of 0.1 > 0.05
    (_, _), p = paired_bootstrap([-0.03] * 40, max_drop=0.05)
    assert p == 1.0  # a sure drop of 0.03 is within the allowance
    (_, _), p = paired_bootstrap([0.0] * 10, max_drop=0.0)
    assert p == 1.0  # identical runs never fail


def test_interval_is_the_shared_bootstrap_of_the_differences():
    d = np.random.default_rng(4).normal(-0.02, 0.1, size=60)
    ci, _ = paired_bootstrap(d, seed=7, n_resamples=2000)
    assert ci == bootstrap_ci(d, seed=7, n_resamples=2000)


def test_p_value_agrees_with_a_one_sided_t_test_on_large_normal_samples():
    rng = np.random.default_rng(0)
    for true_shift, max_drop in [(-0.03, 0.02), (-0.02, 0.02), (0.0, 0.01), (-0.05, 0.03)]:
        d = rng.normal(true_shift, 0.1, size=800)
        _, p = paired_bootstrap(d, max_drop=max_drop, seed=1, n_resamples=20000)
        # H1: mean(d) < -max_drop  <=>  mean(d + max_drop) < 0
        expected = scipy_stats.ttest_1samp(d + max_drop, 0.0, alternative="less").pvalue
        assert p == pytest.approx(expected, abs=0.02), (true_shift, max_drop)


def test_p_value_is_symmetric_around_the_allowance():
    base = np.random.default_rng(2).normal(0, 0.05, size=200)
    base -= base.mean()
    _, p_worse = paired_bootstrap(base - 0.05, max_drop=0.02, seed=3)
    _, p_better = paired_bootstrap(base + 0.01, max_drop=0.02, seed=3)
    assert p_worse < 0.01 and p_better > 0.99


def test_minimum_detectable_effect_closed_form():
    z = 1.6448536269514722 + 0.8416212335729143  # z_{0.95} + z_{0.80}
    assert minimum_detectable_effect(0.1, 100) == pytest.approx(z * 0.1 / 10)
    assert minimum_detectable_effect(0.2, 25, alpha=0.05) == pytest.approx(z * 0.2 / 5)
    assert minimum_detectable_effect(0.1, 0) == math.inf
    n = required_pairs(0.1, 0.02)
    assert minimum_detectable_effect(0.1, n) <= 0.02 < minimum_detectable_effect(0.1, n - 1)


def test_compare_reports_means_delta_and_power():
    baseline = np.linspace(0.2, 0.6, 30)
    candidate = baseline - 0.1
    result = compare(PairedSample([str(i) for i in range(30)], baseline, candidate), max_drop=0.05)
    assert result.delta == pytest.approx(-0.1) and result.p_value == 0.0 and result.sd == pytest.approx(0.0)
    assert result.baseline_mean == pytest.approx(0.4) and result.candidate_mean == pytest.approx(0.3)
    single = compare(PairedSample(["a"], np.array([0.5]), np.array([0.1])), max_drop=0.0)
    assert single.p_value is None  # one pair cannot separate a drop from noise
