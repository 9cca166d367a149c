"""One metric over many records: scored in chunks, each kept in the run store the moment it finishes.

Chunks are fixed runs of :data:`SCORE_CHUNK` records in record order, whether they are scored here or on Ray
(:mod:`evalkit.scoring.on_ray`), so a metric sees exactly the same batches either way: BERTScore's values
depend on which texts share an embedding batch (by up to one float32 ulp), and the scores of ``--ray`` equal
the single-process run's. Each chunk's scores are written to the run store in one transaction, keyed on the
metric's identity (settings, model files, prepared state) and everything it may read about the record, so a
run killed while scoring resumes with the chunks it had finished, and a re-run scores nothing twice. A score
with an error is not stored: it is tried again next time.

Metrics that call a model (a judge) are scored in one go: their calls are the expensive part, they run
concurrently across all records, and the run store keeps each of them already.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from evalkit.errors import RuntimeFailure, WorkerLost
from evalkit.hashing import fingerprint
from evalkit.scoring.base import RUNNER, Item, Metric, Score

# Records per chunk: a store transaction, a unit of work on Ray, a progress step. Each distinct text of a chunk
# is embedded once (BERTScore, semantic similarity), so texts repeated across chunks are embedded again: at 256,
# 1,000 pairs with 310 distinct outputs spent 3x as long in BERTScore as in one chunk. A chunk of 1,024 is a few
# seconds of BERTScore on two CPU cores: what a run killed while scoring can lose.
SCORE_CHUNK = 1024
ERROR_CHARS = 500


class ChunkScorer(Protocol):
    """Scores chunks elsewhere (on Ray): ``(chunk index, column -> scores)`` as each finishes, any order."""

    def score_chunks(self, metric: Metric, chunks: list[list[Item]]) -> Iterator[tuple[int, dict[str, list[Score]]]]:
        ...


def _finite_or_error(value: Any) -> tuple[float | None, str | None]:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None, f"the metric returned {value!r}, not a finite number"
    return float(value), None


def score_isolated(metric: Metric, items: list[Item], progress: bool = False) -> dict[str, list[Score]]:
    """Every column of ``metric`` per item. A batch that raises is scored item by item, so one record the
    metric cannot handle never costs the others their scores; a value that is not a finite number is an
    error. A record with an error in any column of the metric has an error (and no value) in all of them."""
    n = len(items)
    columns: dict[str, list[Score]] = {c: [Score() for _ in range(n)] for c in metric.columns}
    errors: list[str | None] = [None] * n
    try:
        batches = [(list(range(n)), metric.score_items(items, progress=progress))]
    except WorkerLost:
        raise  # the metric's process ended: no record's fault, and none could be scored alone either
    except Exception:
        batches = []
        for i in range(n):
            try:
                batches.append(([i], metric.score_items([items[i]], progress=False)))
            except WorkerLost:
                raise
            except Exception as exc:
                errors[i] = f"{type(exc).__name__}: {exc}"[:ERROR_CHARS]
    for indexes, result in batches:
        for column in metric.columns:
            scores = result.get(column)
            if not isinstance(scores, list) or len(scores) != len(indexes):
                raise RuntimeFailure(f"metric {metric.name} returned {column} for "
                                     f"{len(scores) if isinstance(scores, list) else 'no'} of {len(indexes)} records")
            for i, score in zip(indexes, scores, strict=True):
                problem = score.error
                if problem is None:
                    value, problem = _finite_or_error(score.value)
                    score = Score(value, score.explanation)
                columns[column][i] = score
                errors[i] = errors[i] or problem
    for i, error in enumerate(errors):
        if error is not None:
            for column in metric.columns:
                columns[column][i] = Score(None, columns[column][i].explanation, error)
    return columns


def score_key(metric_fingerprint: str, item: Item) -> str:
    """The store key of one record's scores under one metric."""
    return fingerprint({"metric": metric_fingerprint, "item": dataclasses.asdict(item)})


def score_metric(metric: Metric, items: Sequence[Item], ids: Sequence[str | None], *, store: Any = None,
                 progress: bool = False, elsewhere: ChunkScorer | None = None,
                 counts: dict[str, int] | None = None, reuse: bool = True,
                 on_chunk: Callable[[], None] | None = None) -> dict[str, list[Score]]:
    """Column -> one :class:`Score` per item: stored scores reused, the rest scored chunk by chunk (here, or
    by ``elsewhere``) and stored as each chunk finishes. Records with equal items are scored once.
    ``counts`` gets ``reused`` (records whose scores came from the store) and ``scored`` (records scored now,
    equal twins included). ``reuse=False`` (``--no-cache``) scores everything again, and still stores it.
    ``on_chunk()`` is called whenever scores are in (reused ones, then each chunk's)."""
    from evalkit.progress import progress_counter

    items = list(items)
    counts = counts if counts is not None else {}
    done = on_chunk or (lambda: None)
    if RUNNER in metric.needs:
        counts["scored"] = counts.get("scored", 0) + len(items)
        columns = score_isolated(metric, items, progress)
        done()
        return columns
    columns: dict[str, list[Score | None]] = {c: [None] * len(items) for c in metric.columns}
    identity = fingerprint(metric.identity())
    keys = [score_key(identity, item) for item in items]
    for i, stored in (_stored(store, keys, metric.columns) if reuse else {}).items():
        for column in metric.columns:
            columns[column][i] = Score(stored[column].get("value"), stored[column].get("explanation"))
    reused = sum(columns[metric.columns[0]][i] is not None for i in range(len(items)))
    counts["reused"] = counts.get("reused", 0) + reused
    if reused:
        done()
    counts["scored"] = counts.get("scored", 0) + len(items) - reused
    first: dict[str, int] = {}
    todo = [i for i in range(len(items)) if columns[metric.columns[0]][i] is None and first.setdefault(keys[i], i) == i]
    chunks = [todo[start:start + SCORE_CHUNK] for start in range(0, len(todo), SCORE_CHUNK)]
    bar = progress_counter(len(todo), desc=f"Scoring ({metric.name})", enabled=progress and bool(todo))

    def keep(chunk: list[int], scored: dict[str, list[Score]]) -> None:
        rows = []
        for position, i in enumerate(chunk):
            for column in metric.columns:
                columns[column][i] = scored[column][position]
            if all(scored[c][position].error is None for c in metric.columns):
                rows.append((keys[i], ids[i], {c: {"value": scored[c][position].value,
                                                   "explanation": scored[c][position].explanation}
                                               for c in metric.columns}))
        if store is not None and rows:
            store.put_scores(metric.name, rows)
        bar.update(len(chunk))
        done()

    try:
        if elsewhere is not None and chunks:
            for index, scored in elsewhere.score_chunks(metric, [[items[i] for i in c] for c in chunks]):
                keep(chunks[index], scored)
        else:
            for chunk in chunks:
                keep(chunk, score_isolated(metric, [items[i] for i in chunk]))
    finally:
        bar.close()
    for i, key in enumerate(keys):  # records whose item equals an earlier one's share its scores
        if columns[metric.columns[0]][i] is None:
            for column in metric.columns:
                columns[column][i] = columns[column][first[key]]
    return columns  # type: ignore[return-value]


def _stored(store: Any, keys: list[str], wanted: Sequence[str]) -> dict[int, dict[str, Any]]:
    if store is None:
        return {}
    hits = store.get_scores(keys)
    return {i: hits[key] for i, key in enumerate(keys) if key in hits and all(c in hits[key] for c in wanted)}
