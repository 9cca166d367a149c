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


def format_metrics_table(results: dict[str, Any]) -> str:
    rows = []
    for name, s in results.get("metrics", {}).items():
        if s.get("mean") is None:
            rows.append([name, "-", "-", str(s.get("n", 0)), "-"])
            continue
        low, high = s["ci95"]
        rows.append([name, f"{s['mean']:.4f}", f"{s['std']:.4f}", str(s["n"]), f"[{low:.4f}, {high:.4f}]"])
    counts = results.get("counts", {})
    return (text_table(["metric", "mean", "std", "n", "95% CI"], rows, right={1, 2, 3, 4})
            + f"\n\nrecords {counts.get('records', 0)}, scored {counts.get('scored', 0)}, "
            f"errors {counts.get('errors', 0)}, skipped invalid {counts.get('skipped_invalid', 0)}")
