"""The metric interface and registry."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from evalkit.registry import Registry


class Metric(ABC):
    """Scores outputs against one or more references each.

    A metric family may produce several score columns (``rouge`` gives rouge1, rouge2, rougeL).
    With several references the score is the maximum over references, as the reference libraries
    define it.

    The life of a metric in a run: :meth:`check_options` (before anything loads: a bad option costs
    nothing), construction (loads models and data), :meth:`prepare` with every reference of the dataset
    (dataset-level statistics such as BERTScore's idf), then :meth:`score`.
    """

    name: str
    columns: tuple[str, ...]

    @classmethod  # noqa: B027 - most metrics have nothing to check
    def check_options(cls, **options: Any) -> None:
        """Raise UsageError / ResourceMissingError for options that cannot work, without loading anything."""

    def prepare(self, references: Sequence[Sequence[str]]) -> None:  # noqa: B027 - optional hook
        """See every reference of the dataset (all valid records, before ``--max-samples``) once."""

    def value_range(self, column: str) -> tuple[float, float]:
        """Lowest and highest possible value of ``column``; an errored record counts as the lowest under
        the gate's default error policy."""
        return (0.0, 1.0)

    @abstractmethod
    def score(self, outputs: Sequence[str], references: Sequence[Sequence[str]],
              progress: bool = False) -> dict[str, list[float]]:
        """Column name -> one score per output."""

    def settings(self) -> dict[str, Any]:
        """What a reader needs to reproduce the numbers (recorded in results.json)."""
        return {}


# family name -> factory(**options) -> Metric
METRICS: Registry = Registry(
    "metric",
    lazy={"rouge": "evalkit.scoring.rouge", "meteor": "evalkit.scoring.meteor",
          "bertscore": "evalkit.scoring.bertscore"},
)


def check_metrics(names: Sequence[str], options: dict[str, dict[str, Any]] | None = None) -> None:
    """Validate every metric's options without loading a model (exit 2 on a bad one)."""
    options = options or {}
    for name in names:
        METRICS.get(name).check_options(**options.get(name, {}))


def build_metrics(names: Sequence[str], options: dict[str, dict[str, Any]] | None = None) -> list[Metric]:
    options = options or {}
    return [METRICS.get(name)(**options.get(name, {})) for name in names]
