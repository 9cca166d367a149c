"""CI gate: thresholds on means, regression checks against a baseline that are valid at every sample
size, and the error rate.

A gate is a list of checks, each PASS, WARN (passes, but the evidence is weak) or FAIL:

* threshold ``rouge2>=0.15`` (``>=``, ``>``, ``<=``, ``<``): the candidate's mean must satisfy it, up to
  float rounding (:data:`evalkit.statistics.paired.TOLERANCE`). The mean is over every candidate record, errored
  ones counted by the error policy. WARN when it holds but the threshold lies inside the mean's 95%
  interval, or when the mean rests on a single record.
* max regression ``rouge2=0.01`` against ``--baseline``: paired comparison on the shared ids
  (:mod:`evalkit.statistics.paired`: a sign-flip permutation test below 100 pairs, the paired t-test above).
  FAIL only when the mean drop exceeds 0.01 *and* the Holm-adjusted one-sided p-value of "drop <= 0.01"
  is below alpha (Holm across all regression checks of the gate). WARN when the drop exceeds 0.01 but
  is within noise, when there are too few pairs for any verdict, or when the evaluation set is too
  small to detect such a drop (minimum detectable effect). A "drop" is a change for the worse: where a
  lower value is better (``metrics.<m>.higher_is_better`` false, e.g. a refusal rate) it is a rise.
* max error rate: the share of records that errored (generation, or scoring by any metric); exceeding
  it is a runtime failure (exit 3), not a quality verdict.

Errors are data (``--on-error``, :data:`evalkit.statistics.paired.ON_ERROR_POLICIES`): by default (``fail``) a record
that errored counts as a failed record, at the low end of the metric's range, in thresholds and
regressions alike; ``zero`` counts it as 0; ``skip`` leaves it out. Every check says how many records it
rests on and how many of them errored.

Exit codes: 0 passed, 1 a check failed, 3 the error rate was exceeded; bad expressions, unknown
metrics and unusable run directories raise ``UsageError``/``InputError`` (exit 2).
"""

from __future__ import annotations

import datetime as dt
import difflib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalkit.atomic import atomic_write_json
from evalkit.errors import EXIT_GATE_FAILED, EXIT_OK, EXIT_RUNTIME, InputError, UsageError
from evalkit.results import RECORDS_FILE, REPORT_FILE, RESULTS_FILE, RunResult, load_run
from evalkit.statistics.paired import (
    DEFAULT_ON_ERROR,
    ON_ERROR_POLICIES,
    RESAMPLES,
    TOLERANCE,
    PairedComparison,
    compare,
    error_fill,
    paired_scores,
    pairs_for_a_verdict,
    policy_values,
    record_index,
    required_pairs,
)
from evalkit.statistics.summary import holm, summarize


def task_columns(task: str, families: Sequence[str] | None = None) -> tuple[str, ...]:
    """Score columns a run of ``task`` with these metric families will have, known before anything runs (so a
    typo fails in a second, not after a ten-minute generation). Metric modules import nothing heavy."""
    from evalkit.scoring.base import METRICS
    from evalkit.tasks import TASKS

    names = families or TASKS.get(task).metrics
    return tuple(column for name in names for column in METRICS.get(name).columns)
DEFAULT_ALPHA = 0.05
FEW_SHARED_IDS = 10          # fewer shared ids than this (or < half of either run) gets a warning
PASS, WARN, FAIL = "PASS", "WARN", "FAIL"
OPERATORS = (">=", "<=", ">", "<")
_SETTINGS_IGNORED = {"library", "model_path", "device", "batch_size"}  # differ without changing scores

_METRIC = r"[A-Za-z_][A-Za-z0-9_.\-]*"
_THRESHOLD_RE = re.compile(rf"^\s*({_METRIC})\s*(>=|<=|>|<)\s*(.*?)\s*$")
_REGRESSION_RE = re.compile(rf"^\s*({_METRIC})\s*=\s*(.*?)\s*$")
_THRESHOLD_SYNTAX = "expected METRIC OP VALUE with OP one of >=, >, <=, < (e.g. 'rouge2>=0.15')"
_REGRESSION_SYNTAX = "expected METRIC=DELTA, the largest allowed drop of the mean (e.g. 'rouge2=0.01')"


