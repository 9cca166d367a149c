"""`evalkit gate` and `evalkit run --threshold/--baseline`: known-truth cases on really scored runs."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from evalkit.cli import main
from tests.helpers import write_jsonl


def _first_sentence(record: dict) -> str:
    return record["document"].split(". ")[0] + "."


@pytest.fixture(scope="module")
def runs(tmp_path_factory, news_records) -> dict[str, Path]:
    """Baseline and candidates, each scored by evalkit from its own outputs (30 records)."""
    root = tmp_path_factory.mktemp("gate")
    rows = news_records[:30]
    variants = {
        "baseline": [_first_sentence(r) for r in rows],
        "same": [_first_sentence(r) for r in rows],
        "cut": [" ".join(_first_sentence(r).split()[:2]) for r in rows],
        "two_changed": [_first_sentence(r) if i not in (4, 19) else rows[(i + 9) % 30]["summary"]
                        for i, r in enumerate(rows)],
        "five_only": [_first_sentence(r) for r in rows[:5]],
    }
    out = {}
    for name, outputs in variants.items():
        data = write_jsonl(root / f"{name}.jsonl", [dict(r, output=o) for r, o in zip(rows, outputs, strict=False)])
        out[name] = root / name
        assert main(["run", "summarization", "--dataset", str(data), "--output-field", "output", "--output-dir",
                     str(out[name]), "--no-progress"]) == 0
    return out


def gate(*args: str) -> int:
    return main(["gate", *args])


REGRESSIONS = ["--max-regression", "rouge2=0.02", "--max-regression", "bertscore=0.01"]


def test_identical_runs_pass(runs, capsys):
    assert gate("--candidate", str(runs["same"]), "--baseline", str(runs["baseline"]), *REGRESSIONS) == 0
    out = capsys.readouterr().out
    assert "gate: PASSED" in out and "30 shared ids" in out


def test_outputs_cut_to_two_words_fail_with_junit_markdown_and_results(runs, tmp_path, capsys):
    junit, summary = tmp_path / "gate.xml", tmp_path / "gate.md"
    code = gate("--candidate", str(runs["cut"]), "--baseline", str(runs["baseline"]), *REGRESSIONS,
                "--junit", str(junit), "--summary-md", str(summary))
    assert code == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "gate: FAILED (2 of 2 checks)" in out
    suite = ET.parse(junit).getroot()
    cases = suite.findall(".//testcase")
    assert len(cases) == 2 and all(c.find("failure") is not None for c in cases)
    assert suite.get("failures") == "2"
    assert "FAILED" in summary.read_text() and "| rouge2 |" in summary.read_text()
    results = json.loads((runs["cut"] / "results.json").read_text())
    assert results["gate"]["passed"] is False and results["gate"]["failed_checks"] == 2
    assert "rouge2 dropped by" in (runs["cut"] / "report.html").read_text()


def test_two_of_thirty_changed_outputs_pass_as_noise(runs, capsys):
    code = gate("--candidate", str(runs["two_changed"]), "--baseline", str(runs["baseline"]), *REGRESSIONS)
    out = capsys.readouterr().out
    assert code == 0 and "gate: PASSED" in out
    assert "not significantly" in out and "minimum detectable effect" in out  # honest about power


@pytest.mark.parametrize(("expr", "code"), [
    ("rouge1>=0.3", 0), ("rouge1>0.99", 1), ("rouge1<0.3", 1), ("bertscore<=0.95", 0), ("meteor<0.01", 1),
])
def test_thresholds_pass_and_fail_as_written(runs, expr, code):
    assert gate("--candidate", str(runs["baseline"]), "--threshold", expr) == code


@pytest.mark.parametrize("args", [
    ["--threshold", "rouge2=>0.1"],
    ["--threshold", "nosuch>=0.1"],
    ["--threshold", "rouge2>=abc"],
    ["--max-regression", "rouge2>=0.1", "--baseline", "BASE"],
    ["--max-regression", "rouge2=0.1"],  # no --baseline
    ["--baseline", "/nonexistent/run", "--max-regression", "rouge2=0.1"],
])
def test_bad_gate_input_exits_2_with_one_line(runs, args, capsys):
    args = [str(runs["baseline"]) if a == "BASE" else a for a in args]
    assert gate("--candidate", str(runs["same"]), *args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("evalkit: error:") and "Traceback" not in err[0]


def test_few_shared_ids_warn(runs, capsys):
    assert gate("--candidate", str(runs["five_only"]), "--baseline", str(runs["baseline"]), *REGRESSIONS) == 0
    assert "warning" in capsys.readouterr().out.lower()


def test_error_rate_above_limit_is_a_runtime_failure(runs, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(runs["same"], broken)
    results = json.loads((broken / "results.json").read_text())
    results["counts"].update(errors=6, scored=24)
    (broken / "results.json").write_text(json.dumps(results))
    assert gate("--candidate", str(broken), "--max-error-rate", "0.1") == 3
    assert gate("--candidate", str(broken), "--max-error-rate", "0.5") == 0


def test_run_gates_right_after_the_run(tmp_path, news_records):
    data = write_jsonl(tmp_path / "d.jsonl", [dict(r, output=_first_sentence(r)) for r in news_records[:8]])
    out = tmp_path / "run"
    code = main(["run", "summarization", "--dataset", str(data), "--output-field", "output", "--output-dir", str(out),
                 "--no-progress", "--threshold", "rouge1>=0.99"])
    assert code == 1
    results = json.loads((out / "results.json").read_text())
    assert results["gate"]["passed"] is False and (out / "records.jsonl").is_file()
    # a typo is caught before anything runs
    assert main(["run", "summarization", "--dataset", str(data), "--output-field", "output", "--output-dir",
                 str(tmp_path / "never"), "--threshold", "rouge9>=0.1"]) == 2
    assert not (tmp_path / "never").exists()
