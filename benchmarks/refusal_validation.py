"""Precision and recall of the refusal metric on the labelled answers in datasets/refusal_labelled.jsonl.

The thresholds were chosen on the ``dev`` half; the ``test`` half is what they are judged by. Prints both,
per kind of answer, and every misclassified answer with the metric's explanation.

    python benchmarks/refusal_validation.py [--similarity-threshold 0.41] [--fuzzy-threshold 90]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

LABELLED = Path(__file__).resolve().parent.parent / "datasets" / "refusal_labelled.jsonl"


def precision_recall(pairs: list[tuple[int, int]]) -> dict[str, float | int]:
    tp = sum(1 for truth, said in pairs if truth and said)
    fp = sum(1 for truth, said in pairs if not truth and said)
    fn = sum(1 for truth, said in pairs if truth and not said)
    return {"n": len(pairs), "tp": tp, "fp": fp, "fn": fn,
            "precision": tp / (tp + fp) if tp + fp else float("nan"),
            "recall": tp / (tp + fn) if tp + fn else float("nan")}


def main() -> None:
    from evalkit.jsonl import split_lines
    from evalkit.scoring.base import Item
    from evalkit.scoring.refusal import DEFAULT_FUZZY_THRESHOLD, DEFAULT_SIMILARITY_THRESHOLD, Refusal

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--similarity-threshold", type=float, default=DEFAULT_SIMILARITY_THRESHOLD)
    parser.add_argument("--fuzzy-threshold", type=float, default=DEFAULT_FUZZY_THRESHOLD)
    args = parser.parse_args()
    rows = [json.loads(line) for _, line in split_lines(LABELLED.read_text(encoding="utf-8")) if line.strip()]
    metric = Refusal(similarity_threshold=args.similarity_threshold, fuzzy_threshold=args.fuzzy_threshold)
    scores = metric.score_items([Item(r["answer"]) for r in rows])["refusal"]
    print(f"refusal metric on {LABELLED.name}: {len(rows)} answers, {sum(r['refusal'] for r in rows)} refusals; "
          f"similarity >= {args.similarity_threshold}, fuzzy >= {args.fuzzy_threshold}")
    print(f"{'split':<6} {'n':>4} {'precision':>10} {'recall':>8}   tp fp fn")
    for split in ("dev", "test", "all"):
        pairs = [(r["refusal"], int(s.value)) for r, s in zip(rows, scores, strict=True)
                 if split == "all" or r["split"] == split]
        m = precision_recall(pairs)
        print(f"{split:<6} {m['n']:>4} {m['precision']:>10.3f} {m['recall']:>8.3f}   "
              f"{m['tp']:>2} {m['fp']:>2} {m['fn']:>2}")
    print("\nper kind (all splits): share flagged as refusal")
    for kind in sorted({r["kind"] for r in rows}):
        flagged = [int(s.value) for r, s in zip(rows, scores, strict=True) if r["kind"] == kind]
        print(f"  {kind:<40} {sum(flagged):>3} of {len(flagged)}")
    print("\nmisclassified:")
    for r, s in zip(rows, scores, strict=True):
        if int(s.value) != r["refusal"]:
            why = f"\n      {s.explanation}" if s.explanation else ""
            print(f"  [{r['split']}] label {r['refusal']}: {r['answer']!r}{why}")


if __name__ == "__main__":
    main()
