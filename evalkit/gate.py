"""CI gate: thresholds on means, noise-aware regression checks against a baseline run, error rate.

A gate is a list of checks, each PASS, WARN (passes, but the evidence is weak) or FAIL:

* threshold ``rouge2>=0.15`` (``>=``, ``>``, ``<=``, ``<``): the candidate's mean must satisfy it.
  WARN when it does but the threshold lies inside the mean's 95% interval.
* max regression ``rouge2=0.01`` against ``--baseline``: paired comparison on the shared ids
  (:mod:`evalkit.paired`). FAIL only when the mean drop exceeds 0.01 *and* the one-sided
  p-value of "drop <= 0.01" is below alpha. WARN when the drop exceeds 0.01 but is within noise,
  or when the evaluation set is too small to detect such a drop (minimum detectable effect).
* max error rate: the share of records whose generation failed; exceeding it is a runtime
  failure (exit 3), not a quality verdict.

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
from evalkit.paired import GATE_RESAMPLES, PairedComparison, compare, paired_scores, record_index, required_pairs
from evalkit.results import RECORDS_FILE, REPORT_FILE, RESULTS_FILE, RunResult, load_run

# Score columns of each task, known before anything is run (so a typo fails in a second, not after
# a ten-minute generation).
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "summarization": ("rouge1", "rouge2", "rougeL", "meteor", "bertscore", "bertscore_precision",
                      "bertscore_recall"),
}
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
        return {">=": mean >= self.value, ">": mean > self.value, "<=": mean <= self.value,
                "<": mean < self.value}[self.op]


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
    return f"{value:g}"


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
        raise UsageError(f"--max-regression {expression!r}: the allowed drop must be >= 0 (higher scores "
                         "are better; 0 fails on any significant drop)")
    return MaxRegression(metric, drop, expression)


@dataclass(frozen=True)
class GateSpec:
    """What to check. Build with :func:`parse_gate_spec`; validated before any model runs."""

    thresholds: tuple[Threshold, ...] = ()
    regressions: tuple[MaxRegression, ...] = ()
    alpha: float = DEFAULT_ALPHA
    max_error_rate: float | None = None
    seed: int = 0
    n_resamples: int = GATE_RESAMPLES

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
                    has_baseline: bool = False, seed: int = 0, n_resamples: int = GATE_RESAMPLES) -> GateSpec:
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
    if regressions and not has_baseline:
        raise UsageError("--max-regression needs --baseline RUN_DIR (the run to compare against)")
    if has_baseline and not regressions:
        raise UsageError("--baseline needs at least one --max-regression METRIC=DELTA (e.g. rouge2=0.01)")
    spec = GateSpec(tuple(parsed.values()), tuple(regressions.values()), alpha, max_error_rate, seed,
                    n_resamples)
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
    try:
        run = load_run(path)
    except InputError as exc:
        raise InputError(f"{role} run: {exc.reason}", path=exc.path, line=exc.line) from None
    results_path = str(path / RESULTS_FILE)
    if not isinstance(run.results, dict) or not isinstance(run.results.get("metrics"), dict):
        raise InputError(f"{role} run: malformed results (no 'metrics' object)", path=results_path)
    for line, record in enumerate(run.records, start=1):
        if not isinstance(record, dict) or "id" not in record:
            raise InputError(f"{role} run: malformed record (expected an object with an 'id')",
                             path=str(path / RECORDS_FILE), line=line)
    return run


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
    p_value: float | None = None
    n: int | None = None
    mde: float | None = None

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
        return f"error rate <= {_num(self.limit)}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "metric": self.metric, "limit": self.limit,
            "baseline": _finite(self.baseline), "candidate": _finite(self.candidate),
            "delta": _finite(self.delta),
            "ci95_low": None if self.ci95 is None else _finite(self.ci95[0]),
            "ci95_high": None if self.ci95 is None else _finite(self.ci95[1]),
            "p_value": _finite(self.p_value), "n": self.n, "mde": _finite(self.mde),
            "verdict": self.verdict, "passed": self.passed, "message": self.message,
        }


@dataclass
class GateResult:
    checks: list[GateCheck]
    warnings: list[str] = field(default_factory=list)
    alpha: float = DEFAULT_ALPHA
    n_resamples: int = GATE_RESAMPLES
    seed: int = 0
    candidate: str | None = None
    baseline: str | None = None
    shared_ids: int | None = None
    candidate_records: int | None = None
    baseline_records: int | None = None

    @property
    def failed(self) -> list[GateCheck]:
        return [c for c in self.checks if not c.passed]

    @property
    def passed(self) -> bool:
        return not self.failed

    @property
    def exit_code(self) -> int:
        if any(c.kind == "error_rate" for c in self.failed):
            return EXIT_RUNTIME
        return EXIT_GATE_FAILED if self.failed else EXIT_OK

    @property
    def verdict_line(self) -> str:
        return "gate: PASSED" if self.passed else f"gate: FAILED ({len(self.failed)} of {len(self.checks)} checks)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "verdict": "PASSED" if self.passed else "FAILED",
            "exit_code": self.exit_code,
            "failed_checks": len(self.failed),
            "total_checks": len(self.checks),
            "checks": {c.name: c.to_dict() for c in self.checks},
            "warnings": list(self.warnings),
            "candidate": self.candidate,
            "baseline": self.baseline,
            "shared_ids": self.shared_ids,
            "candidate_records": self.candidate_records,
            "baseline_records": self.baseline_records,
            "alpha": self.alpha,
            "bootstrap_resamples": self.n_resamples,
            "seed": self.seed,
            "created_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }


def _finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


def _p_text(p: float | None) -> str:
    """``p=0.1234`` or ``p<0.0001`` (a bootstrap p-value of 0 only says p < 1/resamples)."""
    return "p=n/a" if p is None else ("p<0.0001" if p < 1e-4 else f"p={p:.4f}")


def _threshold_check(t: Threshold, candidate: RunResult) -> GateCheck:
    summary = candidate.results["metrics"].get(t.metric) or {}
    mean, ci = summary.get("mean"), summary.get("ci95")
    ci = tuple(ci) if isinstance(ci, (list, tuple)) and len(ci) == 2 else None
    check = GateCheck(t.name, "threshold", t.metric, t.expression, t.value, PASS, "", candidate=mean, ci95=ci,
                      n=summary.get("n"))
    if not isinstance(mean, (int, float)):
        check.verdict, check.message = FAIL, f"{t.metric} has no scored records in the candidate run"
    elif not t.holds(mean):
        check.verdict, check.message = FAIL, f"mean {mean:.4f} fails {t.name}"
    elif ci is not None and min(ci) <= t.value <= max(ci):
        check.verdict = WARN
        check.message = (f"mean {mean:.4f} meets {t.name}, but the threshold is inside its 95% CI "
                         f"[{ci[0]:.4f}, {ci[1]:.4f}]: within noise of failing")
    else:
        check.message = f"mean {mean:.4f} meets {t.name}"
    return check


def _regression_check(r: MaxRegression, c: PairedComparison, spec: GateSpec) -> GateCheck:
    check = GateCheck(r.name, "regression", r.metric, r.expression, r.max_drop, PASS, "",
                      baseline=c.baseline_mean, candidate=c.candidate_mean, delta=c.delta, ci95=c.ci95,
                      p_value=c.p_value, n=c.n, mde=c.mde)
    if c.n == 0:
        check.verdict, check.message = FAIL, f"no shared record has a {r.metric} score in both runs"
        return check
    drop = c.drop
    allowed = _num(r.max_drop)
    if c.p_value is None:
        check.verdict = WARN
        check.message = f"only {c.n} shared record scored: too few to tell a drop from noise"
    elif c.exceeds and c.significant:
        check.verdict = FAIL
        check.message = (f"dropped {drop:.4f} > {allowed}, significant: {_p_text(c.p_value)} < alpha "
                         f"{spec.alpha:g} (n={c.n})")
    elif c.exceeds:
        check.verdict = WARN
        check.message = (f"dropped {drop:.4f} > {allowed} but within noise: {_p_text(c.p_value)} >= alpha "
                         f"{spec.alpha:g} (n={c.n})")
    else:
        check.message = f"changed {c.delta:+.4f}, allowed drop {allowed}: {_p_text(c.p_value)} (n={c.n})"
    if check.verdict != FAIL and c.mde is not None and c.mde > r.max_drop:
        needed = required_pairs(c.sd, r.max_drop, alpha=spec.alpha)
        check.message += (f"; low power: minimum detectable effect {c.mde:.4f} > {allowed} "
                          f"(80% power, sd of differences {c.sd:.4f}"
                          + (f"; ~{needed} pairs needed)" if needed else ")"))
        if check.verdict == PASS:
            check.verdict = WARN
    return check


def _error_rate_check(limit: float, candidate: RunResult) -> GateCheck:
    counts = candidate.results.get("counts") or {}
    total, errors = counts.get("records"), counts.get("errors")
    if not isinstance(total, int) or not isinstance(errors, int):
        total = len(candidate.records)
        errors = sum(1 for r in candidate.records if r.get("error") is not None)
    rate = errors / total if total else 0.0
    check = GateCheck(f"error rate <= {_num(limit)}", "error_rate", None, f"error_rate<={_num(limit)}", limit,
                      PASS, f"{errors} of {total} generations failed ({rate:.2%})", candidate=rate, n=total)
    if rate > limit:
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


def evaluate_gate(candidate: RunResult, spec: GateSpec, baseline: RunResult | None = None) -> GateResult:
    """Run every check of ``spec`` on a finished candidate run (and baseline run)."""
    result = GateResult([], alpha=spec.alpha, n_resamples=spec.n_resamples, seed=spec.seed,
                        candidate=str(candidate.output_dir), candidate_records=len(candidate.records))
    result.checks.extend(_threshold_check(t, candidate) for t in spec.thresholds)
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
        for r in spec.regressions:
            comparison = compare(paired_scores(base_index, cand_index, r.metric), max_drop=r.max_drop,
                                 alpha=spec.alpha, seed=spec.seed, n_resamples=spec.n_resamples)
            result.checks.append(_regression_check(r, comparison, spec))
    if spec.max_error_rate is not None:
        result.checks.append(_error_rate_check(spec.max_error_rate, candidate))
    return result


def publish_gate(result: GateResult, candidate: RunResult, *, junit: str | Path | None = None,
                 summary_md: str | Path | None = None) -> list[Path]:
    """Write the verdict: a ``gate`` section in the candidate's results.json (atomically), its
    report.html re-rendered when there is one, and the optional JUnit XML and Markdown files."""
    from evalkit.gate_output import write_junit, write_summary_md

    written = []
    results_path = Path(candidate.output_dir) / RESULTS_FILE
    candidate.results["gate"] = result.to_dict()
    atomic_write_json(results_path, candidate.results)
    written.append(results_path)
    report = Path(candidate.output_dir) / REPORT_FILE
    if report.is_file():
        from evalkit.report.html import write_report

        write_report(report, candidate.results, candidate.records)
        written.append(report)
    if junit:
        write_junit(junit, result)
        written.append(Path(junit))
    if summary_md:
        write_summary_md(summary_md, result)
        written.append(Path(summary_md))
    return written