# ------------------------------------------------------------------------------------------------
# expressions


@dataclass(frozen=True)
class Threshold:
    metric: str
    op: str
    value: float
    text: str = field(default="", compare=False)  # as the user wrote it, for messages

    @property
    def name(self) -> str:
        return f"{self.metric} {self.op} {_num(self.value)}"

    @property
    def expression(self) -> str:
        return f"{self.metric}{self.op}{_num(self.value)}"

    def holds(self, mean: float) -> bool:
        """Whether ``mean`` satisfies the threshold; values within float rounding of it count as equal."""
        v, tol = self.value, TOLERANCE
        return {">=": mean >= v - tol, ">": mean > v + tol, "<=": mean <= v + tol, "<": mean < v - tol}[self.op]


@dataclass(frozen=True)
class MaxRegression:
    metric: str
    max_drop: float
    text: str = field(default="", compare=False)

    @property
    def name(self) -> str:
        return f"{self.metric} drop <= {_num(self.max_drop)}"

    @property
    def expression(self) -> str:
        return f"{self.metric}={_num(self.max_drop)}"


def _num(value: float) -> str:
    """The shortest text that reads back as exactly ``value``: two different limits never share a name."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def _number(text: str, option: str, expression: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not text or not math.isfinite(value):
        raise UsageError(f"{option} {expression!r}: {text!r} is not a number")
    return value


def parse_threshold(expression: str) -> Threshold:
    """``'rouge2>=0.15'`` -> Threshold; malformed text raises UsageError (exit 2)."""
    match = _THRESHOLD_RE.match(expression)
    if match is None:
        hint = ""
        if _REGRESSION_RE.match(expression) and not any(op in expression for op in ("<", ">")):
            hint = "; METRIC=DELTA is the --max-regression syntax"
        raise UsageError(f"--threshold {expression!r}: {_THRESHOLD_SYNTAX}{hint}")
    metric, op, value = match.groups()
    return Threshold(metric, op, _number(value, "--threshold", expression), expression)


def parse_max_regression(expression: str) -> MaxRegression:
    """``'rouge2=0.01'`` -> MaxRegression (the drop must be >= 0); malformed text raises UsageError."""
    match = _REGRESSION_RE.match(expression)
    if match is None or match.group(2)[:1] in ("<", ">", "="):
        raise UsageError(f"--max-regression {expression!r}: {_REGRESSION_SYNTAX}")
    metric, value = match.groups()
    drop = _number(value, "--max-regression", expression)
    if drop < 0:
        raise UsageError(f"--max-regression {expression!r}: the allowed drop must be >= 0 (a drop is a change "
                         "for the worse: a fall, or a rise where lower is better; 0 fails on any significant drop)")
    return MaxRegression(metric, drop, expression)


@dataclass(frozen=True)
class GateSpec:
    """What to check. Build with :func:`parse_gate_spec`; validated before any model runs."""

    thresholds: tuple[Threshold, ...] = ()
    regressions: tuple[MaxRegression, ...] = ()
    alpha: float = DEFAULT_ALPHA
    max_error_rate: float | None = None
    seed: int = 0
    n_resamples: int = RESAMPLES
    on_error: str = DEFAULT_ON_ERROR

    @property
    def n_checks(self) -> int:
        return len(self.thresholds) + len(self.regressions) + (self.max_error_rate is not None)

    def validate_metrics(self, known: Iterable[str], *, source: str = "the task") -> None:
        """Unknown metric names raise UsageError, with the known names and a close match."""
        known = list(known)
        for option, items in (("--threshold", self.thresholds), ("--max-regression", self.regressions)):
            for item in items:
                if item.metric not in known:
                    close = [k for k in known if k.lower() == item.metric.lower()]
                    close = close or difflib.get_close_matches(item.metric, known, n=1, cutoff=0.6)
                    hint = f"; did you mean '{close[0]}'?" if close else ""
                    raise UsageError(f"{option} {item.text or item.expression!r}: unknown metric '{item.metric}' in "
                                     f"{source}{hint} (known: {', '.join(known)})")


def parse_gate_spec(*, thresholds: Sequence[str] | None = None, max_regressions: Sequence[str] | None = None,
                    alpha: float | None = None, max_error_rate: float | None = None,
                    has_baseline: bool = False, seed: int = 0, n_resamples: int = RESAMPLES,
                    on_error: str | None = None) -> GateSpec:
    """Parse and cross-check the gate options; every problem is a one-line UsageError."""
    parsed: dict[tuple[str, str, float], Threshold] = {}
    for text in thresholds or ():
        t = parse_threshold(text)
        parsed.setdefault((t.metric, t.op, t.value), t)  # the same threshold twice is one check
    regressions: dict[str, MaxRegression] = {}
    for text in max_regressions or ():
        r = parse_max_regression(text)
        if r.metric in regressions:
            raise UsageError(f"--max-regression given twice for '{r.metric}'")
        regressions[r.metric] = r
    if alpha is None:
        alpha = DEFAULT_ALPHA
    if not 0.0 < alpha <= 0.5:
        raise UsageError(f"--alpha {alpha}: expected a significance level in (0, 0.5], e.g. 0.05")
    if max_error_rate is not None and not 0.0 <= max_error_rate <= 1.0:
        raise UsageError(f"--max-error-rate {max_error_rate}: expected a fraction in [0, 1]")
    on_error = on_error or DEFAULT_ON_ERROR
    if on_error not in ON_ERROR_POLICIES:
        raise UsageError(f"--on-error {on_error}: expected one of {', '.join(ON_ERROR_POLICIES)}")
    if regressions and not has_baseline:
        raise UsageError("--max-regression needs --baseline RUN_DIR (the run to compare against)")
    if has_baseline and not regressions:
        raise UsageError("--baseline needs at least one --max-regression METRIC=DELTA (e.g. rouge2=0.01)")
    spec = GateSpec(tuple(parsed.values()), tuple(regressions.values()), alpha, max_error_rate, seed,
                    n_resamples, on_error)
    if spec.n_checks == 0:
        raise UsageError("nothing to gate: give --threshold, --baseline with --max-regression, or "
                         "--max-error-rate")
    return spec


# ------------------------------------------------------------------------------------------------
# run directories


def load_gate_run(run_dir: str | Path, role: str) -> RunResult:
    """A finished run directory, or a one-line InputError (exit 2) naming the path."""
    path = Path(run_dir)
    if not path.is_dir():
        raise InputError(f"{role} run directory not found" if not path.exists()
                         else f"{role} run: not a directory", path=str(path))
    results_path = str(path / RESULTS_FILE)
    outcome = _peek_outcome(path / RESULTS_FILE)
    if outcome.get("status") in ("crashed", "stopped_fail_fast"):  # its records.jsonl, if any, is older
        raise InputError(f"{role} run stopped before it finished ({outcome.get('message')}); re-run it "
                         "(finished generations are reused)", path=results_path)
    try:
        run = load_run(path)
    except InputError as exc:
        raise InputError(f"{role} run: {exc.reason}", path=exc.path, line=exc.line) from None
    if not isinstance(run.results, dict) or not isinstance(run.results.get("metrics"), dict):
        raise InputError(f"{role} run: malformed results (no 'metrics' object)", path=results_path)
    for line, record in enumerate(run.records, start=1):
        if not isinstance(record, dict) or "id" not in record:
            raise InputError(f"{role} run: malformed record (expected an object with an 'id')",
                             path=str(path / RECORDS_FILE), line=line)
    return run


def _peek_outcome(path: Path) -> Mapping[str, Any]:
    import json

    try:
        outcome = json.loads(path.read_text(encoding="utf-8")).get("outcome")
    except (OSError, ValueError, AttributeError):
        return {}
    return outcome if isinstance(outcome, Mapping) else {}


def check_baseline(spec: GateSpec, baseline: RunResult) -> None:
    """Every metric with a --max-regression must be in the baseline (else exit 2)."""
    for r in spec.regressions:
        if r.metric not in baseline.results["metrics"]:
            raise InputError(f"metric '{r.metric}' (--max-regression {r.text or r.expression!r}) is not in the "
                             "baseline run", path=str(baseline.output_dir / RESULTS_FILE))


# ------------------------------------------------------------------------------------------------
# verdicts


@dataclass
class GateCheck:
    """One check and its verdict. ``to_dict`` is flat so that reports render it as a table row."""

    name: str
    kind: str                      # threshold | regression | error_rate
    metric: str | None
    expression: str
    limit: float
    verdict: str                   # PASS | WARN | FAIL
    message: str
    baseline: float | None = None
    candidate: float | None = None
    delta: float | None = None
    ci95: tuple[float, float] | None = None
    p_value: float | None = None   # raw one-sided p-value
    n: int | None = None           # records (pairs) the numbers rest on
    mde: float | None = None
    p_adjusted: float | None = None  # Holm-adjusted across the gate's regression checks; decides the verdict
    method: str | None = None      # the test behind p_value
    errors: int | None = None      # records that errored (in either run); in n unless the policy is skip
    dropped: int | None = None     # of those, left out (--on-error skip)

    @property
    def passed(self) -> bool:
        return self.verdict != FAIL

    @property
    def label(self) -> str:
        """The check without its metric, for tables with a metric column."""
        if self.kind == "threshold":
            return f"threshold {self.name.split(' ', 1)[1]}"
        if self.kind == "regression":
            return f"max drop {_num(self.limit)}"
        if self.kind == "require":
            return self.name
        return f"error rate <= {_num(self.limit)}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "metric": self.metric, "limit": self.limit,
            "baseline": _finite(self.baseline), "candidate": _finite(self.candidate),
            "delta": _finite(self.delta),
            "ci95_low": None if self.ci95 is None else _finite(self.ci95[0]),
            "ci95_high": None if self.ci95 is None else _finite(self.ci95[1]),
            "p_value": _finite(self.p_value), "p_adjusted": _finite(self.p_adjusted), "test": self.method,
            "n": self.n, "errors": self.errors, "dropped": self.dropped, "mde": _finite(self.mde),
            "verdict": self.verdict, "passed": self.passed, "message": self.message,
        }


@dataclass
class GateResult:
    checks: list[GateCheck]
    warnings: list[str] = field(default_factory=list)
    alpha: float = DEFAULT_ALPHA
    n_resamples: int = RESAMPLES
    seed: int = 0
    candidate: str | None = None
    baseline: str | None = None
    shared_ids: int | None = None
    candidate_records: int | None = None
    baseline_records: int | None = None
    on_error: str = DEFAULT_ON_ERROR
    title: str = "gate"  # "compare" for the require rules of a comparison
    about: str | None = None  # what was compared, when it is not a candidate run against a baseline

    @property
    def failed(self) -> list[GateCheck]:
        return [c for c in self.checks if not c.passed]

    @property
    def passed(self) -> bool:
        return not self.failed

    @property
    def error_rate_exceeded(self) -> bool:
        return any(c.kind == "error_rate" for c in self.failed)

    @property
    def exit_code(self) -> int:
        if self.error_rate_exceeded:
            return EXIT_RUNTIME
        return EXIT_GATE_FAILED if self.failed else EXIT_OK

    @property
    def verdict_line(self) -> str:
        if self.passed:
            return f"{self.title}: PASSED"
        line = f"{self.title}: FAILED ({len(self.failed)} of {len(self.checks)} checks)"
        if self.error_rate_exceeded:
            line += "; exit 3: the error rate is above --max-error-rate (not a crash)"
        return line

    def to_dict(self) -> dict[str, Any]:
        checks: dict[str, Any] = {}
        for c in self.checks:  # names are unique by construction; never let one check hide another
            name, k = c.name, 2
            while name in checks:
                name, k = f"{c.name} ({k})", k + 1
            checks[name] = c.to_dict()
        return {
            "passed": self.passed,
            "verdict": "PASSED" if self.passed else "FAILED",
            "exit_code": self.exit_code,
            "failed_checks": len(self.failed),
            "total_checks": len(self.checks),
            "checks": checks,
            "warnings": list(self.warnings),
            "candidate": self.candidate,
            "baseline": self.baseline,
            "shared_ids": self.shared_ids,
            "candidate_records": self.candidate_records,
            "baseline_records": self.baseline_records,
            "alpha": self.alpha,
            "on_error": self.on_error,
            "tests": STATISTICS,
            "resamples": self.n_resamples,
            "seed": self.seed,
            "created_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }


STATISTICS = ("regressions: one-sided sign-flip permutation test of the mean paired difference below 100 pairs "
              "(exact up to 13), paired t-test from 100; Holm across regression checks; 95% CIs Student-t")


def _finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


def _p_text(p: float | None) -> str:
    """``p=0.1234`` or ``p<0.0001``."""
    return "p=n/a" if p is None else ("p<0.0001" if p < 1e-4 else f"p={p:.4f}")


def higher_is_better(run: RunResult, metric: str) -> bool:
    """Whether a higher ``metric`` is better in ``run`` (results.json ``metrics.<m>.higher_is_better``;
    runs written before it was recorded hold only metrics where higher is better)."""
    return (run.results["metrics"].get(metric) or {}).get("higher_is_better") is not False


def metric_worst(run: RunResult, metric: str) -> float:
    """The worst value of ``metric`` in ``run``: the low end of its range (results.json
    ``metrics.<m>.range``; 0 when absent), or the high end where lower is better (1 when absent)."""
    value = (run.results["metrics"].get(metric) or {}).get("range")
    worst_end = 0 if higher_is_better(run, metric) else 1
    if isinstance(value, (list, tuple)) and len(value) == 2 and isinstance(value[worst_end], (int, float)):
        return float(value[worst_end])
    return float(worst_end)


def _policy_text(on_error: str, metric: str, worst: float) -> str:
    return {"fail": f"counted as failed ({metric} {_num(worst)})", "zero": "counted as 0",
            "skip": "left out"}[on_error]


def _rests_on(n: int, errors: int, dropped: int, on_error: str, metric: str, worst: float) -> str:
    """``n=30`` plus, when records errored, how they entered (``; 2 errored, counted as 0``)."""
    text = f"n={n}"
    if on_error == "skip" and dropped:
        text += f"; {dropped} errored, left out"
    elif errors:
        text += f"; {errors} errored, {_policy_text(on_error, metric, worst)}"
    return text


def _threshold_check(t: Threshold, candidate: RunResult, on_error: str) -> GateCheck:
    worst = metric_worst(candidate, t.metric)
    fill = error_fill(on_error, worst)
    values, errors = policy_values(candidate.records, t.metric, on_error=on_error, worst=worst)
    is_rate = (candidate.results["metrics"].get(t.metric) or {}).get("ci_method") == "wilson"
    summary = summarize(values, proportion=is_rate and all(v in (0.0, 1.0) for v in values))
    mean, ci, n = summary.mean, summary.ci95, summary.n
    dropped = errors if fill is None else 0
    check = GateCheck(t.name, "threshold", t.metric, t.expression, t.value, PASS, "", candidate=mean, ci95=ci,
                      n=n, errors=errors, dropped=dropped)
    rests = _rests_on(n, errors, dropped, on_error, t.metric, worst)
    if mean is None:
        check.verdict = FAIL
        check.message = f"{t.metric} has no scored records in the candidate run ({errors} errored)"
    elif not t.holds(mean):
        check.verdict, check.message = FAIL, f"mean {mean:.4f} fails {t.name} ({rests})"
    elif n < 2:
        check.verdict = WARN
        check.message = f"mean {mean:.4f} meets {t.name}, but it is the score of a single record ({rests})"
    elif ci is not None and min(ci) - TOLERANCE <= t.value <= max(ci) + TOLERANCE:
        check.verdict = WARN
        check.message = (f"mean {mean:.4f} meets {t.name}, but the threshold is inside its 95% CI "
                         f"[{ci[0]:.4f}, {ci[1]:.4f}]: within noise of failing ({rests})")
    else:
        check.message = f"mean {mean:.4f} meets {t.name} ({rests})"
    return check


def _regression_check(r: MaxRegression, c: PairedComparison, spec: GateSpec, *, p_adjusted: float | None,
                      errors: int, dropped: int, worst: float, n_tests: int, higher_better: bool = True) -> GateCheck:
    """``c`` compares scores oriented so that higher is better; the check reports them as the run holds them."""
    sign = 1.0 if higher_better else -1.0

    def raw(value: float | None) -> float | None:
        return None if value is None else sign * value

    ci = None if c.ci95 is None else tuple(sorted((sign * c.ci95[0], sign * c.ci95[1])))
    check = GateCheck(r.name, "regression", r.metric, r.expression, r.max_drop, PASS, "",
                      baseline=raw(c.baseline_mean), candidate=raw(c.candidate_mean), delta=raw(c.delta), ci95=ci,
                      p_value=c.p_value, n=c.n, mde=c.mde, p_adjusted=p_adjusted, method=c.method,
                      errors=errors, dropped=dropped)
    worse = "dropped" if higher_better else "rose (lower is better)"
    rests = _rests_on(c.n, errors, dropped, spec.on_error, r.metric, worst)
    if c.n == 0:
        check.verdict, check.message = FAIL, f"no shared record has a {r.metric} score in both runs ({rests})"
        return check
    drop = c.drop
    allowed = _num(r.max_drop)
    needed = pairs_for_a_verdict(spec.alpha, n_tests, spec.n_resamples)
    p_text = _p_text(c.p_value) + (f", Holm {_p_text(p_adjusted)}" if n_tests > 1 and c.p_value is not None else "")
    significant = p_adjusted is not None and p_adjusted < spec.alpha
    if c.n < needed:
        check.verdict = WARN
        floor = c.min_p if c.min_p is not None else 1.0
        holm = f" x {n_tests} checks (Holm)" if n_tests > 1 else ""
        check.message = (f"changed {sign * c.delta:+.4f}, allowed {_worsening(higher_better)} {allowed}: too few "
                         f"pairs for a verdict: with "
                         f"{c.n} the smallest p-value a sign-flip test can give is {floor:.4g}{holm}, not below "
                         f"alpha {spec.alpha:g}; at least {needed} pairs are needed ({rests})")
        return check
    if c.exceeds and significant:
        check.verdict = FAIL
        check.message = (f"{worse} {drop:.4f} > {allowed}, significant: {p_text} < alpha {spec.alpha:g} "
                         f"({rests}; {c.method})")
    elif c.exceeds:
        check.verdict = WARN
        check.message = (f"{worse} {drop:.4f} > {allowed} but within noise: {p_text} >= alpha {spec.alpha:g} "
                         f"({rests}; {c.method})")
    else:
        check.message = (f"changed {sign * c.delta:+.4f}, allowed {_worsening(higher_better)} {allowed}: {p_text} "
                         f"({rests})")
    if check.verdict != FAIL and (c.mde is None or c.mde > r.max_drop):
        if c.mde is None:
            check.message += "; low power: no drop is detectable with this many pairs"
        else:
            pairs = required_pairs(c.sd or 0.0, r.max_drop, alpha=spec.alpha, n_resamples=spec.n_resamples)
            check.message += (f"; low power: minimum detectable effect {c.mde:.4f} > {allowed} "
                              f"(80% power, sd of differences {c.sd:.4f}"
                              + (f"; ~{pairs} pairs needed)" if pairs else ")"))
        if check.verdict == PASS:
            check.verdict = WARN
    return check


def _worsening(higher_better: bool) -> str:
    return "drop" if higher_better else "rise (lower is better)"


def record_failed(record: Mapping[str, Any]) -> bool:
    """A record errored: its generation failed, or some metric could not score it."""
    return record.get("error") is not None or bool(record.get("score_errors"))


def _error_rate_check(limit: float, candidate: RunResult) -> GateCheck:
    total = len(candidate.records)
    errors = sum(1 for r in candidate.records if record_failed(r))
    rate = errors / total if total else 0.0
    check = GateCheck(f"error rate <= {_num(limit)}", "error_rate", None, f"error_rate<={_num(limit)}", limit,
                      PASS, f"{errors} of {total} records errored ({rate:.2%})", candidate=rate, n=total,
                      errors=errors)
    if rate > limit + TOLERANCE:
        check.verdict = FAIL
        check.message += f": above --max-error-rate {_num(limit)}"
    return check


def _settings_warnings(spec: GateSpec, candidate: RunResult, baseline: RunResult) -> list[str]:
    cand = candidate.results.get("metric_settings") or {}
    base = baseline.results.get("metric_settings") or {}
    warnings = []
    families = [f for f in sorted(set(cand) | set(base))
                if any(r.metric.startswith(f) for r in spec.regressions)]
    for family in families:
        a, b = cand.get(family) or {}, base.get(family) or {}
        if not isinstance(a, Mapping) or not isinstance(b, Mapping):
            continue
        diffs = [f"{k}: {b.get(k)!r} vs {a.get(k)!r}" for k in sorted(set(a) | set(b))
                 if k not in _SETTINGS_IGNORED and a.get(k) != b.get(k)]
        if diffs:
            warnings.append(f"{family} settings differ between baseline and candidate ({'; '.join(diffs)}); "
                            "their scores may not be comparable")
    return warnings


def _regression_checks(spec: GateSpec, candidate: RunResult, baseline: RunResult,
                       cand_index: Mapping[str, Mapping[str, Any]],
                       base_index: Mapping[str, Mapping[str, Any]]) -> list[GateCheck]:
    """Every --max-regression check, with Holm's adjustment across them."""
    comparisons = []
    for r in spec.regressions:
        sample = paired_scores(base_index, cand_index, r.metric, on_error=spec.on_error,
                               baseline_worst=metric_worst(baseline, r.metric),
                               candidate_worst=metric_worst(candidate, r.metric),
                               higher_is_better=higher_is_better(candidate, r.metric))
        comparison = compare(sample, max_drop=r.max_drop, alpha=spec.alpha, seed=spec.seed,
                             n_resamples=spec.n_resamples)
        comparisons.append((r, sample, comparison))
    tested = [c.p_value for _, _, c in comparisons if c.p_value is not None]
    adjusted = iter(holm(tested))
    n_tests = len(spec.regressions)
    checks = []
    for r, sample, c in comparisons:
        p_adjusted = next(adjusted) if c.p_value is not None else None
        checks.append(_regression_check(r, c, spec, p_adjusted=p_adjusted, errors=sample.errored,
                                        dropped=sample.dropped,
                                        worst=metric_worst(candidate, r.metric), n_tests=n_tests,
                                        higher_better=higher_is_better(candidate, r.metric)))
    return checks


