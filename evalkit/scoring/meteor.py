"""METEOR as fmeval computes it: ``nltk.translate.meteor_score.single_meteor_score`` on
``nltk.word_tokenize`` tokens, default parameters (alpha 0.9, beta 3, gamma 0.5, Porter stemmer,
WordNet synonyms).

NLTK's implementation is called unchanged; it receives a stemmer and a WordNet reader whose lookups
are memoized, which gives the same synonyms and therefore the same scores, much faster. The reader is
NLTK's own, loaded in a fraction of the time; where ``evalkit resources install`` wrote its table of
every synset's lemma names, its synsets are stand-ins read from that table, carrying the lemma names
METEOR matches on, so no synset's line is parsed (see :mod:`evalkit.resources.wordnet`).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from evalkit.progress import progress_bar
from evalkit.scoring.base import METRICS, Metric


class _MemoizedWordNet:
    """The one WordNet method METEOR uses (``synsets``), cached per word."""

    def __init__(self, wordnet: Any):
        self.synsets = lru_cache(maxsize=None)(wordnet.synsets)


class _MemoizedStemmer:
    def __init__(self, stemmer: Any):
        self.stem = lru_cache(maxsize=None)(stemmer.stem)


@METRICS.register("meteor")
class Meteor(Metric):
    name = "meteor"
    columns = ("meteor",)

    def __init__(self) -> None:
        from nltk.stem.porter import PorterStemmer

        from evalkit.resources.nltk_data import ensure_punkt_tab, meteor_wordnet

        wordnet = meteor_wordnet()
        ensure_punkt_tab()
        self._wordnet = _MemoizedWordNet(wordnet)
        self._stemmer = _MemoizedStemmer(PorterStemmer())

    @staticmethod
    @lru_cache(maxsize=65536)
    def _tokens(text: str) -> tuple[str, ...]:
        from nltk import word_tokenize

        return tuple(word_tokenize(text))

    def score(self, outputs: Sequence[str], references: Sequence[Sequence[str]],
              progress: bool = False) -> dict[str, list[float]]:
        from nltk.translate.meteor_score import single_meteor_score

        scores = []
        for output, refs in progress_bar(zip(outputs, references, strict=True), total=len(outputs),
                                         desc="METEOR", enabled=progress):
            hypothesis = self._tokens(output)
            scores.append(max(
                float(single_meteor_score(self._tokens(ref), hypothesis, stemmer=self._stemmer,
                                          wordnet=self._wordnet))
                for ref in refs
            ))
        return {"meteor": scores}

    def settings(self) -> dict[str, Any]:
        import importlib.metadata as md

        return {"library": f"nltk {md.version('nltk')}", "function": "single_meteor_score",
                "tokenizer": "nltk.word_tokenize (punkt_tab english)", "alpha": 0.9, "beta": 3.0,
                "gamma": 0.5, "multi_reference": "max over references"}
