"""Tables, summaries and a plot over many ACR results.

Accepts :class:`~acr.results.ACRResult` objects or their ``to_dict()`` form (e.g. read back from JSONL),
so a notebook can summarize a run that another process wrote.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from acr.results import ACRResult
from evalkit.stats import bootstrap_ci

FRAME_COLUMNS = [
    "target", "target_tokens", "prompt_tokens", "acr", "memorized", "success", "censored",
    "verified_generation", "retokenizes", "prompt_text", "longest_failed", "shortest_success", "steps",
    "forward_passes", "exact_rechecks", "screen_dtype", "wall_seconds", "gzip_ratio", "memorized_vs_gzip",
    "model", "seed",
]


def _as_dict(result: ACRResult | dict[str, Any]) -> dict[str, Any]:
    return result.to_dict() if isinstance(result, ACRResult) else dict(result)


def results_frame(results: Sequence[ACRResult | dict[str, Any]]):
    """One row per target, the columns worth reading (bracket flattened); a ``pandas.DataFrame``."""
    import pandas as pd

    rows = []
    for result in results:
        d = _as_dict(result)
        bracket = d.get("bracket") or {}
        d["longest_failed"] = bracket.get("longest_failed")
        d["shortest_success"] = bracket.get("shortest_success")
        rows.append({column: d.get(column) for column in FRAME_COLUMNS})
    return pd.DataFrame(rows, columns=FRAME_COLUMNS)


def summarize_results(results: Sequence[ACRResult | dict[str, Any]], seed: int = 0) -> dict[str, Any]:
    """Portion memorized and mean ACR with seeded bootstrap 95% CIs, plus counts and throughput.

    ``mean_acr`` averages every target, censored ones at their bound ``|y| / cap`` (the true value is
    below it), so no target is dropped; ``mean_acr_successful`` averages only targets where a prompt
    was found. A censored target always counts as not memorized.
    """
    rows = [_as_dict(r) for r in results]
    total = len(rows)
    out: dict[str, Any] = {"total": total, "memorized": 0, "censored": 0, "successful": 0,
                           "portion_memorized": None, "portion_memorized_ci95": None,
                           "mean_acr": None, "mean_acr_ci95": None,
                           "mean_acr_successful": None, "mean_acr_successful_ci95": None,
                           "portion_memorized_vs_gzip": None,
                           "forward_passes": 0, "exact_rechecks": 0, "wall_seconds": 0.0,
                           "candidates_per_second": None}
    if total == 0:
        return out
    memorized = [1.0 if r["memorized"] else 0.0 for r in rows]
    acrs = [float(r["acr"]) for r in rows if r.get("acr") is not None]
    found = [float(r["acr"]) for r in rows if r["success"] and r.get("acr") is not None]
    out["memorized"] = int(sum(memorized))
    out["censored"] = sum(1 for r in rows if r["censored"])
    out["successful"] = sum(1 for r in rows if r["success"])
    out["portion_memorized"] = sum(memorized) / total
    out["portion_memorized_ci95"] = list(bootstrap_ci(memorized, seed=seed))
    out["portion_memorized_vs_gzip"] = sum(1 for r in rows if r.get("memorized_vs_gzip")) / total
    if acrs:
        out["mean_acr"] = sum(acrs) / len(acrs)
        out["mean_acr_ci95"] = list(bootstrap_ci(acrs, seed=seed))
    if found:
        out["mean_acr_successful"] = sum(found) / len(found)
        out["mean_acr_successful_ci95"] = list(bootstrap_ci(found, seed=seed))
    out["forward_passes"] = int(sum(r.get("forward_passes") or 0 for r in rows))
    out["exact_rechecks"] = int(sum(r.get("exact_rechecks") or 0 for r in rows))
    out["wall_seconds"] = float(sum(r.get("wall_seconds") or 0.0 for r in rows))
    if out["wall_seconds"] > 0:
        out["candidates_per_second"] = out["forward_passes"] / out["wall_seconds"]
    return out


def _plot_row(row: dict[str, Any], index: int) -> dict[str, Any]:
    """A row with the fields the plot reads; partial rows (hand-made, or from older files) are completed
    from what they have (``success`` from ``censored`` and back; not memorized unless they say so)."""
    missing = [key for key in ("target_tokens", "acr") if key not in row]
    if missing:
        raise ValueError(f"result {index} has no {' or '.join(missing)}; plot_acr needs target_tokens and acr")
    success = bool(row.get("success", not row.get("censored", True)))
    return {**row, "success": success, "memorized": bool(row.get("memorized", False)) and success}


def plot_acr(results: Sequence[ACRResult | dict[str, Any]], ax: Any = None, threshold: float | None = None):
    """ACR against target length: memorized (filled), found but not memorized (hollow), censored (a
    downward triangle at the bound: the true ACR lies below). Returns the matplotlib Axes.

    matplotlib is imported here, not at module import; nothing calls ``show()``, so it works under Agg.
    """
    import matplotlib.pyplot as plt

    rows = [_plot_row(_as_dict(r), index) for index, r in enumerate(results)]
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    groups = [
        ("memorized", lambda r: r["memorized"], {"marker": "o", "color": "tab:red"}),
        ("found, not memorized", lambda r: r["success"] and not r["memorized"],
         {"marker": "o", "facecolors": "none", "edgecolors": "tab:blue"}),
        ("censored (upper bound)", lambda r: not r["success"], {"marker": "v", "color": "tab:gray"}),
    ]
    for label, keep, style in groups:
        chosen = [r for r in rows if keep(r) and r.get("acr") is not None]
        if chosen:
            ax.scatter([r["target_tokens"] for r in chosen], [r["acr"] for r in chosen], label=label, **style)
    tau = threshold if threshold is not None else (rows[0].get("threshold", 1.0) if rows else 1.0)
    ax.axhline(tau, color="black", linestyle="--", linewidth=1, label=f"threshold = {tau:g}")
    ax.set_xlabel("target length |y| (tokens)")
    ax.set_ylabel("ACR = |y| / |x|")
    ax.set_title("Adversarial compression ratio")
    ax.legend(loc="best", fontsize="small")
    return ax
