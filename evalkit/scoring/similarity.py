"""Semantic similarity: cosine similarity of the sentence embeddings of the answer and the reference, the
maximum over references (all-MiniLM-L6-v2 by default, any sentence-transformers model by option).

References are embedded in :meth:`SemanticSimilarity.prepare`, once per dataset; the embedder's memo makes
every later system reuse them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from evalkit.scoring.base import METRICS, DatasetView, Metric


@METRICS.register("semantic_similarity")
class SemanticSimilarity(Metric):
    name = "semantic_similarity"
    columns = ("semantic_similarity",)
    loads_model = True

    def __init__(self, model: str | None = None, device: str = "auto"):
        from evalkit.embeddings import get_embedder

        self.embedder = get_embedder(model, device)

    @classmethod
    def check_options(cls, model: str | None = None, device: str = "auto") -> None:
        from evalkit.embeddings import resolve_embedding_model
        from evalkit.extras import HF_MODULES, require

        require((*HF_MODULES, "sentence_transformers"), "hf", "semantic similarity")
        resolve_embedding_model(model)

    def prepare(self, dataset: DatasetView) -> None:
        self.embedder.encode([r for refs in dataset.references for r in refs], desc="Embedding references")

    def value_range(self, column: str) -> tuple[float, float]:
        return (-1.0, 1.0)

    def score(self, outputs: Sequence[str], references: Sequence[Sequence[str]],
              progress: bool = False) -> dict[str, list[float]]:
        flat = [r for refs in references for r in refs]
        answers = self.embedder.encode(list(outputs), progress=progress, desc="Embedding answers")
        refs = self.embedder.encode(flat)
        values, start = [], 0
        for i, group in enumerate(references):
            sims = refs[start:start + len(group)] @ answers[i]
            values.append(float(sims.max()))
            start += len(group)
        return {"semantic_similarity": values}

    def settings(self) -> dict[str, Any]:
        return {"model": self.embedder.name, "model_sha256": self.embedder.fingerprint(),
                "value": "cosine similarity of sentence embeddings", "multi_reference": "max over references"}
