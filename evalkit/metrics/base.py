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
    """

    name: str
    columns: tuple[str, ...]

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
    lazy={"rouge": "evalkit.metrics.rouge", "meteor": "evalkit.metrics.meteor",
          "bertscore": "evalkit.metrics.bertscore"},
)


def build_metrics(names: Sequence[str], options: dict[str, dict[str, Any]] | None = None) -> list[Metric]:
    options = options or {}
    return [METRICS.get(name)(**options.get(name, {})) for name in names]
