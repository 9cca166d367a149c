"""How often does the gate FAIL a candidate? A seeded simulation of the regression check, end to end.

Each trial builds a baseline and a candidate run in memory (records with one score each), draws the
per-record differences from a known distribution, and runs :func:`evalkit.gate.evaluate_gate` with one
``--max-regression m=DELTA`` check, exactly as ``evalkit gate`` does. Under H0 the true mean drop is
exactly DELTA (the hardest case for the test: any smaller drop is rejected less often), so the FAIL rate
estimates the test's size and must stay at or below alpha, up to Monte-Carlo error. Under a large drop
it estimates the power.

    python benchmarks/gate_calibration.py            # the README's table (about 10 minutes on 2 cores)
    python benchmarks/gate_calibration.py --reps 200  # a quick look

The test suite runs :func:`fail_rate` with fewer trials (``tests/test_gate_calibration.py``).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evalkit.gate.checks import FAIL, evaluate_gate, parse_gate_spec  # noqa: E402
from evalkit.results import RunResult  # noqa: E402

DELTA = 0.02
ALPHA = 0.05
SIZES = (2, 5, 10, 30, 100, 1000)

# Per-record differences d = candidate - baseline with mean exactly -shift; ``rng`` is a numpy Generator.
Draw = Callable[[np.random.Generator, int, float], np.ndarray]
DISTRIBUTIONS: dict[str, tuple[str, Draw]] = {
    "normal": ("normal, sd 0.1", lambda rng, n, shift: rng.normal(-shift, 0.1, n)),
    "uniform": ("uniform, width 0.4", lambda rng, n, shift: rng.uniform(-0.2, 0.2, n) - shift),
    "heavy": ("Student t with 3 df, scale 0.05", lambda rng, n, shift: 0.05 * rng.standard_t(3, n) - shift),
    "ties": ("70% of records exactly at the mean, 30% normal sd 0.15",
             lambda rng, n, shift: np.where(rng.random(n) < 0.7, 0.0, rng.normal(0, 0.15, n)) - shift),
    "right_skew": ("right-skewed: exponential, sd 0.1 (most records a little worse, a few much better)",
                   lambda rng, n, shift: 0.1 * (rng.exponential(1.0, n) - 1.0) - shift),
    "left_skew": ("left-skewed: mirrored exponential, sd 0.1 (a few records much worse)",
                  lambda rng, n, shift: -0.1 * (rng.exponential(1.0, n) - 1.0) - shift),
}
SYMMETRIC = ("normal", "uniform", "heavy")


def _run(scores: np.ndarray, name: str) -> RunResult:
    records = [{"id": str(i), "scores": {"m": float(v)}, "error": None} for i, v in enumerate(scores)]
    return RunResult(Path(name), {"metrics": {"m": {"range": [-10.0, 10.0]}}}, records)


def fail_rate(distribution: str, n: int, *, reps: int, true_drop: float = DELTA, delta: float = DELTA,
              alpha: float = ALPHA, seed: int = 0) -> float:
    """Share of ``reps`` seeded trials in which the gate's regression check FAILs."""
    draw = DISTRIBUTIONS[distribution][1]
    rng = np.random.default_rng([seed, n, int(true_drop * 1e6)])
    spec = parse_gate_spec(max_regressions=[f"m={delta!r}"], alpha=alpha, has_baseline=True)
    fails = 0
    for _ in range(reps):
        baseline = rng.uniform(0.3, 0.7, n)
        candidate = baseline + draw(rng, n, true_drop)
        result = evaluate_gate(_run(candidate, "candidate"), spec, _run(baseline, "baseline"))
        fails += result.checks[0].verdict == FAIL
    return fails / reps


def mc_error(rate: float, reps: int) -> float:
    """Three binomial standard errors of a rate estimated from ``reps`` trials (at least at ``rate``)."""
    return 3.0 * math.sqrt(max(rate, 1e-12) * (1.0 - rate) / reps)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2000, help="trials per cell (default 2000)")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--distributions", nargs="+", default=list(DISTRIBUTIONS), choices=list(DISTRIBUTIONS))
    parser.add_argument("--power-drop", type=float, default=DELTA + 0.05,
                        help="true drop of the power rows (default DELTA + 0.05)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    bound = ALPHA + mc_error(ALPHA, args.reps)
    print(f"FAIL rate of one --max-regression m={DELTA} check at alpha {ALPHA}, {args.reps} trials per cell "
          f"(alpha + 3 Monte-Carlo s.e. = {bound:.3f})\n")
    header = "| differences | true drop | " + " | ".join(f"n={n}" for n in args.sizes) + " |"
    print(header)
    print("|" + "---|" * (2 + len(args.sizes)))
    worst_symmetric = 0.0
    for name in args.distributions:
        for drop, label in ((DELTA, f"{DELTA} (H0)"), (args.power_drop, f"{args.power_drop:g}")):
            if drop != DELTA and name not in ("normal",):
                continue
            rates = [fail_rate(name, n, reps=args.reps, true_drop=drop) for n in args.sizes]
            if drop == DELTA and name in SYMMETRIC:
                worst_symmetric = max(worst_symmetric, *rates)
            cells = " | ".join(f"{r:.3f}" for r in rates)
            print(f"| {DISTRIBUTIONS[name][0]} | {label} | {cells} |", flush=True)
    print(f"\nlargest FAIL rate under H0 with symmetric differences: {worst_symmetric:.3f} "
          f"({'within' if worst_symmetric <= bound else 'ABOVE'} alpha + Monte-Carlo error {bound:.3f}); "
          f"{time.perf_counter() - started:.0f} s")
    return 0 if worst_symmetric <= bound else 1


if __name__ == "__main__":
    sys.exit(main())
