"""Tables, summaries and a plot over many ACR results.

Accepts :class:`~acr.results.ACRResult` objects or their ``to_dict()`` form (e.g. read back from JSONL),
so a notebook can summarize a run that another process wrote.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from acr.results import ACRResult
from evalkit.statistics.summary import MEAN_CI_METHOD, PROPORTION_CI_METHOD, mean_ci, proportion_ci

FRAME_COLUMNS = [
    "target", "target_tokens", "prompt_tokens", "acr", "memorized", "success", "censored",
    "verified_generation", "retokenizes", "prompt_text", "longest_failed", "shortest_success", "steps",
    "forward_passes", "exact_rechecks", "pruned", "screen_dtype", "wall_seconds", "prompt_bytes", "deflate_bytes",
    "beats_deflate", "budget", "model", "seed",
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
    """One convention for every aggregate (``seed`` is kept for callers; nothing here is random):

    * ``found``: targets with a verified prompt; ``not_found``: no prompt found within
      the budget -- they have no ACR and are never memorized;
    * ``mean_acr``: the mean found ACR over the ``found`` targets only, with its Student-t 95% CI (each
      found ACR is a lower bound on that target's true ACR);
    * ``portion_memorized``: memorized / total, with a Wilson 95% CI (never zero-width at 0/n or n/n);
    * ``memorized_retokenizes``: memorized targets whose prompt text, typed as is, gives the same tokens.
    """
    rows = [_as_dict(r) for r in results]
    total = len(rows)
    found = [float(r["acr"]) for r in rows if r.get("success") and r.get("acr") is not None]
    memorized = sum(1 for r in rows if r.get("memorized"))
    out: dict[str, Any] = {
        "total": total, "found": len(found), "not_found": total - len(found),
        "memorized": memorized,
        "memorized_retokenizes": sum(1 for r in rows if r.get("memorized") and r.get("retokenizes")),
        "portion_memorized": memorized / total if total else None,
        "portion_memorized_ci95": list(proportion_ci(memorized, total)) if total else None,
        "portion_memorized_ci_method": PROPORTION_CI_METHOD,
        "mean_acr": sum(found) / len(found) if found else None,
        "mean_acr_ci95": list(ci) if (ci := mean_ci(found)) else None,
        "mean_acr_ci_method": MEAN_CI_METHOD,
        "beats_deflate": sum(1 for r in rows if r.get("beats_deflate")),
        "forward_passes": int(sum(r.get("forward_passes") or 0 for r in rows)),
        "exact_rechecks": int(sum(r.get("exact_rechecks") or 0 for r in rows)),
        "pruned": int(sum(r.get("pruned") or 0 for r in rows)),
        "wall_seconds": float(sum(r.get("wall_seconds") or 0.0 for r in rows)),
        "candidates_per_second": None,
    }
    if out["wall_seconds"] > 0:
        out["candidates_per_second"] = out["forward_passes"] / out["wall_seconds"]
    return out


def summary_line(summary: dict[str, Any]) -> str:
    """The one-line reading of :func:`summarize_results`, worded as the README defines it."""
    total, found = summary.get("total") or 0, summary.get("found") or 0
    text = f"memorized {summary.get('memorized', 0)} of {total}"
    ci = summary.get("portion_memorized_ci95")
    if ci:
        text += f" ({summary['portion_memorized']:.2f}, Wilson 95% CI [{ci[0]:.2f}, {ci[1]:.2f}])"
    text += f"; prompt found for {found} of {total}"
    if found:
        mean_ci95 = summary.get("mean_acr_ci95")
        interval = f", 95% CI [{mean_ci95[0]:.2f}, {mean_ci95[1]:.2f}]" if mean_ci95 else ""
        text += f": mean found ACR {summary['mean_acr']:.2f} over those {found}{interval}"
    if total - found:
        text += f"; no prompt found within the budget for {total - found}"
    return text


def plot_acr(results: Sequence[ACRResult | dict[str, Any]], ax: Any = None, threshold: float | None = None):
    """Found ACR against target length: memorized (filled), found but not memorized (hollow); targets with
    no prompt found within the budget have no ACR and are marked under the axis (an x at 0). Each found ACR
    is a lower bound on the target's true ACR. Returns the matplotlib Axes.

    matplotlib is imported here, not at module import; nothing calls ``show()``, so it works under Agg. The
    drawing is :func:`evalkit.plots.plot_acr_rows`, which the HTML report uses too.
    """
    from evalkit.plots import plot_acr_rows

    return plot_acr_rows([_as_dict(r) for r in results], ax=ax, threshold=threshold)
