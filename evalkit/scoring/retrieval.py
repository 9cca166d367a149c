"""Retrieval quality of a RAG system against the dataset's gold passages: recall@k and reciprocal rank.

A gold entry names a document of the knowledge base (its path relative to the documents directory, e.g.
``billing.md``; JSONL documents ``file.jsonl#id``), a chunk id (``billing.md#2``), or quotes passage text
(whitespace and case aside, contained in the chunk). Per record:

* ``retrieval_recall``: the share of the record's gold entries that at least one of the top-k chunks matches;
* ``retrieval_mrr``: 1 / the rank of the first chunk that matches any gold entry (0 when none does); its mean
  is the mean reciprocal rank.

Compare embedding models (a fine-tuned one against the stock one) on retrieval alone by running the same
question set with each as the RAG system's ``embedding_model``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from evalkit.scoring.base import CONTEXTS, METRICS, Item, Metric, Score


def _normalized(text: str) -> str:
    return " ".join(text.lower().split())


def gold_matches(gold: str, chunk_id: str, chunk_text: str) -> bool:
    document = chunk_id.rsplit("#", 1)[0]
    return gold in (document, chunk_id) or (len(gold) > 20 and _normalized(gold) in _normalized(chunk_text))


@METRICS.register("retrieval")
class Retrieval(Metric):
    name = "retrieval"
    columns = ("retrieval_recall", "retrieval_mrr")
    needs = frozenset({CONTEXTS})
    proportions = frozenset({"retrieval_recall"})  # 0/1 with one gold entry per record: a Wilson interval

    def score_items(self, items: Sequence[Item], progress: bool = False) -> dict[str, list[Score]]:
        recall, mrr = [], []
        for item in items:
            if item.context_ids is None or item.context is None:
                error = "no retrieved context (retrieval is scored for RAG systems)"
                recall.append(Score(error=error))
                mrr.append(Score(error=error))
                continue
            if not item.gold:
                recall.append(Score(error="the record has no gold passages"))
                mrr.append(Score(error="the record has no gold passages"))
                continue
            chunks = list(zip(item.context_ids, item.context, strict=True))
            found = [g for g in item.gold if any(gold_matches(g, cid, text) for cid, text in chunks)]
            first = next((rank for rank, (cid, text) in enumerate(chunks, start=1)
                          if any(gold_matches(g, cid, text) for g in item.gold)), None)
            recall.append(Score(len(found) / len(item.gold),
                                f"found {len(found)} of {len(item.gold)} gold: {', '.join(found) or 'none'}"))
            mrr.append(Score(1.0 / first if first else 0.0,
                             f"first relevant chunk at rank {first}" if first else "no relevant chunk retrieved"))
        return {"retrieval_recall": recall, "retrieval_mrr": mrr}

    def settings(self) -> dict[str, Any]:
        return {"value": "recall@k of gold entries; reciprocal rank of the first relevant chunk",
                "match": "gold = document path, chunk id, or passage text contained in the chunk"}
