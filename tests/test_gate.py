"""`evalkit gate` and `evalkit run --threshold/--baseline`: known-truth cases on really scored runs.

Four runs are scored by evalkit from their own outputs (30 news records each): the baseline, the same
outputs again, every output cut to two words (gated right after its run, as in CI), and two of thirty
outputs replaced. Cases about input handling edit copies of those run directories.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from evalkit.cli import main
from evalkit.gate.checks import FAIL, PASS, WARN, GateCheck, GateResult
from evalkit.gate.output import format_gate_table, junit_xml, md_escape, summary_markdown
from tests.helpers import read_jsonl, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
REGRESSIONS = ["--max-regression", "rouge2=0.02", "--max-regression", "bertscore=0.01"]


def _first_sentence(record: dict) -> str:
    return record["document"].split(". ")[0] + "."


def _run(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(args))
    return code, out.getvalue()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, news_records) -> dict:
    root = tmp_path_factory.mktemp("gate")
    rows = news_records[:30]
    variants = {
        "baseline": [_first_sentence(r) for r in rows],
        "same": [_first_sentence(r) for r in rows],
        "two_changed": [_first_sentence(r) if i not in (4, 19) else rows[(i + 9) % 30]["summary"]
                        for i, r in enumerate(rows)],
        "cut": [" ".join(_first_sentence(r).split()[:2]) for r in rows],
    }
    out: dict = {"root": root}
    for name, outputs in variants.items():
        data = write_jsonl(root / f"{name}.jsonl", [dict(r, output=o) for r, o in zip(rows, outputs, strict=True)])
        out[name] = root / name
        args = ["run", "summarization", "--dataset", str(data), "--output-field", "output", "--output-dir",
                str(out[name]), "--no-progress"]
        if name == "cut":  # gated right after the run, as in CI
            args += ["--baseline", str(out["baseline"]), *REGRESSIONS, "--threshold", "rouge1>=0.99",
                     "--junit", str(root / "run-gate.xml"), "--summary-md", str(root / "run-gate.md")]
        elif name != "baseline":
            args.append("--no-report")
        out[f"{name}_code"], out[f"{name}_stdout"] = _run(*args)
        out[f"{name}_results"] = json.loads((out[name] / "results.json").read_text())
    return out


def gate(*args: str) -> int:
    return main(["gate", *args])


def _copy(runs: dict, name: str, tmp_path: Path) -> Path:
    target = tmp_path / f"{name}-copy"
    shutil.copytree(runs[name], target)
    return target


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _edit_records(run_dir: Path, edit) -> None:
    path = run_dir / "records.jsonl"
    rows = read_jsonl(path)
    rows = edit(rows)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_identical_runs_pass_and_the_verdict_is_deterministic(runs, capsys):
    assert runs["same_code"] == 0
    args = ["--candidate", str(runs["same"]), "--baseline", str(runs["baseline"]), *REGRESSIONS]
    assert gate(*args) == 0
    out = capsys.readouterr().out
    assert "30 shared ids" in out and out.rstrip().endswith("gate: PASSED")
    first = json.loads((runs["same"] / "results.json").read_text())["gate"]
    for check in first["checks"].values():
        assert (check["verdict"], check["delta"], check["ci95_low"], check["ci95_high"], check["p_value"]) == (
            PASS, 0.0, 0.0, 0.0, 1.0)
    assert gate(*args) == 0
    again = json.loads((runs["same"] / "results.json").read_text())["gate"]
    assert {**first, "created_at": None} == {**again, "created_at": None}


def test_run_with_gate_options_gates_right_after_writing_its_files(runs):
    """Every output cut to two words, scored by evalkit, gated by `evalkit run`: exit 1."""
    assert runs["cut_code"] == 1
    out = runs["cut_stdout"]
    assert "records 30, scored 30" in out and "gate: FAILED (3 of 3 checks)" in out
    for column in ("check", "metric", "n", "baseline", "candidate", "delta", "95% CI", "p", "Holm p", "verdict"):
        assert column in out
    assert {"results.json", "records.jsonl", "report.html"} <= {p.name for p in runs["cut"].iterdir()}
    section = runs["cut_results"]["gate"]
    assert section["passed"] is False and section["exit_code"] == 1 and section["failed_checks"] == 3
    assert section["baseline"] == str(runs["baseline"]) and section["shared_ids"] == 30
    drop = section["checks"]["rouge2 drop <= 0.02"]
    assert drop["verdict"] == FAIL and drop["delta"] < -0.2 and drop["p_value"] < 0.001
    assert drop["ci95_high"] < -0.02 and drop["n"] == 30
    threshold = section["checks"]["rouge1 >= 0.99"]
    assert threshold["verdict"] == FAIL and threshold["candidate"] == runs["cut_results"]["metrics"]["rouge1"]["mean"]
    suite = ET.parse(runs["root"] / "run-gate.xml").getroot()
    assert suite.get("failures") == "3" and len(suite.findall(".//testcase/failure")) == 3


def test_outputs_cut_to_two_words_fail_with_junit_markdown_results_and_report(runs, tmp_path, capsys):
    junit, summary = tmp_path / "gate.xml", tmp_path / "gate.md"
    code = gate("--candidate", str(runs["cut"]), "--baseline", str(runs["baseline"]), *REGRESSIONS,
                "--junit", str(junit), "--summary-md", str(summary))
    assert code == 1
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "FAIL: rouge2 drop <= 0.02: dropped" in out and "gate: FAILED (2 of 2 checks)" in lines
    assert lines[lines.index("gate: FAILED (2 of 2 checks)") + 1] == f"wrote {runs['cut'] / 'report.html'}"
    root = ET.parse(junit).getroot()
    cases = root.findall(".//testcase")
    assert [c.get("name") for c in cases] == ["rouge2 drop <= 0.02", "bertscore drop <= 0.01"]
    failures = [c.find("failure") for c in cases]
    assert all(f is not None and "significant" in f.get("message") for f in failures)
    assert root.get("tests") == "2" and root.get("failures") == "2"
    md = summary.read_text()
    assert md.startswith("### evalkit gate: ❌ FAILED (2 of 2 checks)")
    assert "| check | metric | n | baseline | candidate | delta | 95% CI | p | Holm p | verdict |" in md
    assert "| max drop 0.02 | rouge2 |" in md and md.count("❌ FAIL |") == 2 and "\\<0.0001" in md
    results = json.loads((runs["cut"] / "results.json").read_text())
    assert results["gate"]["passed"] is False and set(results["gate"]["checks"]) == {
        "rouge2 drop <= 0.02", "bertscore drop <= 0.01"}
    assert results["metrics"] == runs["cut_results"]["metrics"]  # the gate adds, never rewrites scores
    html = (runs["cut"] / "report.html").read_text()
    assert "CI gate" in html and "rouge2 drop &lt;= 0.02" in html


def test_the_process_exit_code_is_the_gate_verdict(runs):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "evalkit", "gate", "--candidate", str(runs["cut"]), "--baseline",
                           str(runs["baseline"]), "--max-regression", "rouge2=0.02"], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "gate: FAILED (1 of 1 checks)" in proc.stdout


def test_two_of_thirty_changed_outputs_pass_as_noise(runs, capsys):
    code = gate("--candidate", str(runs["two_changed"]), "--baseline", str(runs["baseline"]), *REGRESSIONS)
    out = capsys.readouterr().out
    assert code == 0 and out.rstrip().endswith("gate: PASSED")
    checks = json.loads((runs["two_changed"] / "results.json").read_text())["gate"]["checks"]
    rouge2 = checks["rouge2 drop <= 0.02"]
    assert rouge2["delta"] < -0.02 and rouge2["p_value"] > 0.05 and rouge2["verdict"] == WARN  # a drop, but noise
    assert "within noise" in rouge2["message"] and "minimum detectable effect" in rouge2["message"]
    assert rouge2["mde"] > 0.02  # honest about what 30 samples can detect


def test_thresholds_pass_and_fail_as_written(runs):
    mean = runs["same_results"]["metrics"]["rouge1"]["mean"]
    candidate = ["--candidate", str(runs["same"])]
    cases = {f"rouge1>={mean!r}": 0, f"rouge1>{mean!r}": 1, f"rouge1<={mean!r}": 0, f"rouge1<{mean!r}": 1,
             "rouge1>=0.3": 0, "rouge1 > 0.99": 1, "rouge1<0.3": 1, "bertscore <= 0.95": 0, "meteor<0.01": 1}
    assert {expr: gate(*candidate, "--threshold", expr) for expr in cases} == cases
    assert gate(*candidate, "--threshold", "rouge1>=0.3", "--threshold", "rouge2>=0.99") == 1  # all must hold


@pytest.mark.parametrize(("args", "message"), [
    (["--threshold", "rouge2=>0.1"], "--threshold 'rouge2=>0.1': expected METRIC OP VALUE"),
    (["--threshold", "nosuch>=0.1"], "unknown metric 'nosuch'"),
    (["--threshold", "rougel>=0.1"], "did you mean 'rougeL'?"),
    (["--threshold", "rouge2>=abc"], "'abc' is not a number"),
    (["--threshold", "rouge2=0.1"], "METRIC=DELTA is the --max-regression syntax"),
    (["--max-regression", "rouge2>=0.1", "--baseline", "BASE"], "expected METRIC=DELTA"),
    (["--max-regression", "rouge2=-0.1", "--baseline", "BASE"], "must be >= 0"),
    (["--max-regression", "rouge2=0.1"], "needs --baseline"),
    (["--baseline", "BASE"], "needs at least one --max-regression"),
    (["--baseline", "/nonexistent/run", "--max-regression", "rouge2=0.1"], "/nonexistent/run: baseline run "
                                                                           "directory not found"),
    (["--alpha", "0.7", "--threshold", "rouge2>=0.1"], "significance level"),
    ([], "nothing to gate"),
])
def test_bad_gate_input_exits_2_with_one_clear_line(runs, args, message, capsys):
    args = [str(runs["baseline"]) if a == "BASE" else a for a in args]
    assert gate("--candidate", str(runs["same"]), *args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("evalkit: error:") and message in err[-1] and "Traceback" not in "".join(err)


def test_unusable_run_directories_exit_2_naming_the_path(runs, tmp_path, capsys):
    base = ["--max-regression", "rouge2=0.02"]
    missing_metric = _copy(runs, "baseline", tmp_path)
    _edit_json(missing_metric / "results.json", lambda r: r["metrics"].pop("rouge2"))
    malformed = _copy(runs, "baseline", tmp_path / "m")
    (malformed / "results.json").write_text("{not json")
    no_records = _copy(runs, "baseline", tmp_path / "n")
    (no_records / "records.jsonl").unlink()
    other_ids = _copy(runs, "baseline", tmp_path / "o")
    _edit_records(other_ids, lambda rows: [dict(r, id=f"other-{i}") for i, r in enumerate(rows)])
    cases = [(missing_metric, "metric 'rouge2'"), (malformed, "results.json:1: baseline run: malformed JSON"),
             (no_records, "records.jsonl: baseline run: not a finished run directory"),
             (other_ids, "no shared ids")]
    for directory, message in cases:
        assert gate("--candidate", str(runs["same"]), "--baseline", str(directory), *base) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err and str(directory) in err, err
    assert gate("--candidate", str(tmp_path / "nope"), "--threshold", "rouge2>=0.1") == 2
    assert f"{tmp_path / 'nope'}: candidate run directory not found" in capsys.readouterr().err


def test_few_shared_ids_and_mismatched_runs_warn(runs, tmp_path, capsys):
    few = _copy(runs, "same", tmp_path)
    _edit_records(few, lambda rows: rows[:6])
    assert gate("--candidate", str(few), "--baseline", str(runs["baseline"]), *REGRESSIONS) == 0
    out = capsys.readouterr().out
    assert "6 shared ids" in out and "warning: only 6 shared ids (candidate 6, baseline 30" in out
    odd = _copy(runs, "same", tmp_path / "odd")
    _edit_json(odd / "results.json", lambda r: r["metric_settings"]["bertscore"].update(model="other-model"))
    _edit_records(odd, lambda rows: [dict(r, target_output="changed") if i == 3 else r for i, r in enumerate(rows)])
    assert gate("--candidate", str(odd), "--baseline", str(runs["baseline"]), *REGRESSIONS) == 0
    warnings = json.loads((odd / "results.json").read_text())["gate"]["warnings"]
    assert any("bertscore settings differ" in w and "other-model" in w for w in warnings)
    assert any("1 of 30 shared ids have different references" in w for w in warnings)




def test_a_typo_is_caught_before_anything_runs(tmp_path, news_records):
    data = write_jsonl(tmp_path / "d.jsonl", [dict(r, output="x") for r in news_records[:3]])
    for extra in (["--threshold", "rouge9>=0.1"], ["--baseline", str(tmp_path / "none"), *REGRESSIONS]):
        assert main(["run", "summarization", "--dataset", str(data), "--output-field", "output", "--output-dir",
                     str(tmp_path / "never"), "--no-progress", *extra]) == 2
        assert not (tmp_path / "never").exists()


def test_outputs_escape_names_paths_and_messages():
    weird = 'runs/<a href="x">&amp;|`*_[x]\x1b\ud800'
    check = GateCheck('m "<&>" drop <= 0.1', "regression", "m<&>", "m=0.1", 0.1, FAIL,
                      'dropped </failure><x a="1"> | ]]> \x00', baseline=0.5, candidate=0.2, delta=-0.3,
                      ci95=(-0.4, -0.2), p_value=0.0, n=12, mde=0.05)
    result = GateResult([check], warnings=["few <ids> | & more\nsecond line"], candidate=weird, baseline=weird,
                        shared_ids=12, candidate_records=12, baseline_records=12)
    root = ET.fromstring(junit_xml(result).split("\n", 1)[1].encode())
    case = root.find(".//testcase")
    assert case.get("name") == check.name
    assert case.find("failure").get("message") == 'dropped </failure><x a="1"> | ]]> \ufffd'
    assert root.find(".//property[@name='candidate']").get("value") == 'runs/<a href="x">&amp;|`*_[x]\ufffd\ufffd'
    md = summary_markdown(result)
    assert "\\<a href" in md and "<a href" not in md.replace("\\<a href", "")
    table_rows = [line for line in md.splitlines() if line.startswith("| ")]
    assert all(line.count(" | ") == 9 for line in table_rows)  # no cell broke out of its column
    assert md_escape("a|b\nc") == "a\\|b c"
    text = format_gate_table(result)
    assert text.splitlines()[-1] == "gate: FAILED (1 of 1 checks)" and "warning: few <ids>" in text


@pytest.mark.parametrize("name", ["github-actions.yml", "gitlab-ci.yml"])
def test_ci_examples_use_options_that_exist(name):
    """The examples are not run here; at least their evalkit command must parse and validate."""
    import re
    import shlex

    yaml = pytest.importorskip("yaml")
    from evalkit.cli import build_parser
    from evalkit.gate.checks import parse_gate_spec, task_columns

    doc = yaml.safe_load((ROOT / "examples" / "ci" / name).read_text())
    scripts = [step.get("run", "") for job in doc.get("jobs", {}).values() for step in job["steps"]]
    scripts += [line for job in doc.values() if isinstance(job, dict) for line in job.get("script", [])]
    commands = [s for s in scripts if "evalkit run" in s]
    assert len(commands) == 1
    command = re.sub(r"\$\{\{[^}]*\}\}", "X", commands[0])  # GitHub expressions are substituted first
    tokens = shlex.split(command.replace("\\\n", " "))
    args = build_parser().parse_args(tokens[tokens.index("run"):])
    assert args.baseline and args.junit and args.summary_md and args.threshold and args.max_regression
    spec = parse_gate_spec(thresholds=args.threshold, max_regressions=args.max_regression, alpha=args.alpha,
                           max_error_rate=args.max_error_rate, has_baseline=True)
    spec.validate_metrics(task_columns("summarization"))


# ------------------------------------------------------------------------------------------------
# statistics valid at every sample size, errors as data


def _write_run(directory: Path, scores: dict[str, list[float | None]], *, errors: dict[int, str] | None = None,
               ranges: dict[str, list[float]] | None = None, lower_is_better: tuple[str, ...] = ()) -> Path:
    """A finished run directory holding the given per-record scores (None: that metric failed on the record;
    ``errors``: records whose generation failed)."""
    from evalkit.statistics.summary import summarize

    n = len(next(iter(scores.values())))
    records = []
    for i in range(n):
        error = (errors or {}).get(i)
        row_scores = {} if error else {m: v[i] for m, v in scores.items() if v[i] is not None}
        failed = {} if error else {m: "metric failed" for m, v in scores.items() if v[i] is None}
        records.append({"id": f"r{i}", "scores": row_scores, "error": error, "score_errors": failed,
                        "target_output": "ref"})
    metrics = {}
    for m in scores:
        kept = [r["scores"].get(m) for r in records]
        metrics[m] = {**summarize(kept, errors=sum(v is None for v in kept)).to_dict(),
                      "range": (ranges or {}).get(m, [0.0, 1.0])}
        if lower_is_better:
            metrics[m]["higher_is_better"] = m not in lower_is_better
    directory.mkdir(parents=True)
    (directory / "results.json").write_text(json.dumps({"metrics": metrics}))
    write_jsonl(directory / "records.jsonl", records)
    return directory


def _checks(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())["gate"]["checks"]


def test_two_pairs_warn_instead_of_failing_the_issue_case(tmp_path, capsys):
    """Baseline rouge1 [0.5, 0.5], candidate [0.4, 0.2], allowed drop 0.02: the bootstrap gate FAILed with
    "p<0.0001" and "minimum detectable effect 0.0000". Two pairs cannot tell a drop from noise."""
    base = _write_run(tmp_path / "base", {"rouge1": [0.5, 0.5]})
    cand = _write_run(tmp_path / "cand", {"rouge1": [0.4, 0.2]})
    assert gate("--candidate", str(cand), "--baseline", str(base), "--max-regression", "rouge1=0.02") == 0
    check = _checks(cand)["rouge1 drop <= 0.02"]
    assert check["verdict"] == WARN and check["p_value"] == 0.25 and check["test"] == "sign-flip (exact)"
    assert "too few pairs for a verdict" in check["message"] and "at least 5 pairs" in check["message"]
    assert check["mde"] is None and check["ci95_low"] < -1.0  # t interval with 1 degree of freedom
    one = _write_run(tmp_path / "one", {"rouge1": [0.1]})
    base_one = _write_run(tmp_path / "base-one", {"rouge1": [0.5]})
    assert gate("--candidate", str(one), "--baseline", str(base_one), "--max-regression", "rouge1=0.02") == 0
    assert _checks(one)["rouge1 drop <= 0.02"]["verdict"] == WARN
    capsys.readouterr()


def test_holm_across_regression_checks_reports_raw_and_adjusted_p(tmp_path):
    """Two metrics that each drop with one-sided p ~ 0.03 (paired t-test, n = 100): alone either check
    FAILs; together Holm adjusts both to ~0.06 and neither may."""
    import numpy as np
    from scipy import stats as scipy_stats

    n, sd, delta = 100, 0.1, 0.02
    x = np.random.default_rng(0).normal(size=n)
    x = (x - x.mean()) / x.std(ddof=1)
    d = x * sd + (-1.9 * sd / np.sqrt(n) - delta)  # shifted mean has t = -1.9 exactly
    raw = scipy_stats.ttest_1samp(d + delta, 0.0, alternative="less").pvalue
    assert 0.025 < raw < 0.05 < 2 * raw
    base_scores = np.full(n, 0.5)
    base = _write_run(tmp_path / "base", {"a": list(base_scores), "b": list(base_scores)},
                      ranges={"a": [-10, 10], "b": [-10, 10]})
    cand = _write_run(tmp_path / "cand", {"a": list(base_scores + d), "b": list(base_scores + d)},
                      ranges={"a": [-10, 10], "b": [-10, 10]})
    assert gate("--candidate", str(cand), "--baseline", str(base), "--max-regression", f"a={delta}") == 1
    assert _checks(cand)["a drop <= 0.02"]["p_adjusted"] == pytest.approx(raw)
    assert gate("--candidate", str(cand), "--baseline", str(base), "--max-regression", f"a={delta}",
                "--max-regression", f"b={delta}") == 0
    for check in _checks(cand).values():
        assert check["p_value"] == pytest.approx(raw) and check["p_adjusted"] == pytest.approx(2 * raw)
        assert check["verdict"] == WARN and "Holm p=" in check["message"]


def test_thresholds_use_the_float_tolerance_warn_on_one_record_and_never_share_a_name(tmp_path):
    run = _write_run(tmp_path / "run", {"rouge1": [0.02, 0.02, 0.4099999999999999]})
    mean = json.loads((run / "results.json").read_text())["metrics"]["rouge1"]["mean"]
    assert mean < 0.15 and mean == pytest.approx(0.15, abs=1e-15)  # 0.14999999999999997
    assert gate("--candidate", str(run), "--threshold", "rouge1>=0.15") == 0  # equal up to rounding
    assert gate("--candidate", str(run), "--threshold", "rouge1<0.15") == 1
    assert gate("--candidate", str(run), "--threshold", "rouge1>=0.15", "--threshold", "rouge1>=0.150000001") == 1
    assert set(_checks(run)) == {"rouge1 >= 0.15", "rouge1 >= 0.150000001"}  # both kept, one failed
    single = _write_run(tmp_path / "single", {"rouge1": [0.9]})
    assert gate("--candidate", str(single), "--threshold", "rouge1>=0.5") == 0
    check = _checks(single)["rouge1 >= 0.5"]
    assert check["verdict"] == WARN and "single record" in check["message"]


def test_a_candidate_that_errors_on_its_hard_samples_fails_by_default(tmp_path, capsys):
    """30 records; the candidate equals the baseline except that it errored on the 6 hardest ones, where the
    baseline scored well. Skipping errors (the old behaviour) would pass it."""
    import numpy as np

    rng = np.random.default_rng(3)
    scores = list(rng.uniform(0.3, 0.5, 30))
    hard = {i: "TimeoutError: no answer" for i in range(6)}
    for i in hard:
        scores[i] = 0.9
    base = _write_run(tmp_path / "base", {"rouge2": scores})
    cand = _write_run(tmp_path / "cand", {"rouge2": scores}, errors=hard)
    args = ["--candidate", str(cand), "--baseline", str(base), "--max-regression", "rouge2=0.02",
            "--threshold", "rouge2>=0.4"]
    assert gate(*args) == 1
    checks = _checks(cand)
    drop = checks["rouge2 drop <= 0.02"]
    assert drop["verdict"] == FAIL and drop["n"] == 30 and drop["errors"] == 6 and drop["dropped"] == 0
    assert drop["delta"] == pytest.approx(-0.9 * 6 / 30)  # each errored record counted at 0, rouge2's worst
    assert "6 errored, counted as failed (rouge2 0)" in drop["message"]
    assert checks["rouge2 >= 0.4"]["verdict"] == FAIL  # the mean counts the failures too
    out = capsys.readouterr().out
    assert "30 (6 err)" in out and "--on-error fail" in out
    assert gate(*args, "--on-error", "zero") == 1
    assert gate(*args, "--on-error", "skip") == 0
    skipped = _checks(cand)["rouge2 drop <= 0.02"]
    assert skipped["n"] == 24 and skipped["dropped"] == 6 and skipped["delta"] == 0.0
    worst = _write_run(tmp_path / "bert", {"bertscore": scores}, errors=hard, ranges={"bertscore": [-1.0, 1.0]})
    base_bert = _write_run(tmp_path / "bert-base", {"bertscore": scores}, ranges={"bertscore": [-1.0, 1.0]})
    assert gate("--candidate", str(worst), "--baseline", str(base_bert), "--max-regression", "bertscore=0.02") == 1
    assert _checks(worst)["bertscore drop <= 0.02"]["delta"] == pytest.approx(-1.9 * 6 / 30)  # worst is -1
    capsys.readouterr()


def test_where_lower_is_better_a_rise_is_the_regression_and_errors_count_as_the_high_end(tmp_path, capsys):
    """A refusal rate that rises from 0.1 to 0.5 on 40 records is a regression; one that falls is not. An
    errored record counts as a refusal (the worst value, 1), not as 0 (the best)."""
    base_refusal = [1.0] * 4 + [0.0] * 36
    worse = [1.0] * 20 + [0.0] * 20
    better = [0.0] * 40
    base = _write_run(tmp_path / "base", {"refusal": base_refusal}, lower_is_better=("refusal",))
    rose = _write_run(tmp_path / "rose", {"refusal": worse}, lower_is_better=("refusal",))
    fell = _write_run(tmp_path / "fell", {"refusal": better}, lower_is_better=("refusal",))
    assert gate("--candidate", str(rose), "--baseline", str(base), "--max-regression", "refusal=0.05") == 1
    check = _checks(rose)["refusal drop <= 0.05"]
    assert check["verdict"] == FAIL and check["delta"] == pytest.approx(0.4)
    assert check["baseline"] == pytest.approx(0.1) and check["candidate"] == pytest.approx(0.5)
    assert 0 < check["ci95_low"] < 0.4 < check["ci95_high"]
    assert "rose (lower is better) 0.4000 > 0.05" in check["message"]
    assert gate("--candidate", str(fell), "--baseline", str(base), "--max-regression", "refusal=0.05") == 0
    check = _checks(fell)["refusal drop <= 0.05"]
    assert check["verdict"] != FAIL and check["delta"] == pytest.approx(-0.1)
    # errored records: the worst value of a lower-is-better metric is the high end of its range
    errored = _write_run(tmp_path / "errored", {"refusal": better}, errors={i: "timeout" for i in range(16)},
                         lower_is_better=("refusal",))
    assert gate("--candidate", str(errored), "--baseline", str(base), "--max-regression", "refusal=0.05") == 1
    check = _checks(errored)["refusal drop <= 0.05"]
    assert check["delta"] == pytest.approx((16 - 4) / 40) and "counted as failed (refusal 1)" in check["message"]
    capsys.readouterr()
