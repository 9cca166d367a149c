"""Statistics of a comparison: each system's mean per metric, every pair of systems on every metric, and the
``require`` rules -- all on the records the systems share, paired by id, errors handled as in the gate.

* Per system and metric: mean, 95% CI (Student t; Wilson for 0/1 metrics such as refusal) and n, over every
  record with errored ones counted by the error policy (``fail``: the metric's worst value).
* Per pair (a, b) and metric: the mean paired difference a - b with its Student-t 95% CI, a two-sided p-value
  valid at every n (sign-flip permutation test below 100 pairs, exact up to 13; the paired t-test from 100;
  the exact McNemar test for 0/1 metrics), Holm-adjusted across all pairs and metrics, and wins/ties/losses
  (a better / equal up to 1e-9 / b better; "better" honours the metric's direction).
* A ``require`` rule ``A > B on M`` passes only when A is significantly better than B (one-sided, Holm across
  the rules); ``A >= B on M`` fails only when A is significantly worse (non-inferiority, as the gate's
  regression checks); a margin may follow B: ``A >= B - 0.02 on M``, ``A > B + 0.05 on M``. ``<`` and ``<=``
  are the same rules read from the other side. For a metric where lower is better (refusal), "greater" means
  better: ``A > B on refusal`` requires A to refuse less.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from evalkit.errors import UsageError
from evalkit.statistics.paired import (
    RESAMPLES,
    TOLERANCE,
    paired_p,
    paired_scores,
    pairs_for_a_verdict,
    policy_values,
)
from evalkit.statistics.summary import holm, mcnemar_exact, mean_ci, proportion_ci

PASS, WARN, FAIL = "PASS", "WARN", "FAIL"
_SYSTEM = r"[A-Za-z0-9][A-Za-z0-9_.\-]*"
_RULE = re.compile(rf"^\s*(?P<a>{_SYSTEM})\s*(?P<op>>=|<=|>|<)\s*(?P<b>{_SYSTEM})\s*"
                   r"(?:(?P<sign>[+-])\s*(?P<margin>\d+(?:\.\d*)?|\.\d+))?\s+on\s+(?P<metric>\S+)\s*$")
RULE_SYNTAX = ("expected 'A > B on METRIC' or 'A >= B on METRIC', optionally with a margin after B "
               "('A >= B - 0.02 on METRIC'); > means better (for refusal: refuses less)")


@dataclass(frozen=True)
class MetricInfo:
    """What a comparison needs to know about a metric in one system's run."""

    higher_is_better: bool = True
    worst: float = 0.0
    proportion: bool = False
    bounds: tuple[float, float] | None = None

    @classmethod
    def from_summary(cls, summary: Mapping[str, Any]) -> MetricInfo:
        higher = summary.get("higher_is_better") is not False
        low, high = (summary.get("range") or [0.0, 1.0])[:2]
        return cls(higher, float(low if higher else high), summary.get("ci_method") == "wilson",
                   (float(low), float(high)))


@dataclass
class SystemRun:
    """One system's records (by id) and metric summaries, as its run directory holds them."""

    name: str
    records: dict[str, Mapping[str, Any]]
    metrics: Mapping[str, Mapping[str, Any]]

    def info(self, metric: str) -> MetricInfo:
        return MetricInfo.from_summary(self.metrics.get(metric) or {})


def system_summary(run: SystemRun, metric: str, on_error: str) -> dict[str, Any]:
    """mean, ci95, n (and errors) of ``metric`` over every record of ``run``, errors by the policy."""
    info = run.info(metric)
    values, errors = policy_values(run.records.values(), metric, on_error=on_error, worst=info.worst)
    n = len(values)
    mean = math.fsum(values) / n if n else None
    wilson = info.proportion and n and all(v in (0.0, 1.0) for v in values)
    ci = proportion_ci(int(sum(values)), n) if wilson else mean_ci(values, bounds=info.bounds)
    return {"mean": mean, "ci95": list(ci) if ci else None, "n": n, "errors": errors,
            "higher_is_better": info.higher_is_better, "ci_method": "wilson" if wilson else "student-t",
            "range": list(info.bounds) if info.bounds else None}


