"""ROUGE-1/2/L F-measure via Google's rouge-score, stemmer on (fmeval's settings).

Scoring goes through ``RougeScorer.score`` / ``score_multi`` unchanged; only tokenization is
memoized (texts and Porter stems repeat a lot across a dataset), which leaves every score identical.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from evalkit.progress import progress_bar
from evalkit.scoring.base import METRICS, Metric

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


class _MemoizedRougeTokenizer:
    """Same tokens as rouge-score's DefaultTokenizer, with Porter stems and whole texts cached."""

    def __init__(self, use_stemmer: bool):
        from nltk.stem import porter

        self._stem = lru_cache(maxsize=None)(porter.PorterStemmer().stem) if use_stemmer else None
        self.tokenize = lru_cache(maxsize=65536)(self._tokenize)

    def _tokenize(self, text: str) -> tuple[str, ...]:
        from rouge_score import tokenize

        return tuple(tokenize.tokenize(text, self if self._stem else None))

    def stem(self, word: str) -> str:  # the stemmer interface rouge-score calls
        return self._stem(word)


@METRICS.register("rouge")
class Rouge(Metric):
    name = "rouge"
    columns = ROUGE_TYPES

    def __init__(self, use_stemmer: bool = True):
        from rouge_score import rouge_scorer

        self.use_stemmer = use_stemmer
        self._scorer = rouge_scorer.RougeScorer(
            list(ROUGE_TYPES), tokenizer=_MemoizedRougeTokenizer(use_stemmer)
        )

    def score(self, outputs: Sequence[str], references: Sequence[Sequence[str]],
              progress: bool = False) -> dict[str, list[float]]:
        result: dict[str, list[float]] = {c: [] for c in self.columns}
        pairs = zip(outputs, references, strict=True)
        for output, refs in progress_bar(pairs, total=len(outputs), desc="ROUGE", enabled=progress):
            if len(refs) == 1:
                scores = self._scorer.score(refs[0], output)
            else:
                scores = self._scorer.score_multi(list(refs), output)
            for column in self.columns:
                result[column].append(float(scores[column].fmeasure))
        return result

    def settings(self) -> dict[str, Any]:
        import importlib.metadata as md

        return {"library": f"rouge-score {md.version('rouge-score')}", "rouge_types": list(ROUGE_TYPES),
                "use_stemmer": self.use_stemmer, "value": "fmeasure",
                "multi_reference": "max over references (RougeScorer.score_multi)"}