def evaluate_gate(candidate: RunResult, spec: GateSpec, baseline: RunResult | None = None) -> GateResult:
    """Run every check of ``spec`` on a finished candidate run (and baseline run)."""
    result = GateResult([], alpha=spec.alpha, n_resamples=spec.n_resamples, seed=spec.seed,
                        candidate=str(candidate.output_dir), candidate_records=len(candidate.records),
                        on_error=spec.on_error)
    result.checks.extend(_threshold_check(t, candidate, spec.on_error) for t in spec.thresholds)
    if spec.regressions:
        if baseline is None:
            raise UsageError("--max-regression needs --baseline RUN_DIR")
        check_baseline(spec, baseline)
        cand_index = record_index(candidate.records, source=str(candidate.output_dir / RECORDS_FILE))
        base_index = record_index(baseline.records, source=str(baseline.output_dir / RECORDS_FILE))
        shared = [k for k in cand_index if k in base_index]
        result.baseline, result.baseline_records = str(baseline.output_dir), len(baseline.records)
        result.shared_ids = len(shared)
        if not shared:
            raise InputError(f"no shared ids between the candidate ({candidate.output_dir}) and the baseline run; "
                             "were they run on the same dataset?", path=str(baseline.output_dir))
        if len(shared) < FEW_SHARED_IDS or 2 * len(shared) < max(len(cand_index), len(base_index)):
            result.warnings.append(f"only {len(shared)} shared ids (candidate {len(cand_index)}, baseline "
                                   f"{len(base_index)} records): the comparison covers few samples")
        changed = [k for k in shared if cand_index[k].get("target_output") != base_index[k].get("target_output")]
        if changed:
            result.warnings.append(f"{len(changed)} of {len(shared)} shared ids have different references in the "
                                   f"two runs (e.g. '{changed[0]}'): they were scored against different targets")
        if Path(candidate.output_dir).resolve() == Path(baseline.output_dir).resolve():
            result.warnings.append("candidate and baseline are the same run directory")
        result.warnings.extend(_settings_warnings(spec, candidate, baseline))
        result.checks.extend(_regression_checks(spec, candidate, baseline, cand_index, base_index))
    if spec.max_error_rate is not None:
        result.checks.append(_error_rate_check(spec.max_error_rate, candidate))
    return result


