"""The per-pair way (fmeval's): a whole process that scores a JSONL of outputs with ROUGE, METEOR and BERTScore,
calling each library once per pair, as a script a user would write. The baseline of ``bench_startup.py``.

    .venv/bin/python benchmarks/per_pair_scoring.py PAIRS.jsonl SCORES.json [--output-field output]

Reads ``summary`` (reference) and the output field of every line; writes ``{"rouge1": [...], ...}``.
Everything -- interpreter start, imports, loading WordNet and the BERTScore model, scoring -- is what a
user of the per-pair way waits for, so the benchmark times this whole process.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("pairs")
    parser.add_argument("scores")
    parser.add_argument("--output-field", default="output")
    args = parser.parse_args()

    from bert_score import BERTScorer
    from nltk import word_tokenize
    from nltk.translate.meteor_score import single_meteor_score
    from rouge_score import rouge_scorer

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import nltk

    from evalkit.resources.models import minilm_model_dir
    from evalkit.resources.nltk_data import default_data_dir

    nltk.data.path.append(str(default_data_dir()))  # where `evalkit resources install` put WordNet and punkt
    with open(args.pairs, encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    rouge = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    bert = BERTScorer(model_type=str(minilm_model_dir()), num_layers=6, device="cpu")
    scores: dict[str, list[float]] = {"rouge1": [], "rouge2": [], "rougeL": [], "meteor": [], "bertscore": []}
    for row in rows:
        output, reference = row[args.output_field], row["summary"]
        rouge_scores = rouge.score(reference, output)
        for key in ("rouge1", "rouge2", "rougeL"):
            scores[key].append(rouge_scores[key].fmeasure)
        scores["meteor"].append(single_meteor_score(word_tokenize(reference), word_tokenize(output)))
        scores["bertscore"].append(bert.score([output], [reference])[2].item())
    with open(args.scores, "w", encoding="utf-8") as fh:
        json.dump(scores, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
