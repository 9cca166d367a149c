"""Paired statistics for regression gates: candidate vs baseline on the samples they share.

Every score is compared with the baseline's score on the *same* sample (matched by id), so the noise
that comes from which samples happen to be in the evaluation set cancels out; what is left is the
spread of the per-sample differences ``d_i = candidate_i - baseline_i`` (higher scores are better; a metric
where lower is better, such as a refusal rate, is compared on negated scores, so a drop is always a change
for the worse).

The question a regression check asks is one-sided: H0 "the mean drop is at most DELTA"
(``mean(d) >= -DELTA``) against H1 "it drops by more" (``mean(d) < -DELTA``). The test runs on the
shifted differences ``x_i = d_i + DELTA`` (H0: mean(x) >= 0):

* fewer than :data:`PERMUTATION_BELOW` pairs: the **sign-flip permutation test** of the mean
  (``scipy.stats.permutation_test``, one sample, ``permutation_type="samples"``): exact, by enumerating
  all ``2**n`` sign vectors, up to 13 pairs; above that a seeded Monte-Carlo test on
  :data:`RESAMPLES` sign vectors, whose p-value counts the observed statistic (``(k + 1) / (R + 1)``) and
  so never falls below its own resolution. It is exact when the differences are symmetric about their
  mean under H0 and needs no normality. Its p-value cannot go below ``2**-n``: with fewer than five
  pairs no drop is significant at 0.05, and the gate says so instead of guessing.
* from :data:`PERMUTATION_BELOW` pairs on: the **paired t-test** (``scipy.stats.ttest_1samp`` on the
  shifted differences); at this size the two agree to Monte-Carlo error (see the calibration table in
  the README).

``ci95`` is the Student-t interval of the mean difference (:func:`evalkit.statistics.summary.mean_ci`); ``mde``, the
minimum detectable effect, is how far beyond DELTA a true drop must go to be caught with 80% power,
from the one-sample t-test's power (statsmodels ``TTestPower``); ``None`` when the sign-flip test
cannot reach ``alpha`` at all with this many pairs.

Errors are data: :func:`paired_scores` applies the error policy (``fail``, ``zero`` or ``skip``, see
:data:`ON_ERROR_POLICIES`) to every shared record that errored on either side, and says how many pairs
it filled in or dropped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from evalkit.errors import InputError
from evalkit.statistics.summary import mean_ci

PERMUTATION_BELOW = 100  # pairs: the sign-flip test below, the paired t-test from here on
RESAMPLES = 10_000  # sign vectors of the Monte-Carlo sign-flip test (exact enumeration when 2**n <= this)
DEFAULT_POWER = 0.8
# Differences are computed in floating point: 0.49 - 0.5 is -0.010000000000000009. A drop counts as
# larger than the allowance only beyond this tolerance (far below any meaningful score difference);
# thresholds use the same tolerance.
TOLERANCE = 1e-9

# What an errored record (failed generation, or a failed score for this metric) counts as in a comparison:
#   fail: a failed record: it takes the metric's worst possible value (the low end of its range)
#   zero: it takes the score 0
#   skip: the pair is left out (and counted), so errors cannot move the comparison either way
ON_ERROR_POLICIES = ("fail", "zero", "skip")
DEFAULT_ON_ERROR = "fail"
ON_ERROR_MEANING = {"fail": "counted as failed (the metric's worst value)", "zero": "counted as 0",
                    "skip": "left out"}


@dataclass(frozen=True)
class PairedSample:
    """Scores of one metric on the records both runs hold, in candidate order, after the error policy."""

    ids: list[str]
    baseline: np.ndarray
    candidate: np.ndarray
    candidate_errors: int = 0  # pairs where the candidate errored (filled in by the policy, or dropped)
    baseline_errors: int = 0  # pairs where the baseline errored
    errored: int = 0  # pairs where either side errored
    dropped: int = 0  # pairs left out by the "skip" policy (all of ``errored`` under skip, else 0)
    on_error: str = DEFAULT_ON_ERROR

    @property
    def differences(self) -> np.ndarray:
        return self.candidate - self.baseline


@dataclass(frozen=True)
class PairedComparison:
    n: int
    baseline_mean: float | None
    candidate_mean: float | None
    delta: float | None                 # mean of candidate - baseline
    ci95: tuple[float, float] | None    # Student-t interval of delta (None below two pairs)
    p_value: float | None               # H0: drop <= max_drop; None below two pairs
    method: str | None                  # which test gave p_value
    sd: float | None                    # sample sd of the differences (ddof=1)
    mde: float | None                   # minimum detectable effect beyond max_drop (None: not reachable)
    min_p: float | None                 # the smallest p-value this test can give with n pairs
    max_drop: float
    alpha: float
    n_resamples: int

    @property
    def drop(self) -> float | None:
        return None if self.delta is None else -self.delta

    @property
    def exceeds(self) -> bool:
        """The observed mean drop is larger than the allowance (beyond float rounding)."""
        return self.delta is not None and -self.delta > self.max_drop + TOLERANCE


def record_index(records: Iterable[Mapping[str, Any]], *, source: str) -> dict[str, Mapping[str, Any]]:
    """Records by id (as text). A duplicate id makes pairing ambiguous: an input error."""
    index: dict[str, Mapping[str, Any]] = {}
    for line, record in enumerate(records, start=1):
        key = str(record.get("id"))
        if key in index:
            raise InputError(f"duplicate id '{key}'", path=source, line=line)
        index[key] = record
    return index


def record_score(record: Mapping[str, Any], metric: str) -> float | None:
    """The record's ``metric`` score, or None when it has none: its generation failed, this metric's
    scoring failed on it (``score_errors``), or the value is missing or not a finite number."""
    if record.get("error") is not None:
        return None
    if metric in (record.get("score_errors") or {}):
        return None
    value = (record.get("scores") or {}).get(metric)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def error_fill(on_error: str, worst: float) -> float | None:
    """The value an errored record takes under ``on_error`` (None: the record is left out)."""
    if on_error not in ON_ERROR_POLICIES:
        raise ValueError(f"on_error must be one of {', '.join(ON_ERROR_POLICIES)}, got {on_error!r}")
    return {"fail": worst, "zero": 0.0, "skip": None}[on_error]


def policy_values(records: Iterable[Mapping[str, Any]], metric: str, *, on_error: str = DEFAULT_ON_ERROR,
                  worst: float = 0.0) -> tuple[list[float], int]:
    """``metric``'s values over ``records`` under the error policy, and how many records errored."""
    fill = error_fill(on_error, worst)
    values, errors = [], 0
    for record in records:
        score = record_score(record, metric)
        if score is None:
            errors += 1
            if fill is None:
                continue
            score = fill
        values.append(score)
    return values, errors


