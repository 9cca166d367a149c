"""Paired regression statistics against enumeration by hand, scipy and statsmodels, at every sample size."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats as scipy_stats

from evalkit.errors import InputError
from evalkit.statistics.paired import (
    PERMUTATION_BELOW,
    RESAMPLES,
    PairedSample,
    compare,
    min_p_value,
    minimum_detectable_effect,
    one_sided_p,
    paired_scores,
    pairs_for_a_verdict,
    record_index,
    required_pairs,
)


def _sample(base, cand) -> PairedSample:
    base, cand = np.asarray(base, dtype=float), np.asarray(cand, dtype=float)
    return PairedSample([str(i) for i in range(base.size)], base, cand)


def _sign_flip_by_hand(x: np.ndarray) -> float:
    """P(mean of sign-flipped x <= observed mean) over all 2**n sign vectors."""
    observed = x.mean()
    null = [np.mean(np.array(signs) * x) for signs in itertools.product((1, -1), repeat=x.size)]
    return float(np.mean([m <= observed + 1e-12 for m in null]))


def test_two_pairs_cannot_be_significant_the_issue_case():
    """Baseline [0.5, 0.5], candidate [0.4, 0.2], allowed drop 0.02: the bootstrap said p < 0.0001 and
    "minimum detectable effect 0"; no sign-flip test of two pairs goes below 1/4."""
    c = compare(_sample([0.5, 0.5], [0.4, 0.2]), max_drop=0.02)
    assert c.n == 2 and c.p_value == 0.25 and c.method == "sign-flip (exact)" and c.min_p == 0.25
    assert c.mde is None  # nothing is detectable with two pairs at alpha 0.05
    t = scipy_stats.ttest_1samp([-0.08, -0.28], 0.0, alternative="less")
    assert t.pvalue == pytest.approx(0.1614, abs=1e-4)  # what a t-test would say: also far from significant
    low, high = c.ci95
    assert low < -1.0 and high > 1.0  # Student-t with one degree of freedom: honest about two pairs


@pytest.mark.parametrize("n", [2, 3, 6, 9, 13])
def test_small_samples_are_enumerated_exactly(n):
    rng = np.random.default_rng(n)
    d = rng.normal(-0.04, 0.05, n)
    p, method = one_sided_p(d + 0.01)
    assert method == "sign-flip (exact)" and p == pytest.approx(_sign_flip_by_hand(d + 0.01), abs=1e-12)
    assert min_p_value(n) == 2.0 ** -n


def test_monte_carlo_sign_flip_agrees_with_enumeration_and_is_seeded():
    d = np.random.default_rng(1).normal(-0.02, 0.05, 15)  # 2**15 > 10,000 sign vectors: Monte Carlo
    p, method = one_sided_p(d, seed=3)
    assert method == f"sign-flip (Monte Carlo, {RESAMPLES} sign vectors)"
    assert p == pytest.approx(_sign_flip_by_hand(d), abs=3 * np.sqrt(0.25 / RESAMPLES))
    assert one_sided_p(d, seed=3) == (p, method) and one_sided_p(d, seed=4)[0] != p
    assert min_p_value(15) == 1 / (RESAMPLES + 1)  # (k + 1) / (R + 1): never below the resolution


def test_from_the_documented_size_on_the_test_is_scipys_paired_t_test():
    rng = np.random.default_rng(2)
    base = rng.beta(4, 3, PERMUTATION_BELOW)
    cand = np.clip(base + rng.normal(-0.03, 0.08, PERMUTATION_BELOW), 0, 1)
    c = compare(_sample(base, cand), max_drop=0.01)
    expected = scipy_stats.ttest_rel(cand + 0.01, base, alternative="less").pvalue
    assert c.method == "paired t-test" and c.p_value == pytest.approx(expected, rel=1e-9)
    ci = scipy_stats.ttest_rel(cand, base).confidence_interval(0.95)
    assert c.ci95 == pytest.approx((ci.low, ci.high), rel=1e-9)
    below = compare(_sample(base[:-1], cand[:-1]), max_drop=0.01)
    assert below.method.startswith("sign-flip") and below.p_value == pytest.approx(c.p_value, abs=0.02)


@pytest.mark.parametrize(("value", "max_drop", "n", "p"), [
    (-0.05, 0.01, 40, 1 / (RESAMPLES + 1)),  # every sample worse by more than allowed: the smallest p there is
    (-0.05, 0.01, 200, 0.0),                # t-test without spread: certain
    (-0.05, 0.01, 3, 0.125),                # ... but three pairs are three pairs
    (-0.05, 0.10, 40, 1.0),                 # within the allowance
    (-0.01, 0.01, 40, 1.0),                 # exactly at the allowance: H0 holds
    (0.02, 0.0, 40, 1.0),                   # an improvement
])
def test_all_differences_equal(value, max_drop, n, p):
    c = compare(_sample(np.full(n, 0.5), np.full(n, 0.5 + value)), max_drop=max_drop)
    assert c.p_value == pytest.approx(p, abs=1e-12) and c.ci95 == pytest.approx((value, value))
    assert c.delta == pytest.approx(value) and c.sd == pytest.approx(0.0, abs=1e-12)


def test_identical_scores_give_zero_difference_and_p_1():
    scores = np.random.default_rng(0).random(25)
    c = compare(_sample(scores, scores), max_drop=0.0)
    assert (c.delta, c.ci95, c.p_value, c.mde) == (0.0, (0.0, 0.0), 1.0, 0.0)


def test_p_value_grows_with_the_allowed_drop_and_is_deterministic():
    d = np.random.default_rng(9).normal(-0.03, 0.1, size=50)
    ps = [compare(_sample(np.zeros(50), d), max_drop=m).p_value for m in (0.0, 0.01, 0.02, 0.04, 0.08)]
    assert ps == sorted(ps) and ps[0] < 0.05 < ps[-1]
    assert compare(_sample(np.zeros(50), d), max_drop=0.01) == compare(_sample(np.zeros(50), d), max_drop=0.01)


def test_minimum_detectable_effect_is_statsmodels_t_test_power():
    from statsmodels.stats.power import TTestPower

    effect = TTestPower().solve_power(nobs=64, alpha=0.05, power=0.8, alternative="larger")
    assert minimum_detectable_effect(0.1, 64) == pytest.approx(effect * 0.1, rel=1e-9)
    # at 64 pairs the normal approximation (z_0.95 + z_0.8) / sqrt(n) is close but smaller
    z = scipy_stats.norm.ppf(0.95) + scipy_stats.norm.ppf(0.8)
    assert z * 0.1 / 8 < minimum_detectable_effect(0.1, 64) < 1.05 * z * 0.1 / 8
    n = required_pairs(0.1, 0.02)
    assert minimum_detectable_effect(0.1, n) <= 0.02 < minimum_detectable_effect(0.1, n - 1)
    assert required_pairs(0.1, 0.0) is None
    assert minimum_detectable_effect(0.1, 4) is None  # a sign-flip test of 4 pairs cannot reach 0.05
    assert minimum_detectable_effect(0.1, 5) > minimum_detectable_effect(0.1, 30)


def test_the_fewest_pairs_for_a_verdict_account_for_holm():
    assert pairs_for_a_verdict(0.05) == 5  # 1/32 < 0.05 <= 1/16
    assert pairs_for_a_verdict(0.05, n_checks=3) == 6  # 3/64 < 0.05 <= 3/32
    assert pairs_for_a_verdict(0.01) == 7


RECORDS_BASE = [
    {"id": 1, "scores": {"m": 0.5}, "error": None},
    {"id": "b", "scores": {"m": 0.4}, "error": None},
    {"id": "c", "scores": {"m": 0.3}, "error": None},
    {"id": "d", "scores": {"m": 0.9}, "error": None},
    {"id": "e", "scores": {}, "error": "timeout"},
    {"id": "only-base", "scores": {"m": 0.1}, "error": None},
]
RECORDS_CAND = [
    {"id": "d", "scores": {"m": 0.7}, "error": None},
    {"id": "1", "scores": {"m": 0.6}, "error": None},                         # ids are matched as text
    {"id": "b", "scores": {}, "error": "timeout"},                            # generation failed
    {"id": "c", "scores": {"m": 0.2}, "score_errors": {"m": "boom"}, "error": None},  # this metric failed
    {"id": "e", "scores": {"m": 0.8}, "error": None},                         # the baseline failed here
    {"id": "only-cand", "scores": {"m": 1.0}, "error": None},
]


@pytest.mark.parametrize(("policy", "ids", "base", "cand", "dropped"), [
    ("fail", ["d", "1", "b", "c", "e"], [0.9, 0.5, 0.4, 0.3, -1.0], [0.7, 0.6, -1.0, -1.0, 0.8], 0),
    ("zero", ["d", "1", "b", "c", "e"], [0.9, 0.5, 0.4, 0.3, 0.0], [0.7, 0.6, 0.0, 0.0, 0.8], 0),
    ("skip", ["d", "1"], [0.9, 0.5], [0.7, 0.6], 3),
])
def test_errors_enter_the_pairs_by_the_policy(policy, ids, base, cand, dropped):
    pairs = paired_scores(record_index(RECORDS_BASE, source="b"), record_index(RECORDS_CAND, source="c"), "m",
                          on_error=policy, baseline_worst=-1.0, candidate_worst=-1.0)
    assert pairs.ids == ids and pairs.baseline.tolist() == base and pairs.candidate.tolist() == cand
    assert (pairs.candidate_errors, pairs.baseline_errors, pairs.errored, pairs.dropped) == (2, 1, 3, dropped)


def test_duplicate_ids_are_an_input_error():
    with pytest.raises(InputError, match=r"runs/x/records.jsonl:2: duplicate id 'a'"):
        record_index([{"id": "a"}, {"id": "a"}], source="runs/x/records.jsonl")


def test_too_few_pairs_cannot_be_tested():
    one = compare(_sample([0.5], [0.1]), max_drop=0.0)
    assert one.n == 1 and one.p_value is None and one.ci95 is None and one.delta == pytest.approx(-0.4)
    none = compare(_sample([], []))
    assert none.n == 0 and none.delta is None and none.p_value is None