@dataclass
class PairResult:
    a: str
    b: str
    metric: str
    delta: float | None  # mean of a - b, in the metric's units
    ci95: tuple[float, float] | None
    p: float | None  # two-sided
    p_holm: float | None
    wins: int  # records where a is better
    ties: int
    losses: int  # records where b is better
    n: int
    a_mean: float | None
    b_mean: float | None
    test: str | None
    errors: int  # pairs where either side errored
    higher_is_better: bool = True

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ci95"] = list(self.ci95) if self.ci95 is not None else None
        return out


def _clean(value: float | None) -> float | None:
    """A float without a negative zero (``-0.0`` reads as a tiny loss)."""
    return None if value is None else float(value) + 0.0


def _clean_ci(ci: tuple[float, float] | None) -> tuple[float, float] | None:
    return None if ci is None else (ci[0] + 0.0, ci[1] + 0.0)


def _pairs(a: SystemRun, b: SystemRun, metric: str, on_error: str) -> tuple[Any, MetricInfo]:
    info = a.info(metric)
    sample = paired_scores(b.records, a.records, metric, on_error=on_error, baseline_worst=b.info(metric).worst,
                           candidate_worst=info.worst, higher_is_better=info.higher_is_better)
    return sample, info


def compare_pair(a: SystemRun, b: SystemRun, metric: str, *, on_error: str = "fail", seed: int = 0,
                 n_resamples: int = RESAMPLES) -> PairResult:
    sample, info = _pairs(a, b, metric, on_error)
    sign = 1.0 if info.higher_is_better else -1.0
    d = sample.differences  # oriented: positive when a is better
    n = int(d.size)
    wins, losses = int((d > TOLERANCE).sum()), int((d < -TOLERANCE).sum())
    raw = sign * d
    p = test = None
    if n >= 2:
        if info.proportion and np.all(np.isin(np.abs(d), (0.0, 1.0))):
            p, test = mcnemar_exact(wins, losses), "exact McNemar"
        else:
            p, test = paired_p(d, alternative="two-sided", seed=seed, n_resamples=n_resamples)
    ci = _clean_ci(mean_ci(raw.tolist())) if n >= 2 else None
    return PairResult(a.name, b.name, metric, _clean(float(raw.mean())) if n else None, ci, p, None, wins,
                      n - wins - losses, losses, n, _clean(float(sign * sample.candidate.mean())) if n else None,
                      _clean(float(sign * sample.baseline.mean())) if n else None, test, sample.errored,
                      info.higher_is_better)


def compare_all(runs: Sequence[SystemRun], metrics: Sequence[str], *, on_error: str = "fail", seed: int = 0,
                n_resamples: int = RESAMPLES) -> list[PairResult]:
    """Every pair of systems (in config order) on every metric both have; Holm across all of them."""
    results = []
    for metric in metrics:
        for i, a in enumerate(runs):
            for b in runs[i + 1:]:
                if metric in a.metrics and metric in b.metrics:
                    results.append(compare_pair(a, b, metric, on_error=on_error, seed=seed, n_resamples=n_resamples))
    tested = [r for r in results if r.p is not None]
    for r, adjusted in zip(tested, holm([r.p for r in tested]), strict=True):
        r.p_holm = adjusted
    return results


def win_rates(pairs: Sequence[PairResult]) -> dict[str, dict[str, dict[str, float]]]:
    """``{metric: {a: {b: rate}}}``: the share of shared records where a beats b, ties counted half, both ways
    round (``rate[b][a] = 1 - rate[a][b]``); what a win-rate matrix shows."""
    rates: dict[str, dict[str, dict[str, float]]] = {}
    for p in pairs:
        if not p.n:
            continue
        rate = (p.wins + 0.5 * p.ties) / p.n
        table = rates.setdefault(p.metric, {})
        table.setdefault(p.a, {})[p.b] = rate
        table.setdefault(p.b, {})[p.a] = 1.0 - rate
    return rates


def _p_text(p: float | None, name: str = "p_holm") -> str:
    if p is None:
        return f"{name} n/a"
    return f"{name} < 0.001" if p < 0.001 else f"{name} = {p:.3f}"


