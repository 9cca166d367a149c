"""How far an automatic score agrees with people's: Spearman's rank correlation (scipy) and Cohen's weighted
kappa with quadratic weights (statsmodels), on the records both scored.

Kappa needs categories: both scores are rounded to the nearest integer and the categories are the union of
the values seen, so a 0..5 judge and a 1..5 human rating share one ordinal scale (a judge that says 0 where
people say 1 is one step off). Spearman uses the unrounded scores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Agreement:
    n: int
    spearman: float | None
    spearman_p: float | None
    weighted_kappa: float | None  # quadratic weights
    kappa_categories: list[int]

    def to_dict(self) -> dict:
        return asdict(self)


def _finite(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def agreement(machine: Sequence[float | None], human: Sequence[float | None]) -> Agreement:
    """Agreement on the pairs where both are numbers; None statistics where they are undefined (fewer than
    three pairs, or a constant series)."""
    pairs = [(float(m), float(h)) for m, h in zip(machine, human, strict=True) if m is not None and h is not None]
    n = len(pairs)
    if n < 3:
        return Agreement(n, None, None, None, [])
    import numpy as np
    from scipy import stats

    m, h = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    spearman = p_value = None
    if np.ptp(m) > 0 and np.ptp(h) > 0:
        result = stats.spearmanr(m, h)
        spearman, p_value = _finite(result.statistic), _finite(result.pvalue)
    rm, rh = np.rint(m).astype(int), np.rint(h).astype(int)
    categories = sorted(set(rm.tolist()) | set(rh.tolist()))
    kappa = None
    if len(categories) > 1:
        from statsmodels.stats.inter_rater import cohens_kappa

        index = {c: i for i, c in enumerate(categories)}
        table = np.zeros((len(categories), len(categories)))
        for a, b in zip(rm, rh, strict=True):
            table[index[a], index[b]] += 1
        # quadratic weights on the category values themselves (not their positions)
        values = np.array(categories, dtype=float)
        weights = (values[:, None] - values[None, :]) ** 2
        with np.errstate(invalid="ignore"):  # its standard errors can be undefined; kappa itself is not
            kappa = _finite(cohens_kappa(table, weights=weights).kappa)
    return Agreement(n, spearman, p_value, kappa, categories)
