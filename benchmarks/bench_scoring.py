"""Scoring 1,000 bring-your-own-output pairs: evalkit vs the per-pair way (fmeval's way).

The per-pair way calls each metric library once per pair, with every model already loaded:
``RougeScorer.score``, ``single_meteor_score(word_tokenize(...))`` and ``BERTScorer.score([c], [r])``.
Both sides use the same models; the scores must agree within 1e-6.

    .venv/bin/python benchmarks/bench_scoring.py [--pairs 1000]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks.common import byo_pairs, timed  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=1000)
    args = parser.parse_args()
    import torch
    from bert_score import BERTScorer
    from nltk import word_tokenize
    from nltk.translate.meteor_score import single_meteor_score
    from rouge_score import rouge_scorer

    from evalkit.resources.models import minilm_model_dir
    from evalkit.resources.nltk_data import ensure_punkt_tab, ensure_wordnet
    from evalkit.scoring import build_metrics

    ensure_wordnet()
    ensure_punkt_tab()
    pairs = byo_pairs(args.pairs)
    outputs, refs = [o for o, _ in pairs], [r for _, r in pairs]

    # Load everything first: only scoring is timed.
    rouge = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    bert = BERTScorer(model_type=str(minilm_model_dir()), num_layers=6, device="cpu")
    single_meteor_score(word_tokenize("warm up"), word_tokenize("warm up"))  # loads WordNet
    ours = build_metrics(["rouge", "meteor", "bertscore"], {"bertscore": {"device": "cpu"}})

    naive: dict[str, float] = {}
    baseline: dict[str, list[float]] = {"rouge1": [], "rouge2": [], "rougeL": [], "meteor": [], "bertscore": []}
    with timed(naive, "rouge"):
        for o, r in pairs:
            s = rouge.score(r, o)
            for t in ("rouge1", "rouge2", "rougeL"):
                baseline[t].append(s[t].fmeasure)
    with timed(naive, "meteor"):
        baseline["meteor"] = [single_meteor_score(word_tokenize(r), word_tokenize(o)) for o, r in pairs]
    with timed(naive, "bertscore"), torch.inference_mode():
        baseline["bertscore"] = [bert.score([o], [r])[2].item() for o, r in pairs]

    fast: dict[str, float] = {}
    got: dict[str, list[float]] = {}
    for metric in ours:
        with timed(fast, metric.name):
            got.update(metric.score(outputs, [(r,) for r in refs]))

    worst = max(float(np.max(np.abs(np.array(got[k]) - np.array(v)))) for k, v in baseline.items())
    print(f"scoring {len(pairs)} pairs on {torch.get_num_threads()} threads (CPU)")
    print(f"{'metric':<10} {'per-pair s':>11} {'evalkit s':>10} {'speed-up':>9}")
    for key in ("rouge", "meteor", "bertscore"):
        print(f"{key:<10} {naive[key]:>11.2f} {fast[key]:>10.2f} {naive[key] / fast[key]:>8.1f}x")
    total_naive, total_fast = sum(naive.values()), sum(fast.values())
    print(f"{'total':<10} {total_naive:>11.2f} {total_fast:>10.2f} {total_naive / total_fast:>8.1f}x")
    print(f"max |score difference| over all metrics: {worst:.2e}")
    return 0 if worst <= 1e-6 else 1


if __name__ == "__main__":
    sys.exit(main())
