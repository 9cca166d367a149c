"""Compare finished runs, whenever and however they were made: the statistics of ``evalkit compare`` (per-run
summaries, every pair on every shared metric with Holm, verdict lines, win rates) over run directories already
on disk, e.g. last release's baseline against today's candidate. No model is loaded.

Records pair by id. Runs over different datasets (another sha256) pair on the ids they share, and the
comparison says so; a pair of runs with no shared id has no row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from evalkit.compare.pairwise import SystemRun, compare_all, system_summary, verdict_line, win_rates
from evalkit.errors import UsageError

STATISTICS = ("pairs: mean paired difference a - b over shared ids with Student-t 95% CI; two-sided sign-flip "
              "permutation test below 100 pairs (exact up to 13), paired t-test from 100, exact McNemar for 0/1 "
              "metrics; Holm across all pairs and metrics.")


@dataclass
class FinishedRun:
    """One finished run: its label, results.json and records.jsonl rows."""

    name: str
    results: Mapping[str, Any]
    records: Sequence[Mapping[str, Any]]


def _metric_order(runs: Sequence[FinishedRun]) -> list[str]:
    order: list[str] = []
    for run in runs:
        order.extend(m for m in (run.results.get("metrics") or {}) if m not in order)
    return order


def compare_finished_runs(runs: Sequence[FinishedRun], *, metrics: Sequence[str] | None = None, alpha: float = 0.05,
                          on_error: str = "fail", seed: int = 0) -> dict[str, Any]:
    """The comparison of ``runs`` in the shape of ``comparison.json`` (no ``require``). ``metrics`` are metric
    families or score columns as in a compare config; by default every column the runs hold but a family's
    secondary ones (BERTScore precision and recall)."""
    from evalkit.scoring.base import metric_columns, secondary_columns

    systems = [SystemRun(r.name, {str(rec.get("id")): rec for rec in r.records}, r.results.get("metrics") or {})
               for r in runs]
    if metrics:
        try:
            metrics = metric_columns(list(metrics))[1]
        except KeyError as exc:
            raise UsageError(exc.args[0]) from None
    else:
        skipped = secondary_columns()
        metrics = [m for m in _metric_order(runs) if m not in skipped]
    shared = {(a.name, b.name) for i, a in enumerate(systems) for b in systems[i + 1:]
              if set(a.records) & set(b.records)}
    unpaired = [(a.name, b.name) for i, a in enumerate(systems) for b in systems[i + 1:]
                if (a.name, b.name) not in shared]
    # pairs without a shared id have no p-value, so Holm (over the tested pairs) is the same without them
    pairs = [p for p in compare_all(systems, metrics, on_error=on_error, seed=seed) if (p.a, p.b) in shared]
    datasets = {r.name: (r.results.get("dataset") or {}) for r in runs}
    shas = {d.get("sha256") for d in datasets.values()}
    notes = [f"{a} and {b} share no record id: they are shown side by side, not compared" for a, b in unpaired]
    if len(shas) > 1:
        notes.append("the runs were evaluated on different datasets (" + "; ".join(
            f"{name}: {d.get('path')} sha256 {str(d.get('sha256'))[:12]}" for name, d in datasets.items())
            + "): records pair on the ids they share")
    tasks = {r.results.get("task") for r in runs}
    return {
        "systems": {s.name: {m: system_summary(s, m, on_error) for m in metrics if m in s.metrics} for s in systems},
        "pairs": [p.to_dict() for p in pairs],
        "require": [],
        "passed": None,
        "verdicts": [verdict_line(p, alpha) for p in pairs],
        "win_rates": win_rates(pairs),
        "task": next(iter(tasks)) if len(tasks) == 1 else "mixed",
        "metrics": metrics,
        "dataset": next(iter(datasets.values())) if len(shas) == 1 else {},
        "datasets": datasets,
        "system_details": {r.name: _details(r) for r in runs},
        "alpha": alpha,
        "on_error": on_error,
        "seed": seed,
        "statistics": STATISTICS,
        "notes": notes,
    }


def _details(run: FinishedRun) -> dict[str, Any]:
    results = run.results
    runner = results.get("runner") or {}
    outputs = results.get("outputs") or {}
    kind = "precomputed" if results.get("model") is None else ("rag" if results.get("retriever") else "model")
    return {"kind": kind, "model": results.get("model"), "outputs": outputs.get("path") or results.get("output_field"),
            "identity": runner.get("identity"), "retriever": results.get("retriever"),
            "counts": results.get("counts"), "generation": results.get("generation"),
            "outcome": results.get("outcome"), "created_at": results.get("created_at"),
            "dataset": results.get("dataset")}
