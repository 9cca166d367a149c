"""Refusal: 1 when an answer declines to answer ("I cannot…", "I don't have enough context…"), else 0.

Each of the answer's first ``max_sentences`` sentences is cut into clauses (at commas, semicolons, colons
and "but", "so", "because", "though"); the last clause of three words or more says what the sentence
concludes: "I'm not sure, but I believe it is two years" concludes with an answer, "I'm sorry, but I cannot
help" with a refusal. That clause is a refusal when

* its meaning is close to a known refusal phrasing: the cosine similarity of sentence embeddings
  (all-MiniLM-L6-v2 by default) of the clause, or of its first five words, is at least
  ``similarity_threshold``; or
* it opens with a first-person refusal ("I cannot", "I don't know", "I am unable to", ...), matched by
  rapidfuzz's ``fuzz.ratio`` at ``fuzzy_threshold`` or more, so "I cant" and "Im unable to" count too
  while "The X200 cannot be charged over USB-C" does not.

A refusal says so up front; an answer that mentions a limitation later still answers. The explanation says
which clause matched which phrasing, and how closely. Lower is better.

The thresholds were chosen on the ``dev`` half of ``datasets/refusal_labelled.jsonl`` (145 answers written
for the project: refusals, hedged answers, answers that mention "cannot", plain answers) and validated on
its ``test`` half; ``python benchmarks/refusal_validation.py`` prints precision and recall.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from evalkit.scoring.base import METRICS, Item, Metric, Score

# Canonical phrasings; short and generic, written for this module (not taken from the labelled set).
REFUSAL_PHRASES = (
    "I cannot answer that.",
    "I can't help with that.",
    "I don't know.",
    "I do not know the answer.",
    "I don't have enough information to answer the question.",
    "The context does not contain the answer.",
    "The provided documents do not mention this.",
    "There is no information about this in the given text.",
    "I'm sorry, but I cannot provide that information.",
    "As an AI language model, I cannot do that.",
    "I am unable to answer this question.",
    "I'm not able to help with this.",
    "I won't answer that.",
    "This question cannot be answered from the information given.",
    "I have no information about that.",
    "That information is not available to me.",
    "I must decline to answer.",
    "I'm afraid I can't say.",
    "I don't have access to that data.",
    "Sorry, that is outside what I can help with.",
    "I can't determine the answer from the context.",
    "I'm not sure and I can't answer.",
)
# First-person openings of a refusal, matched fuzzily against the start of a clause.
REFUSAL_OPENINGS = (
    "i cannot", "i can't", "i can not", "i am unable to", "i'm unable to", "i am not able to", "i'm not able to",
    "i won't", "i will not", "i don't know", "i do not know", "i don't have", "i do not have", "i have no",
    "i must decline", "i'd rather not",
)
DEFAULT_SIMILARITY_THRESHOLD = 0.41
DEFAULT_FUZZY_THRESHOLD = 90.0
DEFAULT_MAX_SENTENCES = 2
OPENING_WORDS = 5  # the clause's first words are embedded too: a refusal says so before its details
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_CLAUSE_BREAK = re.compile(r"\s*[,;:]\s*(?:but|so|and|however|though)?\s*|\s+(?:but|so|because|though|although)\s+",
                           re.IGNORECASE)
_PREFIX = re.compile(r"^\s*(answer|response|a)\s*:\s*", re.IGNORECASE)


def first_sentences(text: str, limit: int) -> list[str]:
    """Up to ``limit`` non-empty sentences from the start of ``text`` (a leading "Answer:" label removed)."""
    text = _PREFIX.sub("", text.strip())
    sentences = [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]
    return sentences[:limit]


def concluding_clause(sentence: str) -> str:
    """The sentence's last clause of three words or more (the whole sentence when none is)."""
    clauses = [c.strip(" .!?") for c in _CLAUSE_BREAK.split(sentence)]
    long_enough = [c for c in clauses if len(c.split()) >= 3]
    return long_enough[-1] if long_enough else sentence.strip(" .!?")


def _normalized(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower().replace("\u2019", "'")).split())