def paired_scores(baseline: Mapping[str, Mapping[str, Any]], candidate: Mapping[str, Mapping[str, Any]],
                  metric: str, *, on_error: str = DEFAULT_ON_ERROR, baseline_worst: float = 0.0,
                  candidate_worst: float = 0.0, higher_is_better: bool = True) -> PairedSample:
    """Pairs of ``metric`` scores on the ids both indexes hold, with errors handled by ``on_error``.

    ``*_worst`` is the worst value of the metric's range in each run (what ``fail`` fills in: the low end,
    or the high end where lower is better); a pair where both sides errored is a tie under ``fail`` and
    ``zero``. Where lower is better the pairs hold negated scores, so that higher is better for the tests.
    """
    ids, base, cand = [], [], []
    cand_errors = base_errors = errored = dropped = 0
    fill_c, fill_b = error_fill(on_error, candidate_worst), error_fill(on_error, baseline_worst)
    for key, record in candidate.items():
        other = baseline.get(key)
        if other is None:
            continue
        c, b = record_score(record, metric), record_score(other, metric)
        cand_errors += c is None
        base_errors += b is None
        if c is None or b is None:
            errored += 1
            if on_error == "skip":
                dropped += 1
                continue
            c = fill_c if c is None else c
            b = fill_b if b is None else b
        ids.append(key)
        base.append(b if higher_is_better else -b)
        cand.append(c if higher_is_better else -c)
    return PairedSample(ids, np.asarray(base, dtype=np.float64), np.asarray(cand, dtype=np.float64),
                        cand_errors, base_errors, errored, dropped, on_error)


def min_p_value(n: int, n_resamples: int = RESAMPLES) -> float:
    """The smallest p-value :func:`one_sided_p` can return for ``n`` pairs."""
    if n < 2:
        return 1.0
    if n >= PERMUTATION_BELOW:
        return 0.0
    return 2.0 ** -n if 2 ** n <= n_resamples else 1.0 / (n_resamples + 1)


def pairs_for_a_verdict(alpha: float, n_checks: int = 1, n_resamples: int = RESAMPLES) -> int:
    """The fewest pairs with which a check can reach ``alpha`` after Holm over ``n_checks`` checks."""
    n = 2
    while n_checks * min_p_value(n, n_resamples) >= alpha:
        n += 1
    return n


def one_sided_p(shifted: np.ndarray, *, seed: int = 0, n_resamples: int = RESAMPLES) -> tuple[float, str]:
    """p-value of H0 "mean(shifted) >= 0" against "< 0", and the name of the test that gave it."""
    return paired_p(shifted, alternative="less", seed=seed, n_resamples=n_resamples)


