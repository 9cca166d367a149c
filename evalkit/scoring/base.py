"""The metric interface and registry.

A metric family turns model outputs into per-record scores, in one or more columns (``rouge`` gives rouge1,
rouge2, rougeL). What a metric may read about a record is an :class:`Item`: the output, the references, the
record's input (the question or document) and the retrieved context (RAG). A metric says what it needs
(``needs``), and, per column, whether higher is better (the gate and ``require`` rules honour it: a lower
refusal rate is better).

The life of a metric in a run:

1. :meth:`Metric.check_options` -- before anything loads: a bad option costs nothing;
2. construction -- loads models and data;
3. :meth:`Metric.prepare` -- once per dataset, with every valid record (before ``--max-samples``): shared
   state such as BERTScore's idf or the references' embeddings, reused for every system a comparison scores;
4. :meth:`Metric.score_items` -- per record a :class:`Score`: a value, an optional explanation (a judge's
   reasoning) and an error when it cannot score (counted, never a silent 0).

Simple metrics implement :meth:`Metric.score` (outputs and references in, one value per record out); the
default :meth:`Metric.score_items` wraps it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from evalkit.registry import Registry

REFERENCES = "references"
INPUTS = "inputs"
CONTEXTS = "contexts"
RUNNER = "runner"


@dataclass(frozen=True)
class Item:
    """What a metric may read about one record."""

    output: str
    references: tuple[str, ...] = ()
    input: str | None = None  # the record's input: the question, the document to summarize
    context: tuple[str, ...] | None = None  # passages retrieved for it (RAG systems), best first
    context_ids: tuple[str, ...] | None = None  # their chunk ids, "<document>#<n>"
    gold: tuple[str, ...] | None = None  # the dataset's gold passages for the record (documents or passage text)


@dataclass
class Score:
    """One record's score in one column: a value, or an error; and an optional explanation."""

    value: float | None = None
    explanation: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class DatasetView:
    """What :meth:`Metric.prepare` sees: every valid record of the dataset, before ``--max-samples``."""

    references: list[tuple[str, ...]] = field(default_factory=list)
    inputs: list[str | None] = field(default_factory=list)


class Metric:
    """Scores outputs, one or more columns per record. Subclasses implement :meth:`score` (simple metrics)
    or :meth:`score_items`."""

    name: str
    columns: tuple[str, ...]
    needs: frozenset[str] = frozenset({REFERENCES})
    lower_is_better: frozenset[str] = frozenset()  # columns where a lower value is better
    proportions: frozenset[str] = frozenset()  # 0/1 columns: their mean is a rate, with a Wilson interval
    primary: tuple[str, ...] | None = None  # the columns a comparison reports for the family (None: all)
    loads_model: bool = False  # holds a model: on Ray it runs as a pool of actors, lexical metrics as tasks

    @classmethod  # noqa: B027 - most metrics have nothing to check
    def check_options(cls, **options: Any) -> None:
        """Raise UsageError / ResourceMissingError for options that cannot work, without loading anything."""

    def prepare(self, dataset: DatasetView) -> None:  # noqa: B027 - optional hook
        """See every valid record of the dataset once (before ``--max-samples``)."""

    def use_store(self, store: Any) -> None:  # noqa: B027 - only metrics that call a model need it
        """The run store of the output directory, for metrics that call a model (resumable judgements)."""

    def higher_is_better(self, column: str) -> bool:
        return column not in self.lower_is_better

    def value_range(self, column: str) -> tuple[float, float]:
        """Lowest and highest possible value of ``column``; an errored record counts as the worst of them
        under the gate's default error policy."""
        return (0.0, 1.0)

    def score(self, outputs: Sequence[str], references: Sequence[Sequence[str]],
              progress: bool = False) -> dict[str, list[float]]:
        """Column name -> one value per output (simple metrics)."""
        raise NotImplementedError(f"{type(self).__name__} implements score_items")

    def score_items(self, items: Sequence[Item], progress: bool = False) -> dict[str, list[Score]]:
        """Column name -> one :class:`Score` per item. The default runs :meth:`score` on outputs and references."""
        values = self.score([i.output for i in items], [i.references for i in items], progress=progress)
        return {column: [Score(value=v) for v in column_values] for column, column_values in values.items()}

    def call_stats(self) -> dict[str, int] | None:
        """Model calls this metric made (reused, called, failed, retries), for metrics that call a model."""
        return None

    def settings(self) -> dict[str, Any]:
        """What a reader needs to reproduce the numbers (recorded in results.json)."""
        return {}

    def identity(self) -> dict[str, Any]:
        """What decides this metric's scores besides the record (part of every stored score's key): its
        settings, and metrics whose files or prepared state matter add them."""
        return {"metric": self.name, "columns": list(self.columns), "settings": self.settings()}


# family name -> factory(**options) -> Metric
METRICS: Registry = Registry(
    "metric",
    lazy={"rouge": "evalkit.scoring.rouge", "meteor": "evalkit.scoring.meteor",
          "bertscore": "evalkit.scoring.bertscore", "semantic_similarity": "evalkit.scoring.similarity",
          "refusal": "evalkit.scoring.refusal", "judge": "evalkit.scoring.judge",
          "retrieval": "evalkit.scoring.retrieval"},
)


def check_metrics(names: Sequence[str], options: dict[str, dict[str, Any]] | None = None) -> None:
    """Validate every metric's options without loading a model (exit 2 on a bad one)."""
    options = options or {}
    for name in names:
        METRICS.get(name).check_options(**options.get(name, {}))


def build_metrics(names: Sequence[str], options: dict[str, dict[str, Any]] | None = None) -> list[Metric]:
    options = options or {}
    return [METRICS.get(name)(**options.get(name, {})) for name in names]


def metric_columns(names: Sequence[str]) -> tuple[list[str], list[str]]:
    """(families to run, columns to report) for names that are metric families (the family's primary columns:
    ``rouge`` -> rouge1, rouge2, rougeL; ``bertscore`` -> bertscore, its F1) or single columns (``rougeL``,
    ``bertscore_recall``). An unknown name raises KeyError naming the known ones."""
    families: list[str] = []
    columns: list[str] = []
    owner = {column: family for family in METRICS.names() for column in METRICS.get(family).columns}
    for name in names:
        if name in METRICS.names():
            metric = METRICS.get(name)
            family, wanted = name, list(metric.primary or metric.columns)
        elif name in owner:
            family, wanted = owner[name], [name]
        else:
            raise KeyError(f"unknown metric '{name}'; known: {', '.join(sorted({*METRICS.names(), *owner}))}")
        if family not in families:
            families.append(family)
        columns.extend(c for c in wanted if c not in columns)
    return families, columns


def secondary_columns() -> set[str]:
    """Columns a family computes but a comparison leaves out by default (bertscore_precision, bertscore_recall)."""
    secondary: set[str] = set()
    for family in METRICS.names():
        metric = METRICS.get(family)
        if metric.primary:
            secondary.update(c for c in metric.columns if c not in metric.primary)
    return secondary
