"""Paired statistics for regression gates: candidate vs baseline on the samples they share.

Every score is compared with the baseline's score on the *same* sample (matched by id), so the
noise that comes from which samples happen to be in the evaluation set cancels out; what is left
is the spread of the per-sample differences ``d_i = candidate_i - baseline_i``.

Statistics (all for metrics where higher is better):

* ``delta``: the mean paired difference; negative means the candidate is worse.
* ``ci95``: percentile bootstrap 95% interval of the mean difference, from
  :func:`evalkit.stats.bootstrap_means` on the differences (the one bootstrap implementation;
  resampling the differences is exactly resampling the pairs).
* ``p_value`` for H0 "drop <= DELTA" (mean difference >= -DELTA) against H1 "drop > DELTA",
  by **percentile inversion**: ``p = share of bootstrap means >= -DELTA``. This is the smallest
  alpha at which the one-sided upper (1 - alpha) percentile bound of the mean difference lies
  below -DELTA, so p-value, interval and verdict come from the same resamples and cannot
  disagree (``p < alpha`` exactly when ``quantile(means, 1 - alpha) < -DELTA``). It needs no
  second resampling under a null and no symmetry assumption of the shift method (which centres
  the differences at -DELTA and mirrors the same distribution; the two agree when the bootstrap
  distribution is symmetric, and for large samples both agree with a one-sample t-test on the
  shifted differences ``d + DELTA``, which the tests check against scipy).
* ``mde``: the minimum detectable effect of that one-sided test at 80% power, normal
  approximation ``(z_{1-alpha} + z_{0.8}) * sd(d) / sqrt(n)``: a true drop must exceed the
  allowed DELTA by about this much to be caught four times out of five. When it is larger than
  DELTA the evaluation set is too small (or too noisy) for the tolerance asked for.

Degenerate cases are exact, not resampled: when all differences are equal the interval collapses
to that value and p is 0 or 1; with fewer than two pairs nothing can be tested (``p_value`` None).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from evalkit.errors import InputError
from evalkit.stats import bootstrap_means

GATE_RESAMPLES = 10_000
DEFAULT_POWER = 0.8
# Differences are computed in floating point: 0.49 - 0.5 is -0.010000000000000009. A drop counts as
# larger than the allowance only beyond this tolerance (far below any meaningful score difference).
TOLERANCE = 1e-9


@dataclass(frozen=True)
class PairedSample:
    """Scores of one metric on the samples both runs scored, in candidate order."""

    ids: list[str]
    baseline: np.ndarray
    candidate: np.ndarray

    @property
    def differences(self) -> np.ndarray:
        return self.candidate - self.baseline


@dataclass(frozen=True)
class PairedComparison:
    n: int
    baseline_mean: float | None
    candidate_mean: float | None
    delta: float | None                 # mean of candidate - baseline
    ci95: tuple[float, float] | None    # percentile bootstrap interval of delta
    p_value: float | None               # H0: drop <= max_drop; None with fewer than 2 pairs
    sd: float | None                    # sample sd of the differences (ddof=1)
    mde: float | None                   # minimum detectable effect (None: cannot be estimated)
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

    @property
    def significant(self) -> bool:
        return self.p_value is not None and self.p_value < self.alpha


def record_index(records: Iterable[Mapping[str, Any]], *, source: str) -> dict[str, Mapping[str, Any]]:
    """Records by id (as text). A duplicate id makes pairing ambiguous: an input error."""
    index: dict[str, Mapping[str, Any]] = {}
    for line, record in enumerate(records, start=1):
        key = str(record.get("id"))
        if key in index:
            raise InputError(f"duplicate id '{key}'", path=source, line=line)
        index[key] = record
    return index


def _score(record: Mapping[str, Any], metric: str) -> float | None:
    if record.get("error") is not None:
        return None
    value = (record.get("scores") or {}).get(metric)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def paired_scores(baseline: Mapping[str, Mapping[str, Any]], candidate: Mapping[str, Mapping[str, Any]],
                  metric: str) -> PairedSample:
    """Pairs of ``metric`` scores on the ids both indexes hold; records with an error or without
    the score on either side are left out."""
    ids, base, cand = [], [], []
    for key, record in candidate.items():
        other = baseline.get(key)
        if other is None:
            continue
        c, b = _score(record, metric), _score(other, metric)
        if c is None or b is None:
            continue
        ids.append(key)
        base.append(b)
        cand.append(c)
    return PairedSample(ids, np.asarray(base, dtype=np.float64), np.asarray(cand, dtype=np.float64))


def z_quantile(q: float) -> float:
    return NormalDist().inv_cdf(q)


def minimum_detectable_effect(sd: float, n: int, *, alpha: float = 0.05, power: float = DEFAULT_POWER) -> float:
    """``(z_{1-alpha} + z_{power}) * sd / sqrt(n)``: the smallest true shift beyond the tolerance that a
    one-sided level-alpha test on ``n`` paired differences of spread ``sd`` detects with ``power``."""
    if n < 1:
        return math.inf
    return (z_quantile(1.0 - alpha) + z_quantile(power)) * sd / math.sqrt(n)


def required_pairs(sd: float, effect: float, *, alpha: float = 0.05, power: float = DEFAULT_POWER) -> int | None:
    """Pairs needed for ``minimum_detectable_effect`` to reach ``effect`` (None when effect <= 0)."""
    if effect <= 0:
        return None
    return max(2, math.ceil(((z_quantile(1.0 - alpha) + z_quantile(power)) * sd / effect) ** 2))


def p_value_drop_exceeds(means: np.ndarray, max_drop: float) -> float:
    """Percentile-inversion p-value of H0 "mean difference >= -max_drop" from bootstrap means."""
    return float(np.count_nonzero(means >= -max_drop - TOLERANCE)) / means.size


def paired_bootstrap(differences: Sequence[float] | np.ndarray, *, max_drop: float = 0.0, seed: int = 0,
                     n_resamples: int = GATE_RESAMPLES, confidence: float = 0.95
                     ) -> tuple[tuple[float, float], float]:
    """Percentile bootstrap interval of the mean difference and the p-value of H0 "drop <= max_drop".

    Uses the same resamples as :func:`evalkit.stats.bootstrap_ci` with the same seed (the interval
    is identical to it); constant differences are handled exactly.
    """
    d = np.asarray(differences, dtype=np.float64)
    if d.size == 0:
        raise ValueError("paired bootstrap of an empty sample")
    if max_drop < 0:
        raise ValueError("max_drop must be >= 0")
    if np.all(d == d[0]):
        value = float(d[0])
        return (value, value), (1.0 if value >= -max_drop - TOLERANCE else 0.0)
    means = bootstrap_means(d, seed=seed, n_resamples=n_resamples)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return (float(low), float(high)), p_value_drop_exceeds(means, max_drop)


def compare(sample: PairedSample, *, max_drop: float = 0.0, alpha: float = 0.05, seed: int = 0,
            n_resamples: int = GATE_RESAMPLES, power: float = DEFAULT_POWER) -> PairedComparison:
    """Everything a regression check needs about one metric's pairs."""
    n = int(sample.candidate.size)
    if n == 0:
        return PairedComparison(0, None, None, None, None, None, None, None, max_drop, alpha, n_resamples)
    d = sample.differences
    delta = float(d.mean())
    base_mean, cand_mean = float(sample.baseline.mean()), float(sample.candidate.mean())
    if n == 1:  # a single pair has no spread to judge noise by: nothing to test
        return PairedComparison(1, base_mean, cand_mean, delta, (delta, delta), None, None, None, max_drop,
                                alpha, n_resamples)
    ci, p = paired_bootstrap(d, max_drop=max_drop, seed=seed, n_resamples=n_resamples)
    sd = float(d.std(ddof=1))
    mde = minimum_detectable_effect(sd, n, alpha=alpha, power=power)
    return PairedComparison(n, base_mean, cand_mean, delta, ci, p, sd, mde, max_drop, alpha, n_resamples)
