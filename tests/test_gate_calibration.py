"""The gate's regression check is calibrated at every sample size: a seeded simulation, end to end.

Each trial runs :func:`evalkit.gate.evaluate_gate` on two in-memory runs whose per-record differences are
drawn with a true mean drop of exactly DELTA (H0's boundary, its hardest case), so the FAIL rate must stay
at or below alpha up to Monte-Carlo error; under a large drop, power must rise with n. The README's table
comes from ``benchmarks/gate_calibration.py`` with more trials (same code).
"""

from __future__ import annotations

import pytest

from benchmarks.gate_calibration import ALPHA, DELTA, fail_rate, mc_error

SIZES = (2, 5, 10, 30, 100)


@pytest.mark.parametrize("n", SIZES)
def test_false_fail_rate_under_h0_is_at_most_alpha(n):
    reps = 800
    rate = fail_rate("normal", n, reps=reps, seed=11)
    assert rate <= ALPHA + mc_error(ALPHA, reps), rate


def test_power_rises_with_n_under_a_large_drop():
    rates = [fail_rate("normal", n, reps=200, true_drop=DELTA + 0.05, seed=12) for n in SIZES]
    assert rates[0] == 0.0  # two pairs: never a FAIL, whatever the drop
    assert rates == sorted(rates) and rates[-1] > 0.95 and rates[1] < 0.5
