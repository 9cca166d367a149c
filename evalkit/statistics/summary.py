"""Aggregate statistics that stay valid at every sample size. One function per idea:

* :func:`mean_ci` -- the confidence interval of a mean: Student's t (``scipy.stats.ttest_1samp``), exact
  for normal data and the standard large-sample interval otherwise. One value has no interval (``None``),
  never a zero-width one.
* :func:`proportion_ci` -- the interval of a proportion: Wilson's score interval (statsmodels), which
  is never zero-width at 0/n or n/n, unlike a bootstrap or the normal (Wald) interval.
* :func:`holm` -- Holm's step-down adjustment of several p-values (statsmodels ``multipletests``).
* :func:`mcnemar_exact` -- the exact McNemar test of paired yes/no outcomes (statsmodels).
* :func:`summarize` -- mean, sample standard deviation, count, errors and :func:`mean_ci` of a metric.

scipy and statsmodels are imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

CONFIDENCE = 0.95
MEAN_CI_METHOD = "student-t"
PROPORTION_CI_METHOD = "wilson"


def _finite_values(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def mean_ci(values: Sequence[float], *, confidence: float = CONFIDENCE,
            bounds: tuple[float, float] | None = None) -> tuple[float, float] | None:
    """Student-t confidence interval of the mean; None for fewer than two values.

    All values equal: the interval is that value (the sample shows no spread to widen it by). ``bounds``, the
    range the values can take (a metric's range), clips the interval: the true mean lies inside the range, so
    clipping never lowers coverage, and a score in [0, 1] never gets an interval reaching past 1 at small n.
    """
    data = _finite_values(values)
    if len(data) < 2:
        return None
    mean = math.fsum(data) / len(data)
    if all(v == data[0] for v in data):
        return (data[0], data[0])
    from scipy import stats

    interval = stats.ttest_1samp(data, popmean=mean).confidence_interval(confidence)
    low, high = float(interval.low), float(interval.high)
    if bounds is not None:
        low, high = max(low, float(bounds[0])), min(high, float(bounds[1]))
    return low, high


def proportion_ci(successes: int, total: int, *, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """Wilson score interval of ``successes / total``; None when ``total`` is 0."""
    if total <= 0:
        return None
    if not 0 <= successes <= total:
        raise ValueError(f"successes must be in [0, {total}], got {successes}")
    from statsmodels.stats.proportion import proportion_confint

    low, high = proportion_confint(successes, total, alpha=1.0 - confidence, method="wilson")
    # Wilson's bounds at 0/n and n/n are exactly 0 and 1; keep float rounding from crossing them
    return (0.0 if successes == 0 else max(0.0, float(low)), 1.0 if successes == total else min(1.0, float(high)))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (same order): controls the family-wise error rate of several checks."""
    if len(p_values) < 2:  # Holm's adjustment of one p-value is that p-value (and multipletests gc-collects)
        return [float(p) for p in p_values]
    from statsmodels.stats.multitest import multipletests

    return [float(p) for p in multipletests(list(p_values), method="holm")[1]]


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value for paired yes/no outcomes: ``only_a`` pairs where only A said yes,
    ``only_b`` where only B did (pairs where both agree carry no information about the difference)."""
    if only_a + only_b == 0:
        return 1.0
    from statsmodels.stats.contingency_tables import mcnemar

    return float(mcnemar([[0, only_a], [only_b, 0]], exact=True).pvalue)


@dataclass(frozen=True)
class MetricSummary:
    """One metric over a run. ``n`` values were scored; ``errors`` records have no value (their
    generation or this metric's scoring failed) and are not in the mean."""

    mean: float | None
    std: float | None
    n: int
    ci95: tuple[float, float] | None
    errors: int = 0

    def to_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std, "n": self.n,
                "ci95": list(self.ci95) if self.ci95 is not None else None, "errors": self.errors}


def summarize(values: Sequence[float | None], *, errors: int = 0, proportion: bool = False,
              bounds: tuple[float, float] | None = None) -> MetricSummary:
    """Mean, sample standard deviation (ddof=1; 0 for one value), count and interval of the values that are
    present: :func:`mean_ci` (clipped to ``bounds``), or for 0/1 values (``proportion``) the Wilson interval of
    :func:`proportion_ci`; ``errors`` is passed through so every number says how many records it rests on."""
    data = _finite_values(values)
    if not data:
        return MetricSummary(None, None, 0, None, errors)
    mean = math.fsum(data) / len(data)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in data) / (len(data) - 1)) if len(data) > 1 else 0.0
    if proportion:
        if any(v not in (0.0, 1.0) for v in data):
            raise ValueError("a proportion's values must be 0 or 1")
        return MetricSummary(mean, std, len(data), proportion_ci(int(sum(data)), len(data)), errors)
    return MetricSummary(mean, std, len(data), mean_ci(data, bounds=bounds), errors)
