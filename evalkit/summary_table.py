"""The plain-text metric table printed at the end of a run."""

from __future__ import annotations

from typing import Any


def format_metrics_table(results: dict[str, Any]) -> str:
    rows = [("metric", "mean", "std", "n", "95% CI")]
    for name, s in results.get("metrics", {}).items():
        if s.get("mean") is None:
            rows.append((name, "-", "-", str(s.get("n", 0)), "-"))
            continue
        low, high = s["ci95"]
        rows.append((name, f"{s['mean']:.4f}", f"{s['std']:.4f}", str(s["n"]), f"[{low:.4f}, {high:.4f}]"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in
                       enumerate(zip(row, widths, strict=True))) for row in rows]
    counts = results.get("counts", {})
    lines.append(f"\nrecords {counts.get('records', 0)}, scored {counts.get('scored', 0)}, "
                 f"errors {counts.get('errors', 0)}, skipped invalid {counts.get('skipped_invalid', 0)}")
    return "\n".join(lines)
