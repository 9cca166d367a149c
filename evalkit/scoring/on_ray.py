"""Scoring on a Ray cluster (``--ray``): chunks of records scored by workers, results kept by the driver.

- A metric that holds a model (BERTScore, semantic similarity, refusal) runs as a pool of actors: each
  loads the model once, prepares it on the dataset (idf weights, reference embeddings) and scores whole
  chunks, embedding each chunk's texts in batches inside the actor -- one Ray call per chunk of
  :data:`~evalkit.scoring.chunks.SCORE_CHUNK` records, not one per record.
- A lexical metric (ROUGE, METEOR, retrieval) runs as plain Ray tasks, one per chunk; each worker process
  builds the metric once (METEOR's WordNet) and reuses it for every chunk it is given.

The driver writes each chunk's scores to the run store as it returns (:func:`~evalkit.scoring.chunks.
score_metric`), so a worker lost mid-chunk costs that chunk's time only: Ray runs it again. The pool is
freed as soon as its metric is done, so the next stage (another metric, the next system's generation)
gets the cluster's CPUs and GPUs.

Ray is imported only here (and in :mod:`evalkit.raycluster`), and this module only with ``--ray``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from evalkit.hashing import fingerprint
from evalkit.raycluster import RETRIES_AFTER_A_LOST_WORKER, ActorPool, RaySettings, connect
from evalkit.scoring.base import METRICS, DatasetView, Item, Metric, Score

_BUILT: dict[str, Metric] = {}  # per worker process: lexical metrics built once, reused by every task


def _build(family: str, options: dict[str, Any], view: DatasetView, module: str) -> Metric:
    import importlib

    importlib.import_module(module)  # a plug-in metric registers itself when its module is imported
    metric = METRICS.get(family)(**options)
    metric.prepare(view)
    return metric


class _HostedMetric:
    """A metric with its model, inside one actor."""

    def __init__(self, family: str, options: dict[str, Any], view: DatasetView, module: str) -> None:
        self.metric = _build(family, options, view, module)

    def score(self, items: list[Item]) -> dict[str, list[Score]]:
        from evalkit.scoring.chunks import score_isolated

        return score_isolated(self.metric, items)


def _score_task(family: str, options: dict[str, Any], view: DatasetView, module: str, key: str,
                items: list[Item]) -> dict[str, list[Score]]:
    from evalkit.scoring.chunks import score_isolated

    if key not in _BUILT:
        _BUILT[key] = _build(family, options, view, module)
    return score_isolated(_BUILT[key], items)


class RayScoring:
    """Scores chunks on Ray for one run: ``options`` are the run's metric options (family -> options) and
    ``view`` the dataset every metric is prepared on, as in the driver."""

    def __init__(self, settings: RaySettings, options: dict[str, dict[str, Any]], view: DatasetView) -> None:
        import dataclasses

        self.settings, self.options, self.view = settings, options, view
        self.view_fingerprint = fingerprint(dataclasses.asdict(view))
        self.ray = connect(settings)

    def score_chunks(self, metric: Metric, chunks: list[list[Item]]) -> Iterator[tuple[int, dict[str, list[Score]]]]:
        family, module = metric.name, type(metric).__module__
        options = dict(self.options.get(family, {}))
        if module == "__main__":  # defined in a script or notebook: workers cannot import it, score it here
            from evalkit.scoring.chunks import score_isolated

            for index, chunk in enumerate(chunks):
                yield index, score_isolated(metric, chunk)
            return
        if metric.loads_model:
            with ActorPool(_HostedMetric, (family, options, self.view, module), self.settings) as pool:
                yield from pool.map_unordered("score", chunks)
            return
        ray = self.ray
        task = ray.remote(num_cpus=self.settings.cpus_per_worker, max_retries=RETRIES_AFTER_A_LOST_WORKER)(_score_task)
        view = ray.put(self.view)
        key = fingerprint({"family": family, "options": options, "view": self.view_fingerprint, "module": module})
        pending = {task.remote(family, options, view, module, key, chunk): index
                   for index, chunk in enumerate(chunks)}
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            yield pending.pop(ref), ray.get(ref)