def paired_p(x: np.ndarray, *, alternative: str = "two-sided", seed: int = 0,
             n_resamples: int = RESAMPLES) -> tuple[float, str]:
    """p-value of the mean of paired differences ``x`` against 0 (``alternative``: "less", "greater" or
    "two-sided"), and the name of the test: the sign-flip permutation test below :data:`PERMUTATION_BELOW`
    pairs (exact up to 13), the paired t-test from there on."""
    from scipy import stats

    x = np.asarray(x, dtype=np.float64)
    x = np.where(np.abs(x) <= TOLERANCE, 0.0, x)  # a difference at the allowance, up to rounding, is at it
    n = x.size
    if n < 2:
        raise ValueError("a paired test needs at least two pairs")
    if n >= PERMUTATION_BELOW:
        if np.all(x == x[0]):  # no spread: the t statistic is undefined, the answer is not
            if alternative == "two-sided":
                return (1.0 if x[0] == 0 else 0.0), "paired t-test"
            worse = x[0] < 0 if alternative == "less" else x[0] > 0
            return (0.0 if worse else 1.0), "paired t-test"
        return float(stats.ttest_1samp(x, 0.0, alternative=alternative).pvalue), "paired t-test"
    exact = 2 ** n <= n_resamples
    result = stats.permutation_test(
        (x,), lambda values, axis: np.mean(values, axis=axis), permutation_type="samples",
        alternative=alternative, n_resamples=n_resamples, vectorized=True, rng=np.random.default_rng(seed))
    method = "sign-flip (exact)" if exact else f"sign-flip (Monte Carlo, {n_resamples} sign vectors)"
    return float(min(1.0, result.pvalue)), method


def minimum_detectable_effect(sd: float, n: int, *, alpha: float = 0.05, power: float = DEFAULT_POWER,
                              n_resamples: int = RESAMPLES) -> float | None:
    """How far beyond the allowance a true mean drop must go to be detected with ``power`` by a one-sided
    level-``alpha`` test on ``n`` pairs of spread ``sd`` (one-sample t-test power, statsmodels). None when
    no drop can be detected: the sign-flip test's smallest p-value is not below ``alpha``."""
    if n < 2 or min_p_value(n, n_resamples) >= alpha:
        return None
    if sd == 0:
        return 0.0
    from statsmodels.stats.power import TTestPower

    try:
        effect = TTestPower().solve_power(effect_size=None, nobs=n, alpha=alpha, power=power,
                                          alternative="larger")
    except Exception:  # the solver can fail to bracket at tiny n: report "not reachable"
        return None
    effect = float(np.asarray(effect).reshape(-1)[0])
    return effect * sd if math.isfinite(effect) else None


def required_pairs(sd: float, effect: float, *, alpha: float = 0.05, power: float = DEFAULT_POWER,
                   n_resamples: int = RESAMPLES) -> int | None:
    """Pairs needed for :func:`minimum_detectable_effect` to reach ``effect`` (None when effect <= 0)."""
    if effect <= 0:
        return None
    floor = pairs_for_a_verdict(alpha, 1, n_resamples)
    if sd == 0:
        return floor
    from statsmodels.stats.power import TTestPower

    try:
        n = TTestPower().solve_power(effect_size=effect / sd, nobs=None, alpha=alpha, power=power,
                                     alternative="larger")
    except Exception:
        return None
    n = float(np.asarray(n).reshape(-1)[0])
    return max(floor, math.ceil(n)) if math.isfinite(n) else None


def compare(sample: PairedSample, *, max_drop: float = 0.0, alpha: float = 0.05, seed: int = 0,
            n_resamples: int = RESAMPLES, power: float = DEFAULT_POWER) -> PairedComparison:
    """Everything a regression check needs about one metric's pairs."""
    if max_drop < 0:
        raise ValueError("max_drop must be >= 0")
    n = int(sample.candidate.size)
    if n == 0:
        return PairedComparison(0, None, None, None, None, None, None, None, None, None, max_drop, alpha,
                                n_resamples)
    d = sample.differences
    delta = float(d.mean())
    base_mean, cand_mean = float(sample.baseline.mean()), float(sample.candidate.mean())
    if n == 1:  # a single pair has no spread to judge noise by: nothing to test
        return PairedComparison(1, base_mean, cand_mean, delta, None, None, None, None, None, 1.0, max_drop,
                                alpha, n_resamples)
    p, method = one_sided_p(d + max_drop, seed=seed, n_resamples=n_resamples)
    sd = float(d.std(ddof=1))
    mde = minimum_detectable_effect(sd, n, alpha=alpha, power=power, n_resamples=n_resamples)
    return PairedComparison(n, base_mean, cand_mean, delta, mean_ci(d), p, method, sd, mde,
                            min_p_value(n, n_resamples), max_drop, alpha, n_resamples)
