"""The aggregate statistics against closed-form cases and scipy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as scipy_stats

from evalkit.stats import bootstrap_ci, bootstrap_means, summarize


def test_constant_sample_has_a_degenerate_interval():
    s = summarize([0.5] * 20)
    assert (s.mean, s.std, s.n, s.ci95) == (0.5, 0.0, 20, (0.5, 0.5))


def test_missing_values_are_ignored_and_empty_is_none():
    assert summarize([None, 1.0, None, 3.0]).n == 2
    assert summarize([]).to_dict() == {"mean": None, "std": None, "n": 0, "ci95": None}
    assert summarize([0.7]).to_dict() == {"mean": 0.7, "std": 0.0, "n": 1, "ci95": [0.7, 0.7]}


def test_mean_and_std_match_numpy_sample_std():
    values = np.random.default_rng(3).normal(0.4, 0.1, size=200)
    s = summarize(values.tolist())
    assert s.mean == pytest.approx(values.mean(), abs=1e-12)
    assert s.std == pytest.approx(values.std(ddof=1), abs=1e-12)


def test_bootstrap_ci_agrees_with_scipy_percentile_bootstrap_and_normal_theory():
    values = np.random.default_rng(0).beta(2, 5, size=400)
    low, high = bootstrap_ci(values, seed=1, n_resamples=4000)
    ref = scipy_stats.bootstrap((values,), np.mean, n_resamples=4000, method="percentile",
                                random_state=1).confidence_interval
    assert low == pytest.approx(ref.low, abs=0.004) and high == pytest.approx(ref.high, abs=0.004)
    se = values.std(ddof=1) / np.sqrt(values.size)
    assert low == pytest.approx(values.mean() - 1.96 * se, abs=0.005)
    assert high == pytest.approx(values.mean() + 1.96 * se, abs=0.005)


def test_bootstrap_is_deterministic_for_a_seed():
    values = np.arange(30, dtype=float)
    assert np.array_equal(bootstrap_means(values, seed=5), bootstrap_means(values, seed=5))
    assert not np.array_equal(bootstrap_means(values, seed=5), bootstrap_means(values, seed=6))


def test_bootstrap_chunks_do_not_change_results():
    values = np.random.default_rng(1).random(5000)  # forces several chunks
    means = bootstrap_means(values, seed=2, n_resamples=1000)
    assert means.shape == (1000,) and abs(means.mean() - values.mean()) < 0.01
