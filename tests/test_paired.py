"""Paired regression statistics against closed-form cases and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from evalkit.errors import InputError
from evalkit.paired import (
    PairedSample,
    compare,
    minimum_detectable_effect,
    paired_bootstrap,
    paired_scores,
    record_index,
    required_pairs,
)
from evalkit.stats import bootstrap_ci, bootstrap_means


def _sample(base, cand) -> PairedSample:
    base, cand = np.asarray(base, dtype=float), np.asarray(cand, dtype=float)
    return PairedSample([str(i) for i in range(base.size)], base, cand)


def _standard_normal(n: int, seed: int) -> np.ndarray:
    """Exactly mean 0 and sample sd 1, so t statistics are known in closed form."""
    x = np.random.default_rng(seed).normal(size=n)
    return (x - x.mean()) / x.std(ddof=1)


@pytest.mark.parametrize(("value", "max_drop", "p"), [
    (-0.05, 0.01, 0.0),   # every sample 0.05 worse, 0.01 allowed: certainly a regression
    (-0.05, 0.10, 1.0),   # within the allowance
    (-0.01, 0.01, 1.0),   # exactly at the allowance: H0 (drop <= DELTA) holds
    (0.02, 0.0, 1.0),     # an improvement
])
def test_all_differences_equal_collapse_the_interval_and_give_p_0_or_1(value, max_drop, p):
    (low, high), p_value = paired_bootstrap([value] * 40, max_drop=max_drop, seed=3)
    assert (low, high) == (value, value) and p_value == p
    c = compare(_sample(np.full(40, 0.5), np.full(40, 0.5 + value)), max_drop=max_drop)
    assert c.baseline_mean == 0.5 and c.candidate_mean == pytest.approx(0.5 + value)
    assert c.n == 40 and c.sd == pytest.approx(0.0, abs=1e-12) and c.mde == pytest.approx(0.0, abs=1e-12)
    assert c.delta == pytest.approx(value) and c.significant == (p == 0.0)


def test_identical_scores_give_zero_difference_and_p_1():
    scores = np.random.default_rng(0).random(25)
    c = compare(_sample(scores, scores), max_drop=0.0)
    assert (c.delta, c.ci95, c.p_value, c.mde) == (0.0, (0.0, 0.0), 1.0, 0.0)


def test_interval_is_evalkit_stats_bootstrap_ci_on_the_differences():
    rng = np.random.default_rng(4)
    base = rng.random(60)
    cand = np.clip(base + rng.normal(-0.02, 0.05, 60), 0, 1)
    (low, high), _ = paired_bootstrap(cand - base, seed=9, n_resamples=3000)
    assert (low, high) == bootstrap_ci(cand - base, seed=9, n_resamples=3000)


def test_symmetric_differences_give_p_one_half_and_a_symmetric_interval():
    x = np.random.default_rng(1).normal(0, 0.1, size=300)
    d = np.concatenate([x, -x])  # mean exactly 0, symmetric
    (low, high), p = paired_bootstrap(d, max_drop=0.0, seed=2, n_resamples=20_000)
    assert p == pytest.approx(0.5, abs=0.015)
    assert low == pytest.approx(-high, abs=0.002) and low < 0 < high
    # moving the observed mean by -s and +s mirrors p around one half
    (_, _), p_above = paired_bootstrap(d - 0.004, max_drop=0.0, seed=2, n_resamples=20_000)
    (_, _), p_below = paired_bootstrap(d + 0.004, max_drop=0.0, seed=2, n_resamples=20_000)
    assert p_above < 0.5 < p_below
    assert p_above + p_below == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize(("t_stat", "max_drop"), [(-2.5, 0.02), (-1.0, 0.01), (0.0, 0.0), (0.8, 0.03),
                                                  (-1.7, 0.0)])
def test_p_value_agrees_with_scipy_one_sample_t_test_on_shifted_differences(t_stat, max_drop):
    n, sd = 2000, 0.1
    se = sd / math.sqrt(n)
    # differences whose shifted mean (d + DELTA) has exactly the t statistic t_stat
    d = _standard_normal(n, seed=5) * sd + (t_stat * se - max_drop)
    expected = scipy_stats.ttest_1samp(d + max_drop, 0.0, alternative="less").pvalue
    _, p = paired_bootstrap(d, max_drop=max_drop, seed=0, n_resamples=10_000)
    assert p == pytest.approx(expected, abs=0.015)


def test_interval_agrees_with_scipy_paired_percentile_bootstrap():
    rng = np.random.default_rng(7)
    base = rng.beta(4, 3, size=250)
    cand = np.clip(base + rng.normal(-0.03, 0.08, size=250), 0, 1)
    low, high = compare(_sample(base, cand), seed=1).ci95
    ref = scipy_stats.bootstrap((cand, base), lambda c, b, axis: np.mean(c - b, axis=axis), paired=True,
                                vectorized=True, method="percentile", n_resamples=10_000,
                                random_state=1).confidence_interval
    assert low == pytest.approx(ref.low, abs=0.002) and high == pytest.approx(ref.high, abs=0.002)


def test_p_value_is_the_dual_of_the_one_sided_percentile_bound():
    d = np.random.default_rng(8).normal(-0.02, 0.1, size=80)
    means = bootstrap_means(d, seed=4, n_resamples=5000)
    for alpha in (0.01, 0.05, 0.1):
        upper = np.quantile(means, 1 - alpha)
        for max_drop in np.linspace(0, 0.06, 25):
            _, p = paired_bootstrap(d, max_drop=max_drop, seed=4, n_resamples=5000)
            if abs(upper + max_drop) > 1e-9:  # not exactly on the bound
                assert (p < alpha) == (upper < -max_drop), (alpha, max_drop, p, upper)


def test_p_value_grows_with_the_allowed_drop_and_is_deterministic():
    d = np.random.default_rng(9).normal(-0.03, 0.1, size=50)
    ps = [paired_bootstrap(d, max_drop=m, seed=0)[1] for m in (0.0, 0.01, 0.02, 0.04, 0.08)]
    assert ps == sorted(ps) and ps[0] < 0.05 < ps[-1]
    assert paired_bootstrap(d, max_drop=0.01, seed=0) == paired_bootstrap(d, max_drop=0.01, seed=0)


def test_minimum_detectable_effect_matches_the_closed_form():
    z = scipy_stats.norm.ppf(0.95) + scipy_stats.norm.ppf(0.8)
    assert minimum_detectable_effect(0.1, 100) == pytest.approx(z * 0.1 / 10, rel=1e-9)
    assert minimum_detectable_effect(0.1, 100, alpha=0.01, power=0.9) == pytest.approx(
        (scipy_stats.norm.ppf(0.99) + scipy_stats.norm.ppf(0.9)) * 0.01, rel=1e-9)
    assert minimum_detectable_effect(0.1, 400) == pytest.approx(minimum_detectable_effect(0.1, 100) / 2)
    n = required_pairs(0.1, 0.02)
    assert minimum_detectable_effect(0.1, n) <= 0.02 < minimum_detectable_effect(0.1, n - 1)
    assert required_pairs(0.1, 0.0) is None
    assert minimum_detectable_effect(0.1, 0) == math.inf
    c = compare(_sample(np.zeros(64), np.random.default_rng(2).normal(0, 0.2, 64)), alpha=0.05)
    assert c.mde == pytest.approx(z * c.sd / 8, rel=1e-9)


def test_the_test_has_its_nominal_size_and_power_at_the_mde():
    """Simulated: a true drop of exactly DELTA is flagged about alpha of the time; DELTA + MDE about 80%."""
    rng = np.random.default_rng(11)
    n, sd, delta, alpha, reps = 100, 0.1, 0.01, 0.05, 300
    mde = minimum_detectable_effect(sd, n, alpha=alpha)
    rates = []
    for true_drop in (delta, delta + mde):
        hits = 0
        for rep in range(reps):
            d = rng.normal(-true_drop, sd, size=n)
            _, p = paired_bootstrap(d, max_drop=delta, seed=rep, n_resamples=1000)
            hits += (p < alpha) and (-d.mean() > delta)
        rates.append(hits / reps)
    assert rates[0] == pytest.approx(alpha, abs=0.04)
    assert rates[1] == pytest.approx(0.8, abs=0.08)


def test_paired_scores_match_by_id_and_skip_errors_and_missing_scores():
    base = record_index([
        {"id": 1, "scores": {"m": 0.5}, "error": None},
        {"id": "b", "scores": {"m": 0.4}, "error": None},
        {"id": "c", "scores": {"m": 0.3}, "error": None},
        {"id": "d", "scores": {"m": 0.9}, "error": None},
        {"id": "only-base", "scores": {"m": 0.1}, "error": None},
    ], source="base")
    cand = record_index([
        {"id": "d", "scores": {"m": 0.7}, "error": None},
        {"id": "1", "scores": {"m": 0.6}, "error": None},   # ids are matched as text
        {"id": "b", "scores": {}, "error": "timeout"},      # errored: left out
        {"id": "c", "scores": {"m": None}, "error": None},  # no score: left out
        {"id": "only-cand", "scores": {"m": 1.0}, "error": None},
    ], source="cand")
    pairs = paired_scores(base, cand, "m")
    assert pairs.ids == ["d", "1"]
    assert pairs.baseline.tolist() == [0.9, 0.5] and pairs.differences == pytest.approx([-0.2, 0.1])
    with pytest.raises(InputError, match=r"runs/x/records.jsonl:2: duplicate id 'a'"):
        record_index([{"id": "a"}, {"id": "a"}], source="runs/x/records.jsonl")


def test_too_few_pairs_cannot_be_tested():
    one = compare(_sample([0.5], [0.1]), max_drop=0.0)
    assert one.n == 1 and one.p_value is None and not one.significant and one.delta == pytest.approx(-0.4)
    none = compare(_sample([], []))
    assert none.n == 0 and none.delta is None and none.p_value is None
