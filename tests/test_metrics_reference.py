"""evalkit's scores equal direct calls of the reference libraries (as fmeval makes them), within 1e-6.

The direct calls are made the slow, obvious way: one library call per pair.
"""

from __future__ import annotations

import math

import pytest
from bert_score import BERTScorer
from nltk import word_tokenize
from nltk.translate.meteor_score import single_meteor_score
from rouge_score import rouge_scorer

from evalkit.scoring import build_metrics

TOL = 1e-6


def _pairs(news_records: list[dict]) -> list[tuple[str, str]]:
    """>= 200 (output, reference) pairs covering the awkward cases."""
    pairs = []
    for i, rec in enumerate(news_records):
        doc, ref = rec["document"], rec["summary"]
        first_sentence = doc.split(". ")[0] + "."
        other = news_records[(i + 7) % len(news_records)]["summary"]
        pairs += [(first_sentence, ref), (doc, ref), (other, ref)]
    pairs += [
        ("", news_records[0]["summary"]),  # empty output
        ("   ", news_records[1]["summary"]),  # whitespace-only output
        ("Zürich — 東京: Ødegaard scored twice; São Paulo celebrated.", "Ødegaard's two goals delight Zürich."),
        ("Der schnelle braune Fuchs springt über den faulen Hund.", "Ein Fuchs springt über einen Hund."),
        ("Сегодня в Москве прошёл дождь.", "В Москве дождь."),
        ("Dr. Smith arrived at 3 p.m. He spoke briefly. Then he left for the U.S. office.",
         "Dr. Smith visited briefly before leaving for the U.S."),
        (" ".join(r["document"] for r in news_records[:12]), news_records[0]["summary"]),  # very long
        ("the the the the the", "the cat sat on the mat"),
        ("1,234.56 dollars ($1,234.56) on 2026-11-21!!!", "$1,234.56 was paid on 21 November 2026."),
    ]
    assert len(pairs) >= 200
    return pairs


@pytest.fixture(scope="module")
def pairs(news_records):
    return _pairs(news_records)


def test_rouge_equals_rouge_score(pairs):
    (metric,) = build_metrics(["rouge"])
    ours = metric.score([o for o, _ in pairs], [(r,) for _, r in pairs])
    direct = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    for i, (output, ref) in enumerate(pairs):
        expected = direct.score(ref, output)
        for rouge_type in ("rouge1", "rouge2", "rougeL"):
            assert math.isclose(ours[rouge_type][i], expected[rouge_type].fmeasure, abs_tol=TOL), (i, rouge_type)
    assert ours["rouge1"][pairs.index(next(p for p in pairs if p[0] == ""))] == 0.0


def test_meteor_equals_nltk(pairs):
    (metric,) = build_metrics(["meteor"])
    ours = metric.score([o for o, _ in pairs], [(r,) for _, r in pairs])["meteor"]
    for i, (output, ref) in enumerate(pairs):
        expected = single_meteor_score(word_tokenize(ref), word_tokenize(output))
        assert math.isclose(ours[i], expected, abs_tol=TOL), i
    # synonyms come from WordNet (not just exact/stem matches)
    assert math.isclose(
        metric.score(["Leaves drop in fall."], [("Leaves fall during autumn.",)])["meteor"][0],
        single_meteor_score(word_tokenize("Leaves fall during autumn."), word_tokenize("Leaves drop in fall.")),
        abs_tol=TOL,
    )


@pytest.mark.slow
def test_bertscore_equals_bert_score_per_pair(pairs, minilm_dir):
    (metric,) = build_metrics(["bertscore"], {"bertscore": {"device": "cpu"}})
    ours = metric.score([o for o, _ in pairs], [(r,) for _, r in pairs])
    direct = BERTScorer(model_type=minilm_dir, num_layers=6)
    for i, (output, ref) in enumerate(pairs):
        p, r, f = direct.score([output], [ref])
        assert math.isclose(ours["bertscore"][i], f.item(), abs_tol=TOL), i
        assert math.isclose(ours["bertscore_precision"][i], p.item(), abs_tol=TOL), i
        assert math.isclose(ours["bertscore_recall"][i], r.item(), abs_tol=TOL), i
    assert metric.settings()["model"] == "all-MiniLM-L6-v2"
    assert metric.settings()["num_layers"] == 6


@pytest.mark.slow
def test_multi_reference_takes_the_max(news_records, minilm_dir):
    outputs = [r["document"].split(". ")[0] for r in news_records[:10]]
    refs = [(r["summary"], news_records[(i + 3) % 10]["summary"], "Unrelated words entirely.")
            for i, r in enumerate(news_records[:10])]
    metrics = build_metrics(["rouge", "meteor", "bertscore"], {"bertscore": {"device": "cpu"}})
    ours = {k: v for m in metrics for k, v in m.score(outputs, refs).items()}
    direct_rouge = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    direct_bert = BERTScorer(model_type=minilm_dir, num_layers=6)
    for i, (output, group) in enumerate(zip(outputs, refs, strict=True)):
        for t in ("rouge1", "rouge2", "rougeL"):
            best = max(direct_rouge.score(ref, output)[t].fmeasure for ref in group)
            assert math.isclose(ours[t][i], best, abs_tol=TOL)
        best_meteor = max(single_meteor_score(word_tokenize(ref), word_tokenize(output)) for ref in group)
        assert math.isclose(ours["meteor"][i], best_meteor, abs_tol=TOL)
        best_f1 = max(direct_bert.score([output], [ref])[2].item() for ref in group)
        assert math.isclose(ours["bertscore"][i], best_f1, abs_tol=TOL)