def gate_outcome(result: GateResult, previous: Mapping[str, Any] | None) -> dict[str, Any]:
    """results.json ``outcome`` after the gate: error rate exceeded (exit 3, the run itself finished),
    gate failed (exit 1), or the run's own outcome when the gate passed."""
    if result.error_rate_exceeded:
        check = next(c for c in result.failed if c.kind == "error_rate")
        return {"status": "error_rate_exceeded", "exit_code": EXIT_RUNTIME, "message": check.message}
    if result.failed:
        return {"status": "gate_failed", "exit_code": EXIT_GATE_FAILED,
                "message": f"{len(result.failed)} of {len(result.checks)} gate checks failed"}
    if isinstance(previous, Mapping) and previous.get("status") not in (None, "gate_failed",
                                                                       "error_rate_exceeded"):
        return dict(previous)
    return {"status": "complete", "exit_code": EXIT_OK, "message": None}


def publish_gate(result: GateResult, candidate: RunResult, *, junit: str | Path | None = None,
                 summary_md: str | Path | None = None) -> list[Path]:
    """Write the verdict: a ``gate`` section in the candidate's results.json (atomically), its
    report.html re-rendered when there is one, and the optional JUnit XML and Markdown files."""
    from evalkit.gate.output import write_junit, write_summary_md

    written = []
    results_path = Path(candidate.output_dir) / RESULTS_FILE
    candidate.results["gate"] = result.to_dict()
    candidate.results["outcome"] = gate_outcome(result, candidate.results.get("outcome"))
    atomic_write_json(results_path, candidate.results)
    written.append(results_path)
    report = Path(candidate.output_dir) / REPORT_FILE
    if report.is_file():
        from evalkit.reports.html import write_report

        write_report(report, candidate.results, candidate.records)
        written.append(report)
    if junit:
        write_junit(junit, result)
        written.append(Path(junit))
    if summary_md:
        write_summary_md(summary_md, result)
        written.append(Path(summary_md))
    return written
