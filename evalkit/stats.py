"""Aggregate statistics. One seeded bootstrap implementation serves every confidence interval."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

DEFAULT_RESAMPLES = 2000


@dataclass(frozen=True)
class MetricSummary:
    mean: float | None
    std: float | None
    n: int
    ci95: tuple[float, float] | None

    def to_dict(self) -> dict:
        out = asdict(self)
        out["ci95"] = list(self.ci95) if self.ci95 is not None else None
        return out


def bootstrap_means(values: Sequence[float] | np.ndarray, *, seed: int = 0,
                    n_resamples: int = DEFAULT_RESAMPLES) -> np.ndarray:
    """Means of ``n_resamples`` resamples with replacement (seeded, vectorized in chunks)."""
    data = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    out = np.empty(n_resamples)
    chunk = max(1, 2_000_000 // max(1, data.size))
    for start in range(0, n_resamples, chunk):
        stop = min(n_resamples, start + chunk)
        out[start:stop] = data[rng.integers(0, data.size, size=(stop - start, data.size))].mean(axis=1)
    return out


def bootstrap_ci(values: Sequence[float] | np.ndarray, *, seed: int = 0, confidence: float = 0.95,
                 n_resamples: int = DEFAULT_RESAMPLES) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        raise ValueError("bootstrap of an empty sample")
    if data.size == 1 or np.all(data == data[0]):
        return float(data[0]), float(data[0])
    means = bootstrap_means(data, seed=seed, n_resamples=n_resamples)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def summarize(values: Sequence[float | None], *, seed: int = 0) -> MetricSummary:
    """Mean, sample standard deviation, count and bootstrap 95% CI of the non-missing values."""
    data = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if data.size == 0:
        return MetricSummary(None, None, 0, None)
    std = float(data.std(ddof=1)) if data.size > 1 else 0.0
    return MetricSummary(float(data.mean()), std, int(data.size), bootstrap_ci(data, seed=seed))
