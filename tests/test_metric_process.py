"""Model metrics in a process of their own (evalkit.scoring.child_process): `evalkit run` over outputs already
there starts BERTScore's imports and model load in a child at once and scores its chunks there. The scores must
be the library's, a child that cannot build its metric must fail the run with that metric's own error, and a
child that dies must be a crash, not a hang."""

from __future__ import annotations

import json
import shutil

import pytest

from evalkit.cli import main
from evalkit.errors import ResourceMissingError, RuntimeFailure, WorkerLost
from evalkit.scoring.base import DatasetView, Item, build_metrics
from evalkit.scoring.child_process import MetricProcess
from evalkit.scoring.chunks import score_isolated, score_metric
from tests.helpers import read_jsonl, scored_outputs, write_jsonl


def test_a_run_scores_bertscore_in_its_own_process_as_in_this_one(news_records, tmp_path):
    rows = scored_outputs(news_records, 40)
    data = write_jsonl(tmp_path / "outputs.jsonl", rows)
    out = tmp_path / "run"
    assert main(["run", "summarization", "--dataset", str(data), "--output-field", "output", "--no-progress",
                 "--no-report", "--output-dir", str(out), "--metrics", "rouge,bertscore"]) == 0
    records = read_jsonl(out / "records.jsonl")
    timings = json.loads((out / "results.json").read_text())["timings"]
    assert timings["load_bertscore_s"] > 0 and "first_score_s" in timings  # measured in the child, reported here
    (here,) = build_metrics(["bertscore"], {"bertscore": {"device": "cpu"}})
    expected = here.score([r["output"] for r in rows], [(r["summary"],) for r in rows])
    for column in ("bertscore", "bertscore_precision", "bertscore_recall"):
        got = [r["scores"][column] for r in records]
        assert max(abs(a - b) for a, b in zip(got, expected[column], strict=True)) <= 1e-6


def test_a_child_that_cannot_build_its_metric_fails_the_run_with_its_error(minilm_dir, news_records, tmp_path,
                                                                             capsys):
    """A model directory that passes the up-front check (it has a config.json) but holds no weights: the child's
    load fails, and the run ends with BERTScore's own message and exit 2, after ROUGE scored."""
    broken = tmp_path / "no-weights"
    broken.mkdir()
    shutil.copy(f"{minilm_dir}/config.json", broken / "config.json")
    child = MetricProcess("bertscore", {"model": str(broken), "num_layers": 6}, DatasetView([("a reference",)], [None]))
    try:
        with pytest.raises(ResourceMissingError, match="not available offline"):
            child.identity()
        with pytest.raises(ResourceMissingError):  # every later call says the same
            child.score_items([Item(output="x", references=("y",))])
    finally:
        child.close()
    data = write_jsonl(tmp_path / "outputs.jsonl", scored_outputs(news_records, 5))
    code = main(["run", "summarization", "--dataset", str(data), "--output-field", "output", "--no-progress",
                 "--no-report", "--output-dir", str(tmp_path / "run"), "--metrics", "rouge,bertscore",
                 "--bertscore-model", str(broken), "--bertscore-layer", "6"])
    assert code == 2 and "not available offline" in capsys.readouterr().err


def test_a_child_that_dies_is_a_crash_not_a_hang():
    """Before its first answer or while scoring: the run stops, and no record is charged with an error."""
    items = [Item(output=f"output {i}", references=("a reference",)) for i in range(3)]
    child = MetricProcess("bertscore", {"device": "cpu"}, DatasetView([("a reference",)], [None]))
    try:
        assert set(score_metric(child, items, ["a", "b", "c"])) == set(child.columns)
        child._process.kill()
        child._process.join(timeout=30)
        with pytest.raises(WorkerLost, match="ended unexpectedly"):  # not an error charged to each record
            score_isolated(child, [Item(output="new", references=("a reference",))])
    finally:
        child.close()
    child = MetricProcess("bertscore", {"device": "cpu"}, DatasetView([("a reference",)], [None]))
    try:
        child._process.kill()
        child._process.join(timeout=30)
        with pytest.raises(RuntimeFailure, match="ended unexpectedly"):
            child.identity()
    finally:
        child.close()


def test_while_waiting_fires_once_when_only_metric_processes_are_left():
    """The work-ahead hook runs once, with the scores so far, after every metric scored in this process and
    before the first of the metric processes that are all that is left (so no import runs on two threads);
    never while a metric that scores here is still to come."""
    from evalkit.data.dataset import Sample
    from evalkit.pipeline import score_records
    from evalkit.scoring.rouge import Rouge

    events: list[str] = []

    class Here(Rouge):
        def score(self, outputs, references, progress=False):
            events.append("here")
            return super().score(outputs, references)

    class Elsewhere(Here):
        runs_elsewhere = True

        def score(self, outputs, references, progress=False):
            events.append("elsewhere")
            return Rouge.score(self, outputs, references)

    samples = [Sample(id=str(i), line=i + 1, model_input=None, references=("a cat sat",)) for i in range(3)]
    outputs, errors = ["the cat sat"] * 3, [None] * 3

    seen: list[dict] = []

    def ahead(done):
        events.append("ahead")
        seen.append({column: [row.get(column) for row in done.scores] for column in ("rouge1", "rougeL")})

    def run(metrics):
        events.clear()
        scored = score_records(metrics, samples, outputs, errors, False, while_waiting=ahead)
        assert scored.scores[0]["rouge1"] > 0
        return list(events)

    assert run([Here(), Elsewhere(), Elsewhere()]) == ["here", "ahead", "elsewhere", "elsewhere"]
    expected = Rouge().score(outputs, [("a cat sat",)] * 3)
    assert seen == [{c: expected[c] for c in ("rouge1", "rougeL")}]  # what scored here, whole
    assert run([Elsewhere(), Here()]) == ["elsewhere", "here"]  # something still scores here: no hook
    assert run([Here()]) == ["here"]


def test_work_ahead_draws_the_finished_columns_for_the_report(monkeypatch):
    """While the run waits, the background thread draws each finished column's histogram, keyed by exactly the
    values the report will find (a record without a score is left out, as the report leaves it out); a run
    without a report draws nothing."""
    from types import SimpleNamespace

    import evalkit.reports.html as report
    from evalkit.pipeline import _work_ahead

    monkeypatch.setattr(report, "_PRERENDERED", {})
    done = SimpleNamespace(scores=[{"rouge1": 0.5, "meteor": 0.25}, {}, {"rouge1": 1.0, "meteor": float("nan")}])
    _work_ahead(False, done).join()
    assert report._PRERENDERED == {}
    _work_ahead(True, done).join()
    assert set(report._PRERENDERED) == {("rouge1", (0.5, 1.0)), ("meteor", (0.25,))}
    drawn = [report._PRERENDERED[("rouge1", (0.5, 1.0))], report._PRERENDERED[("meteor", (0.25,))]]
    records = [{"scores": row} for row in done.scores]
    assert [h["png"] for h in report._histograms(["rouge1", "meteor"], records)] == drawn  # the report takes them
    assert report._PRERENDERED == {}