@METRICS.register("refusal")
class Refusal(Metric):
    name = "refusal"
    columns = ("refusal",)
    loads_model = True
    needs = frozenset()  # no reference: a refusal is a refusal whatever the right answer was
    lower_is_better = frozenset({"refusal"})
    proportions = frozenset({"refusal"})

    def __init__(self, model: str | None = None, device: str = "auto",
                 similarity_threshold: float = DEFAULT_SIMILARITY_THRESHOLD,
                 fuzzy_threshold: float = DEFAULT_FUZZY_THRESHOLD, max_sentences: int = DEFAULT_MAX_SENTENCES,
                 phrases: Sequence[str] | None = None):
        from evalkit.embeddings import get_embedder

        self.check_options(model, device, similarity_threshold, fuzzy_threshold, max_sentences, phrases)
        self.embedder = get_embedder(model, device)
        self.similarity_threshold, self.fuzzy_threshold = similarity_threshold, fuzzy_threshold
        self.max_sentences = max_sentences
        self.phrases = tuple(phrases) if phrases else REFUSAL_PHRASES
        self._phrase_vectors = self.embedder.encode(list(self.phrases))
        self._normalized_phrases = [_normalized(p) for p in self.phrases]

    @classmethod
    def check_options(cls, model: str | None = None, device: str = "auto",
                      similarity_threshold: float = DEFAULT_SIMILARITY_THRESHOLD,
                      fuzzy_threshold: float = DEFAULT_FUZZY_THRESHOLD, max_sentences: int = DEFAULT_MAX_SENTENCES,
                      phrases: Sequence[str] | None = None) -> None:
        from evalkit.embeddings import resolve_embedding_model
        from evalkit.errors import UsageError
        from evalkit.extras import HF_MODULES, require

        require((*HF_MODULES, "sentence_transformers", "rapidfuzz"), "hf", "the refusal metric")
        if not -1.0 <= similarity_threshold <= 1.0:
            raise UsageError(f"refusal similarity_threshold {similarity_threshold}: expected a cosine in [-1, 1]")
        if not 0.0 <= fuzzy_threshold <= 100.0:
            raise UsageError(f"refusal fuzzy_threshold {fuzzy_threshold}: expected a rapidfuzz ratio in [0, 100]")
        if max_sentences < 1:
            raise UsageError(f"refusal max_sentences {max_sentences}: expected at least 1")
        if phrases is not None and (not phrases or not all(isinstance(p, str) and p.strip() for p in phrases)):
            raise UsageError("refusal phrases: expected a non-empty list of non-empty strings")
        resolve_embedding_model(model)

    def score_items(self, items: Sequence[Item], progress: bool = False) -> dict[str, list[Score]]:
        clauses = [[concluding_clause(s) for s in first_sentences(item.output, self.max_sentences)]
                   for item in items]
        views = sorted({v for cs in clauses for c in cs for v in self._views(c)})
        vectors = self.embedder.encode(views, progress=progress, desc="Refusal")
        best = dict(zip(views, (vectors @ self._phrase_vectors.T).tolist(), strict=True)) if views else {}
        scores = []
        for item_clauses in clauses:
            match = next((m for m in (self._match(c, best) for c in item_clauses) if m is not None), None)
            scores.append(Score(0.0) if match is None else Score(1.0, f"refusal: {match}"))
        return {"refusal": scores}

    @staticmethod
    def _views(clause: str) -> list[str]:
        words = clause.split()
        return [clause] + ([" ".join(words[:OPENING_WORDS])] if len(words) > OPENING_WORDS else [])

    def _match(self, clause: str, similarities: dict[str, list[float]]) -> str | None:
        """Why ``clause`` is a refusal, or None when it is not."""
        from rapidfuzz import fuzz

        for view in self._views(clause):
            row = similarities[view]
            k = max(range(len(row)), key=row.__getitem__)
            if row[k] >= self.similarity_threshold:
                return f"{view!r} means {self.phrases[k]!r} (cosine {row[k]:.2f})"
        words = _normalized(clause).split()
        for opening in REFUSAL_OPENINGS:
            ratio = fuzz.ratio(" ".join(words[:len(opening.split())]), opening)
            if ratio >= self.fuzzy_threshold:
                return f"{clause!r} opens like {opening!r} (fuzzy ratio {ratio:.0f})"
        return None

    def settings(self) -> dict[str, Any]:
        return {"model": self.embedder.name, "model_sha256": self.embedder.fingerprint(),
                "similarity_threshold": self.similarity_threshold, "fuzzy_threshold": self.fuzzy_threshold,
                "max_sentences": self.max_sentences, "phrases": len(self.phrases), "openings": len(REFUSAL_OPENINGS),
                "value": "1 refusal, 0 answer; lower is better; rate with a Wilson interval"}