def verdict_line(pair: PairResult, alpha: float) -> str:
    """One plain sentence: who beats whom on what, by how much, how sure."""
    direction = "" if pair.higher_is_better else " (lower is better)"
    if pair.delta is None or pair.n < 2 or pair.p is None:
        return f"{pair.a} vs {pair.b} on {pair.metric}: too few shared records to compare (n={pair.n})"
    if pair.p_holm is not None and pair.p_holm < alpha and abs(pair.delta) > TOLERANCE:
        sign = 1.0 if pair.higher_is_better else -1.0
        gain = sign * pair.delta  # how much better a is, in the metric's units
        lo, hi = sorted(sign * c for c in pair.ci95) if pair.ci95 else (gain, gain)
        if gain > 0:
            winner, loser, wtl = pair.a, pair.b, (pair.wins, pair.ties, pair.losses)
        else:
            winner, loser, wtl = pair.b, pair.a, (pair.losses, pair.ties, pair.wins)
            gain, lo, hi = -gain, -hi, -lo
        return (f"{winner} beats {loser} on {pair.metric}{direction} by {gain:.2f} [{lo:.2f}, {hi:.2f}], "
                f"{_p_text(pair.p_holm)} (wins/ties/losses {wtl[0]}/{wtl[1]}/{wtl[2]}, n={pair.n})")
    ci = f" [{pair.ci95[0]:+.2f}, {pair.ci95[1]:+.2f}]" if pair.ci95 else ""
    return (f"no significant difference between {pair.a} and {pair.b} on {pair.metric}{direction}: "
            f"{pair.a} - {pair.b} = {pair.delta:+.2f}{ci}, {_p_text(pair.p_holm)} (n={pair.n})")


# ------------------------------------------------------------------------------------------------
# require rules


@dataclass(frozen=True)
class Rule:
    text: str
    better: str  # the system that must be better (or not worse)
    worse: str
    strict: bool  # ">": must be shown better; ">=": must not be shown worse
    shift: float  # the oriented mean difference better - worse must exceed (">") / not fall below (">=") this
    metric: str


def parse_rule(text: str) -> Rule:
    match = _RULE.match(text)
    if match is None:
        raise UsageError(f"require rule {text!r}: {RULE_SYNTAX}")
    a, op, b, metric = match["a"], match["op"], match["b"], match["metric"]
    margin = float(match["margin"]) if match["margin"] else 0.0
    shift = margin if match["sign"] != "-" else -margin  # a OP b + shift
    if a == b:
        raise UsageError(f"require rule {text!r}: compares '{a}' with itself")
    if op in ("<", "<="):  # a < b + s  <=>  b > a - s
        a, b, shift, op = b, a, -shift, {"<": ">", "<=": ">="}[op]
    return Rule(text, a, b, op == ">", shift, metric)


@dataclass
class RuleResult:
    rule: Rule
    verdict: str
    message: str
    n: int = 0
    delta: float | None = None  # mean of better - worse in the metric's units
    ci95: tuple[float, float] | None = None
    p: float | None = None  # one-sided
    p_holm: float | None = None
    test: str | None = None
    better_mean: float | None = None
    worse_mean: float | None = None
    errors: int = 0

    @property
    def passed(self) -> bool:
        return self.verdict != FAIL

    def to_dict(self) -> dict[str, Any]:
        r = self.rule
        return {"rule": r.text, "a": r.better, "b": r.worse, "op": ">" if r.strict else ">=", "margin": r.shift,
                "metric": r.metric, "verdict": self.verdict, "passed": self.passed, "a_mean": self.better_mean,
                "b_mean": self.worse_mean, "delta": self.delta,
                "ci95": list(self.ci95) if self.ci95 is not None else None, "p": self.p, "p_holm": self.p_holm,
                "test": self.test, "n": self.n, "errors": self.errors, "message": self.message}


