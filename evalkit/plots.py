"""Charts of finished results that both a notebook API and the HTML report draw, on plain dicts.

matplotlib is imported inside the functions; nothing here calls ``show()`` or touches pyplot state when an
``ax`` is given, so it works under Agg and on a bare :class:`matplotlib.figure.Figure`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def acr_plot_row(row: Mapping[str, Any], index: int) -> dict[str, Any]:
    """An ACR result row with the fields the plot reads; partial rows (hand-made, or from older files) are
    completed from what they have (``success`` from ``censored`` and back; not memorized unless they say so)."""
    if "target_tokens" not in row:
        raise ValueError(f"result {index} has no target_tokens; plot_acr needs target_tokens (and acr when found)")
    success = bool(row.get("success", not row.get("censored", True))) and row.get("acr") is not None
    return {**row, "success": success, "memorized": bool(row.get("memorized", False)) and success}


def plot_acr_rows(rows: Sequence[Mapping[str, Any]], ax: Any = None, threshold: float | None = None):
    """Found ACR against target length: memorized (filled circles), found but not memorized (hollow); targets
    with no prompt found within the budget have no ACR and are marked at 0 with an x. Each found ACR is a lower
    bound on the target's true ACR. Marker shapes, not colour alone, tell the groups apart. Returns the Axes."""
    points = [acr_plot_row(r, index) for index, r in enumerate(rows)]
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(6, 4))
    groups = [
        ("memorized", lambda r: r["memorized"], {"marker": "o", "color": "tab:red"}),
        ("found, not memorized", lambda r: r["success"] and not r["memorized"],
         {"marker": "o", "facecolors": "none", "edgecolors": "tab:blue"}),
    ]
    for label, keep, style in groups:
        chosen = [r for r in points if keep(r)]
        if chosen:
            ax.scatter([r["target_tokens"] for r in chosen], [r["acr"] for r in chosen], label=label, **style)
    missing = [r for r in points if not r["success"]]
    if missing:
        ax.scatter([r["target_tokens"] for r in missing], [0.0] * len(missing), marker="x", color="tab:gray",
                   label="no prompt found within the budget (no ACR)")
    tau = threshold if threshold is not None else (points[0].get("threshold", 1.0) if points else 1.0)
    ax.axhline(tau, color="black", linestyle="--", linewidth=1, label=f"threshold = {tau:g}")
    ax.set_xlabel("target length |y| (tokens)")
    ax.set_ylabel("found ACR = |y| / |x| (a lower bound)")
    ax.set_title("Adversarial compression ratio")
    ax.legend(loc="best", fontsize="small")
    return ax
