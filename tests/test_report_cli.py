"""evalkit report DIR [DIR ...] -o FILE.html: one report from finished runs made at different times, and from
runs of different kinds; the pairwise statistics recomputed from the records; every bad input refused before
anything is written."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from evalkit.cli import main
from tests.browser import dump_dom
from tests.helpers import read_jsonl, write_jsonl

QUESTIONS = [(f"What is fact {i}?", f"Fact {i} is that the {w} hub uses port {8000 + i}.")
             for i, w in enumerate("red green blue amber violet teal olive coral ivory slate".split())]
HOSTILE = "<script>document.title='pwned'</script><img src=x onerror=alert(1)> {{ 7*7 }}"


def _run(tmp_path: Path, name: str, answers: list[str]) -> Path:
    rows = [{"id": f"q{i}", "question": q, "answer": a, "output": o}
            for i, ((q, a), o) in enumerate(zip(QUESTIONS, answers, strict=True))]
    dataset = write_jsonl(tmp_path / f"{name}.jsonl", rows)
    out = tmp_path / name
    assert main(["run", "qa", "--dataset", str(dataset), "--output-field", "output", "--metrics", "rouge,meteor",
                 "--output-dir", str(out), "--no-progress"]) == 0
    return out


@pytest.fixture()
def two_runs(tmp_path):
    """Last release's answers (exact) and today's (half of them cut to three words, one hostile)."""
    exact = [a for _, a in QUESTIONS]
    today = [" ".join(a.split()[:3]) if i % 2 else a for i, a in enumerate(exact)]
    today[3] = HOSTILE
    return _run(tmp_path, "release-1.0", exact), _run(tmp_path, "candidate", today)


def _records(run_dir: Path) -> dict[str, dict]:
    return {r["id"]: r for r in read_jsonl(run_dir / "records.jsonl")}


def test_two_runs_made_at_different_times_compared_pair_by_pair(two_runs, tmp_path, capsys):
    old, new = two_runs
    out = tmp_path / "both.html"
    assert main(["report", str(old), str(new), "-o", str(out)]) == 0
    assert "2 runs compared" in capsys.readouterr().out
    html = out.read_text(encoding="utf-8")
    assert "release-1.0 vs candidate" in html and "What was evaluated" in html and "Win rates" in html
    # the pair's numbers, recomputed from the two records files
    a, b = _records(old), _records(new)
    d = np.array([a[k]["scores"]["rougeL"] - b[k]["scores"]["rougeL"] for k in a])
    row = re.search(r"release-1\.0 vs candidate</td><td[^>]*>rougeL</td><td class=\"num\">([-\d.]+)</td>", html)
    assert row and float(row.group(1)) == pytest.approx(d.mean(), abs=5e-5)
    wins = int((d > 1e-12).sum())
    assert f"{wins}/{len(d) - wins}/0" in html  # W/T/L: today's answers never beat the exact ones
    assert "bertscore_precision" not in html  # secondary columns are left out by default
    assert "<script>document.title" not in html and "&lt;script&gt;document.title" in html


def test_a_comparison_and_a_run_side_by_side_and_one_directory_alone(two_runs, tmp_path):
    old, _ = two_runs
    for name, answers in (("good", [a for _, a in QUESTIONS]), ("bad", ["I don't know."] * len(QUESTIONS))):
        write_jsonl(tmp_path / f"{name}-out.jsonl", [{"id": f"q{i}", "output": o} for i, o in enumerate(answers)])
    (tmp_path / "compare.yaml").write_text(
        "task: qa\ndataset: {path: release-1.0.jsonl}\nsystems:\n  - {name: good, outputs: good-out.jsonl}\n"
        "  - {name: bad, outputs: bad-out.jsonl}\nmetrics: [rougeL]\nrequire: ['good > bad on rougeL']\n"
        "output_dir: cmp\n")
    assert main(["compare", "--config", str(tmp_path / "compare.yaml"), "--no-progress"]) == 0
    out = tmp_path / "mixed.html"
    assert main(["report", str(tmp_path / "cmp"), str(old), "-o", str(out), "--metrics", "rougeL"]) == 0
    html = out.read_text(encoding="utf-8")
    assert "Verdict: cmp" in html and "good &gt; bad on rougeL" in html  # the comparison's require rule
    assert "cmp/good vs cmp/bad" in html and "cmp/good vs release-1.0" in html
    assert "evalkit compare qa" in html and "evalkit run qa" in html
    alone = tmp_path / "alone.html"
    assert main(["report", str(tmp_path / "cmp"), "-o", str(alone)]) == 0
    assert "Requirements" in alone.read_text(encoding="utf-8")


def test_bad_inputs_exit_2_naming_the_directory_before_writing(two_runs, tmp_path, capsys):
    old, new = two_runs
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "results.json").write_text('{"metrics": {}\n')
    (broken / "records.jsonl").write_text("")
    out = tmp_path / "never.html"
    cases = [([str(old), str(tmp_path / "nowhere")], "nowhere"),
             ([str(old), str(tmp_path)], "not a finished evalkit output directory"),
             ([str(old), str(broken)], "results.json:2"),
             ([str(old), str(old)], "the same directory is given twice"),
             ([str(old), str(new), "--metrics", "bleu"], "unknown metric 'bleu'")]
    for argv, message in cases:
        assert main(["report", *argv, "-o", str(out)]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
        assert not out.exists()
    assert main(["report", str(old), "-o", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


@pytest.mark.browser
def test_the_multi_run_report_in_the_browser(two_runs, tmp_path):
    old, new = two_runs
    out = tmp_path / "both.html"
    assert main(["report", str(old), str(new), "-o", str(out)]) == 0
    dom = dump_dom(out)
    title = re.search(r"<title>(.*?)</title>", dom, re.S).group(1)
    assert "pwned" not in title and '<img src="x" onerror' not in dom
    assert "&lt;script&gt;document.title='pwned'&lt;/script&gt;" in dom and "{{ 7*7 }}" in dom
    assert "Showing 10 of 10 records" in dom  # the questions table's script ran


def test_runs_of_different_kinds_with_no_shared_ids_are_shown_not_compared(two_runs, tmp_path, news_records):
    old, _ = two_runs
    rows = [{"id": f"n{i}", "document": r["document"], "summary": r["summary"], "output": r["summary"]}
            for i, r in enumerate(news_records[:5])]
    dataset = write_jsonl(tmp_path / "news.jsonl", rows)
    summaries = tmp_path / "summaries"
    assert main(["run", "summarization", "--dataset", str(dataset), "--output-field", "output", "--metrics",
                 "rouge", "--output-dir", str(summaries), "--no-progress"]) == 0
    out = tmp_path / "kinds.html"
    assert main(["report", str(old), str(summaries), "-o", str(out)]) == 0
    html = out.read_text(encoding="utf-8")
    assert "release-1.0 and summaries share no record id" in html and "evaluated on different datasets" in html
    assert "release-1.0 vs summaries</td>" not in html  # no pairwise row without shared records
    assert "evalkit run summarization" in html and "evalkit run qa" in html