def check_rules(rules: Sequence[Rule], runs: Mapping[str, SystemRun], *, alpha: float, on_error: str = "fail",
                seed: int = 0, n_resamples: int = RESAMPLES) -> list[RuleResult]:
    """Every rule's one-sided test, Holm-adjusted across the rules, and its verdict."""
    from scipy import stats

    measured = []
    for rule in rules:
        sample, info = _pairs(runs[rule.better], runs[rule.worse], rule.metric, on_error)
        d = sample.differences  # oriented: positive when "better" is better
        n = int(d.size)
        result = RuleResult(rule, PASS, "", n=n, errors=sample.errored)
        sign = 1.0 if info.higher_is_better else -1.0
        if n:
            result.delta = _clean(float(sign * d.mean()))
            result.better_mean = _clean(float(sign * sample.candidate.mean()))
            result.worse_mean = _clean(float(sign * sample.baseline.mean()))
            result.ci95 = _clean_ci(mean_ci((sign * d).tolist()))
        if n >= 2:
            alternative = "greater" if rule.strict else "less"
            wins, losses = int((d > TOLERANCE).sum()), int((d < -TOLERANCE).sum())
            if info.proportion and rule.shift == 0 and np.all(np.isin(np.abs(d), (0.0, 1.0))):
                k = wins if rule.strict else losses
                result.p = float(stats.binomtest(k, wins + losses, 0.5, alternative="greater").pvalue) \
                    if wins + losses else 1.0
                result.test = "exact sign test on discordant pairs (McNemar)"
            else:
                result.p, result.test = paired_p(d - rule.shift, alternative=alternative, seed=seed,
                                                 n_resamples=n_resamples)
        measured.append((result, d, info))
    tested = [r for r, _, _ in measured if r.p is not None]
    for r, adjusted in zip(tested, holm([r.p for r in tested]), strict=True):
        r.p_holm = adjusted
    needed = pairs_for_a_verdict(alpha, max(1, len(rules)), n_resamples)
    for result, d, info in measured:
        _verdict(result, d, info, alpha, needed, len(rules))
    return [r for r, _, _ in measured]


def _verdict(result: RuleResult, d: np.ndarray, info: MetricInfo, alpha: float, needed: int, n_rules: int) -> None:
    rule = result.rule
    direction = "" if info.higher_is_better else " (lower is better)"
    margin = f" by more than {rule.shift:g}" if rule.strict and rule.shift else ""
    allowance = f" (allowed shortfall {-rule.shift:g})" if not rule.strict and rule.shift < 0 else ""
    if result.n == 0:
        result.verdict = FAIL
        result.message = f"'{rule.better}' and '{rule.worse}' share no record with a {rule.metric} score"
        return
    mean = float(d.mean())
    holm_text = f", Holm across {n_rules} rules" if n_rules > 1 else ""
    p_text = "p n/a" if result.p_holm is None else f"p_holm={result.p_holm:.4g}{holm_text}"
    numbers = (f"{rule.better} {result.better_mean:.4f} vs {rule.worse} {result.worse_mean:.4f} on "
               f"{rule.metric}{direction}, n={result.n}")
    significant = result.p_holm is not None and result.p_holm < alpha
    if rule.strict:
        if significant and mean > rule.shift + TOLERANCE:
            result.verdict = PASS
            result.message = f"{rule.better} is better{margin}: {numbers}, {p_text}"
        else:
            result.verdict = FAIL
            why = (f"too few pairs to show it ({result.n}; at least {needed} needed for alpha {alpha:g})"
                   if result.n < needed else f"not shown at alpha {alpha:g}")
            result.message = f"{rule.better} is not shown to be better{margin}: {why}: {numbers}, {p_text}"
        return
    if significant and mean < rule.shift - TOLERANCE:
        result.verdict = FAIL
        result.message = f"{rule.better} is significantly worse{allowance}: {numbers}, {p_text}"
    elif mean < rule.shift - TOLERANCE:
        result.verdict = WARN
        result.message = f"{rule.better} is behind{allowance} but within noise: {numbers}, {p_text}"
    elif result.n < needed:
        result.verdict = WARN
        result.message = (f"holds on these records, but {result.n} pairs are too few for any test to decide "
                          f"(at least {needed}): {numbers}")
    else:
        result.verdict = PASS
        result.message = f"{rule.better} is not worse{allowance}: {numbers}, {p_text}"
