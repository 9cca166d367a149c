"""Scores are kept in the run store chunk by chunk: a run that dies while scoring keeps its finished chunks, a
re-run scores only what is missing, and a score is reused only under the same metric settings and the same
record (real rouge-score, a real SQLite store)."""

from __future__ import annotations

import json

import pytest

from evalkit.cli import main
from evalkit.runners.store import RunStore
from evalkit.scoring.base import Item
from evalkit.scoring.chunks import SCORE_CHUNK, score_metric
from evalkit.scoring.rouge import Rouge
from tests.helpers import scored_outputs, write_jsonl


class Crash(BaseException):
    """Stands for the process dying (not an error a metric reports for one record)."""


class CountingRouge(Rouge):
    """ROUGE that counts the records it scores, can die before a given record, and cannot score 'nan'."""

    def __init__(self, use_stemmer: bool = True, die_at: int | None = None):
        super().__init__(use_stemmer)
        self.seen, self.die_at = 0, die_at

    def score(self, outputs, references, progress=False):
        if self.die_at is not None and self.seen + len(outputs) > self.die_at:
            raise Crash
        self.seen += len(outputs)
        values = super().score(outputs, references, progress)
        return {c: [float("nan") if o == "nan" else v for o, v in zip(outputs, vs, strict=True)]
                for c, vs in values.items()}


@pytest.fixture()
def items(news_records) -> list[Item]:
    rows = scored_outputs(news_records, 2 * SCORE_CHUNK + 88)
    return [Item("nan" if i == 5 else r["output"], (r["summary"],)) for i, r in enumerate(rows)]


def _values(scores):
    return {c: [(s.value, s.error is not None) for s in column] for c, column in scores.items()}


def test_a_crash_keeps_finished_chunks_and_a_rerun_scores_only_the_rest(tmp_path, items):
    ids = [f"r{i}" for i in range(len(items))]
    reference = score_metric(CountingRouge(), items, ids)  # no store: everything scored
    with RunStore(tmp_path) as store, pytest.raises(Crash):
        score_metric(CountingRouge(die_at=SCORE_CHUNK + 10), items, ids, store=store)
    with RunStore(tmp_path) as store:
        assert store.count_scores("rouge") == SCORE_CHUNK - 1  # the first chunk, less the record it cannot score
        metric, counts = CountingRouge(), {}
        resumed = score_metric(metric, items, ids, store=store, counts=counts)
    assert metric.seen == len(items) - (SCORE_CHUNK - 1)  # the failed record is tried again, the rest reused
    assert counts == {"reused": SCORE_CHUNK - 1, "scored": len(items) - (SCORE_CHUNK - 1)}
    assert _values(resumed) == _values(reference)
    assert resumed["rougeL"][5].error == "the metric returned nan, not a finite number"

    with RunStore(tmp_path) as store:  # all stored now (but the failed one): nothing is scored twice
        metric = CountingRouge()
        assert _values(score_metric(metric, items, ids, store=store)) == _values(reference) and metric.seen == 1
        other = CountingRouge(use_stemmer=False)  # other settings: other scores, nothing reused
        score_metric(other, items, ids, store=store)
        assert other.seen == len(items)
        changed = [Item(i.output + " more", i.references) for i in items[:3]]  # another output: scored again
        metric = CountingRouge()
        score_metric(metric, changed, ids[:3], store=store)
        assert metric.seen == 3


def test_equal_records_are_scored_once(items):
    metric, counts = CountingRouge(), {}
    twins = [items[0], items[1], items[0], items[0]]
    scores = score_metric(metric, twins, ["a", "b", "c", "d"], counts=counts)
    assert metric.seen == 2 and counts == {"reused": 0, "scored": 4}
    assert scores["rougeL"][2].value == scores["rougeL"][0].value == scores["rougeL"][3].value


def test_a_rerun_of_a_finished_run_reuses_every_score(tmp_path, news_records):
    data = write_jsonl(tmp_path / "outputs.jsonl", scored_outputs(news_records, 40))
    args = ["run", "summarization", "--dataset", str(data), "--output-field", "output", "--no-progress",
            "--no-report", "--metrics", "rouge,meteor", "--output-dir", str(tmp_path / "run")]
    assert main(args) == 0
    first = json.loads((tmp_path / "run" / "results.json").read_text())
    assert first["scoring_store"] == {"rouge": {"reused": 0, "scored": 40}, "meteor": {"reused": 0, "scored": 40}}
    assert main(args) == 0
    again = json.loads((tmp_path / "run" / "results.json").read_text())
    assert again["scoring_store"] == {"rouge": {"reused": 40, "scored": 0}, "meteor": {"reused": 40, "scored": 0}}
    assert again["metrics"] == first["metrics"]
    assert main([*args, "--no-cache"]) == 0  # scores everything again (and stores it)
    fresh = json.loads((tmp_path / "run" / "results.json").read_text())
    assert fresh["scoring_store"] == first["scoring_store"] and fresh["metrics"] == first["metrics"]
