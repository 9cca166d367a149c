"""Metrics: each turns model outputs and references into per-record scores.

Metric families register by name in ``METRICS``; heavy imports happen when a family is built.
"""

from evalkit.scoring.base import METRICS, Metric, build_metrics

__all__ = ["METRICS", "Metric", "build_metrics"]
