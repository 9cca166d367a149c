"""Plain-text tables for the terminal: one aligner for every command's output."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, right: Collection[int] = (),
               rule: bool = False) -> str:
    """Columns padded to their widest cell; column indexes in ``right`` are right-aligned (numbers)."""
    table = [list(header), *(list(r) for r in rows)]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]

    def line(row: list[str]) -> str:
        return "  ".join(cell.rjust(w) if i in right else cell.ljust(w)
                         for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()

    lines = [line(table[0])]
    if rule:
        lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines + [line(r) for r in table[1:]])


def format_generation_line(results: dict[str, Any]) -> str | None:
    """``generation: 12 reused from the run store, 88 generated (3 failed, 17 retries)`` (None without a model),
    plus the identity-change notice when there is one."""
    generation = results.get("generation")
    if not isinstance(generation, dict):
        return None
    line = (f"generation: {generation.get('reused', 0)} reused from the run store, {generation.get('called', 0)} "
            f"generated ({generation.get('failed', 0)} failed, {generation.get('retries', 0)} retries)")
    if generation.get("identity_changed"):
        line += f"\nnote: {generation['identity_changed']}"
    return line


def format_metrics_table(results: dict[str, Any]) -> str:
    """One row per metric: mean, std, the records it rests on (n), errored records, 95% CI; then the counts."""
    rows = []
    for name, s in results.get("metrics", {}).items():
        errors = str(s.get("errors", 0))
        if s.get("mean") is None:
            rows.append([name, "-", "-", str(s.get("n", 0)), errors, "-"])
            continue
        ci = s.get("ci95")
        interval = f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "- (one record)"
        rows.append([name, f"{s['mean']:.4f}", f"{s['std']:.4f}", str(s["n"]), errors, interval])
    counts = results.get("counts", {})
    line = (f"records {counts.get('records', 0)}, scored {counts.get('scored', 0)}, "
            f"generation errors {counts.get('errors', 0)}, scoring errors {counts.get('scoring_errors', 0)}, "
            f"truncated {counts.get('truncated', 0)}, skipped invalid {counts.get('skipped_invalid', 0)}")
    note = "n: records each mean rests on; errors: records without that score (left out of its mean)"
    return (text_table(["metric", "mean", "std", "n", "errors", "95% CI"], rows, right={1, 2, 3, 4, 5})
            + f"\n\n{line}\n{note}")


def acr_budget_text(budget: dict[str, Any] | None) -> str:
    """An ACR row's search budget in words: ``lengths 5, 10, 13 (cap 13); 40 steps a length, width 128, ...``."""
    if not isinstance(budget, dict):
        return "budget not recorded"
    lengths = ", ".join(str(n) for n in budget.get("lengths_tried") or []) or "none"
    return (f"lengths {lengths} (cap {budget.get('max_prompt_tokens')}); {budget.get('steps_per_length')} steps "
            f"a length, width {budget.get('search_width')}, top-k {budget.get('topk')}, "
            f"{budget.get('restarts')} restarts")
