"""The question-answering metrics: semantic similarity, refusal (validated on the labelled answers), and the
metric interface they use (needs, lower-is-better columns, explanations, errors)."""

from __future__ import annotations

from pathlib import Path

import pytest

from evalkit.scoring.base import METRICS, REFERENCES, DatasetView, Item
from tests.helpers import read_jsonl

ROOT = Path(__file__).resolve().parent.parent


def test_semantic_similarity_is_the_cosine_of_sentence_transformers_embeddings_max_over_references():
    from sentence_transformers import SentenceTransformer, util

    from evalkit.resources.models import minilm_model_dir

    metric = METRICS.get("semantic_similarity")()
    outputs = ["The warranty lasts two years.", "Paris is the capital of France.", "It is blue."]
    references = [("Two years of warranty.",), ("Berlin is big.", "France's capital is Paris."), ("Red.",)]
    metric.prepare(DatasetView(references=references))
    ours = metric.score(outputs, references)["semantic_similarity"]
    model = SentenceTransformer(str(minilm_model_dir()), device="cpu")
    for output, refs, value in zip(outputs, references, ours, strict=True):
        expected = max(float(util.cos_sim(model.encode(output), model.encode(r))) for r in refs)
        assert value == pytest.approx(expected, abs=1e-5)
    assert ours[1] > 0.9 > ours[2]
    assert metric.higher_is_better("semantic_similarity") and metric.value_range("semantic_similarity") == (-1, 1)
    assert REFERENCES in metric.needs


def test_refusal_precision_and_recall_on_the_held_out_labelled_answers():
    """Thresholds were chosen on the dev half; the test half judges them (README: precision and recall)."""
    rows = read_jsonl(ROOT / "datasets" / "refusal_labelled.jsonl")
    assert len(rows) >= 100 and {r["kind"] for r in rows} >= {"refusal", "hedged answer", "answer"}
    metric = METRICS.get("refusal")()
    assert metric.needs == frozenset() and not metric.higher_is_better("refusal")
    test = [r for r in rows if r["split"] == "test"]
    scores = metric.score_items([Item(r["answer"]) for r in test])["refusal"]
    said = [int(s.value) for s in scores]
    tp = sum(1 for r, s in zip(test, said, strict=True) if r["refusal"] and s)
    precision = tp / sum(said)
    recall = tp / sum(r["refusal"] for r in test)
    assert precision >= 0.85 and recall >= 0.9, (precision, recall)
    for s in scores:
        assert (s.explanation is not None) == bool(s.value)  # every refusal says what it matched
    hedges = [r for r in test if r["kind"] == "hedged answer"]
    assert not any(s.value for r, s in zip(test, scores, strict=True) if r in hedges)


def test_refusal_reads_no_reference_and_catches_misspelled_first_person_refusals():
    metric = METRICS.get("refusal")()
    scores = metric.score_items([Item("I cant comment on unreleased features."), Item("Im unable to say more."),
                                 Item("The X200 cannot be charged over USB-C; use the 12 V adapter.")])["refusal"]
    assert [s.value for s in scores] == [1.0, 1.0, 0.0]
    assert "fuzzy ratio" in scores[0].explanation or "cosine" in scores[0].explanation


@pytest.mark.parametrize("options, message", [
    ({"similarity_threshold": 2}, "similarity_threshold"), ({"fuzzy_threshold": 101}, "fuzzy_threshold"),
    ({"max_sentences": 0}, "max_sentences"), ({"model": "/nonexistent/model"}, "embedding model"),
])
def test_bad_metric_options_are_refused_before_anything_loads(options, message):
    from evalkit.errors import EvalkitError

    with pytest.raises(EvalkitError, match=message) as info:
        METRICS.get("refusal").check_options(**options)
    assert info.value.exit_code == 2
