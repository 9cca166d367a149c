"""The comparison report: ``report.html`` of ``evalkit compare``, one self-contained file.

Verdict first (the ``require`` rules), then the plain-language verdict lines, each system's mean per metric
with its 95% CI (a table and a chart with CI whiskers), every pairwise comparison, and one row per question
with each system's answer, scores, retrieved context and judge reasoning side by side -- questions where the
systems disagree most first. Built on the run report's template and its safety: everything is escaped, the
page loads nothing.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Mapping, Sequence
from typing import Any

from evalkit.atomic import atomic_write_text
from evalkit.reports.html import (
    Section,
    _flags,
    _fmt_num,
    _gate,
    _plain,
    _record_details,
    _text,
    errored_records,
    render_report,
)


def _ci_text(summary: Mapping[str, Any]) -> str:
    mean, ci = summary.get("mean"), summary.get("ci95")
    text = _fmt_num(mean)
    if ci:
        text += f" [{_fmt_num(ci[0])}, {_fmt_num(ci[1])}]"
    errors = summary.get("errors") or 0
    return text + f" (n={summary.get('n')}{f', {errors} err' if errors else ''})"


def _systems_table(comparison: Mapping[str, Any]) -> dict[str, Any]:
    """One row per metric, one column per system (mean [95% CI] (n)): fits however many metrics there are."""
    systems = comparison.get("systems") or {}
    metrics = list(comparison.get("metrics") or [])
    metrics = [m for m in metrics if any(m in s for s in systems.values())]
    lower = {m for m in metrics if any((s.get(m) or {}).get("higher_is_better") is False for s in systems.values())}
    rows = [{"cells": [f"{m} ({'lower' if m in lower else 'higher'} is better)",
                       *(_ci_text(summaries[m]) if m in summaries else "—" for summaries in systems.values())]}
            for m in metrics]
    unit = [m for m in metrics if all(_in_unit(s.get(m)) for s in systems.values())]
    other = [m for m in metrics if m not in unit]
    hint = ("Mean per system with its 95% confidence interval and the number of records; errored records count "
            f"as {comparison.get('on_error')} (the gate's error policy).")
    if other:
        hint += f" Not in the chart (another scale than 0 to 1): {', '.join(other)}."
    return {"columns": ["metric", *systems], "rows": rows, "hint": hint, "chart": _chart(systems, unit),
            "chart_alt": "Mean of each metric per system, with 95% confidence intervals"}


def _in_unit(summary: Mapping[str, Any] | None) -> bool:
    """Whether a metric is on the 0..1 scale the shared chart axis shows: its range, or (older files) its mean
    and CI."""
    if not summary:
        return True
    if summary.get("range"):
        return list(summary["range"]) == [0.0, 1.0]
    values = [summary.get("mean"), *(summary.get("ci95") or [])]
    return all(v is None or 0.0 <= v <= 1.0 for v in values)


def _chart(systems: Mapping[str, Mapping[str, Any]], metrics: Sequence[str]) -> str | None:
    """Grouped bars (one group per metric, one bar per system) with CI whiskers, as a base64 PNG."""
    if not systems or not metrics:
        return None
    import numpy as np
    from matplotlib.figure import Figure

    names = list(systems)
    fig = Figure(figsize=(max(6.0, 1.1 * len(metrics) * max(1, len(names)) / 2 + 2), 3.4), dpi=110)
    ax = fig.add_subplot()
    width = 0.8 / len(names)
    x = np.arange(len(metrics))
    hatches = ["", "//", "..", "xx", "\\\\", "--", "++", "oo"]
    for i, name in enumerate(names):
        means, low, high = [], [], []
        for m in metrics:
            s = systems[name].get(m) or {}
            mean = s.get("mean")
            ci = s.get("ci95") or [mean, mean]
            means.append(np.nan if mean is None else mean)
            low.append(0 if mean is None or ci[0] is None else max(0.0, mean - ci[0]))
            high.append(0 if mean is None or ci[1] is None else max(0.0, ci[1] - mean))
        ax.bar(x + (i - (len(names) - 1) / 2) * width, means, width, yerr=[low, high], capsize=3, label=name,
               hatch=hatches[i % len(hatches)], edgecolor="black", linewidth=0.5)  # hatching: not colour alone
    ax.set_xticks(x, list(metrics), rotation=20, ha="right", fontsize=8)
    ax.axhline(0, color="black", linewidth=0.5)
    ax.legend(fontsize=8, ncols=min(len(names), 4))
    ax.set_ylabel("mean (95% CI)")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _p(value: Any) -> str:
    if value is None:
        return "—"
    return "<0.0001" if value < 1e-4 else f"{value:.4f}"


def _pairs_table(comparison: Mapping[str, Any]) -> dict[str, Any]:
    rows = []
    alpha = comparison.get("alpha", 0.05)
    for p in comparison.get("pairs") or []:
        ci = p.get("ci95")
        significant = p.get("p_holm") is not None and p["p_holm"] < alpha
        rows.append({"cls": "" if significant else "muted", "cells": [
            f"{p['a']} vs {p['b']}", p["metric"], _fmt_num(p.get("delta")),
            f"[{_fmt_num(ci[0])}, {_fmt_num(ci[1])}]" if ci else "—", _p(p.get("p")), _p(p.get("p_holm")),
            f"{p['wins']}/{p['ties']}/{p['losses']}", str(p.get("n")), p.get("test") or "—"]})
    return {"columns": ["pair", "metric", "delta (a − b)", "95% CI", "p", "Holm p", "W/T/L", "n", "test"],
            "rows": rows, "text_columns": [1, 8],
            "hint": "delta is the mean of a − b over the questions both systems answered; W/T/L counts questions "
                    "where a is better / equal / worse (honouring lower-is-better metrics). Holm p corrects for "
                    f"every pair and metric; a difference is significant when Holm p < {alpha:g}."}


def _win_rate_tables(comparison: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One matrix per metric: the share of shared records where the row's system beats the column's (ties
    count half). The number is always printed; colour is never the only signal."""
    tables = []
    for metric, rates in (comparison.get("win_rates") or {}).items():
        names = [n for n in comparison.get("systems") or {} if n in rates]
        rows = [{"cells": [a, *("—" if a == b else _fmt_num(rates[a].get(b), 2) if b in rates[a] else "n/a"
                                for b in names)]} for a in names]
        tables.append({"columns": [f"{metric}: row beats column", *names], "rows": rows})
    return tables


def _disagreement(cells: Sequence[Mapping[str, Any]]) -> float:
    values = [c["value"] for c in cells if c.get("value") is not None]
    return max(values) - min(values) if len(values) > 1 else 0.0


def _samples(comparison: Mapping[str, Any], records: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, Any]:
    names = list(records)
    metrics = [m for m in comparison.get("metrics") or []]
    key_metric = metrics[0] if metrics else None
    by_system = {n: {str(r.get("id")): r for r in records[n]} for n in names}
    ids = list(dict.fromkeys(str(r.get("id")) for n in names for r in records[n]))
    rows = []
    for rid in ids:
        first = next((by_system[n][rid] for n in names if rid in by_system[n]), {})
        cells = []
        for n in names:
            r = by_system[n].get(rid) or {}
            scores = r.get("scores") or {}
            details = _record_details(r)
            details += [("flag", f) for f in _flags(r)]
            errors = "; ".join(f"{k}: {v}" for k, v in (r.get("score_errors") or {}).items())
            cells.append({"output": _text(r.get("model_output")),
                          "error": _plain(r.get("error") or errors) or None,
                          "scores": [(m, _fmt_num(scores[m])) for m in metrics if m in scores],
                          "details": details, "value": scores.get(key_metric) if key_metric else None})
        rows.append({"id": rid, "input": _text(first.get("model_input")),
                     "reference": _text(first.get("target_output")), "cells": cells,
                     "error": any(c["error"] for c in cells), "spread": _disagreement(cells)})
    rows.sort(key=lambda row: -row["spread"])
    return {"systems": names, "rows": rows}


def _verdict_lines(comparison: Mapping[str, Any]) -> dict[str, Any]:
    """The verdict lines: significant differences shown, the rest folded under one line that counts them."""
    alpha = comparison.get("alpha", 0.05)
    lines = list(comparison.get("verdicts") or [])
    pairs = list(comparison.get("pairs") or [])
    if len(pairs) != len(lines):
        return {"lines": lines, "hint": "Every pair of systems on every metric, in words."}
    shown = [line for line, p in zip(lines, pairs, strict=True)
             if p.get("p_holm") is not None and p["p_holm"] < alpha]
    folded = [line for line, p in zip(lines, pairs, strict=True)
              if not (p.get("p_holm") is not None and p["p_holm"] < alpha)]
    return {"lines": shown, "folded": folded,
            "folded_label": f"{len(folded)} of {len(lines)} comparisons show no significant difference",
            "empty": "No pair of systems differs significantly on any metric." if not shown else None,
            "hint": f"Every pair of systems on every metric, in words: a difference is significant when its "
                    f"Holm-corrected p-value (across all {len(lines)} comparisons) is below {alpha:g}."}


def require_gate(comparison: Mapping[str, Any]) -> dict[str, Any]:
    """A comparison's require rules in the gate section's form."""
    return _gate({"passed": comparison.get("passed"), "rules": comparison.get("require") or [],
                  "alpha": comparison.get("alpha"), "on_error": comparison.get("on_error")})


def build_compare_sections(comparison: Mapping[str, Any],
                           records: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[Section]:
    dataset = comparison.get("dataset") or {}
    details = comparison.get("system_details") or {}
    overview = [("Task", comparison.get("task")), ("Config", comparison.get("config")),
                ("Dataset", dataset.get("path")), ("Dataset SHA-256", dataset.get("sha256")),
                ("Questions", dataset.get("n_records")), ("alpha", comparison.get("alpha")),
                ("Errored records", comparison.get("on_error")), ("Seed", comparison.get("seed")),
                ("Created", comparison.get("created_at")),
                ("Duration", f"{(comparison.get('timings') or {}).get('total_s', 0):.1f} s")]
    for name, d in details.items():
        what = d.get("model") or d.get("outputs")
        retriever = d.get("retriever") or {}
        if retriever:
            what = f"{what} + RAG over {retriever.get('documents')} (top {retriever.get('top_k')}, " \
                   f"{retriever.get('chunks')} chunks, {retriever.get('embedding_model')})"
        overview.append((f"System {name}", f"{d.get('kind')}: {what}"))
    sections = []
    if comparison.get("require"):  # the verdict first
        gate = require_gate(comparison)
        sections.append(Section("require", "Requirements", "gate", gate, badge="PASS" if gate["passed"] else "FAIL",
                                badge_ok=bool(gate["passed"])))
    sections.append(Section("overview", "What was compared", "kv",
                            [(k, _plain(v)) for k, v in overview if v is not None]))
    sections.append(Section("verdicts", "Verdicts", "lines", _verdict_lines(comparison)))
    sections.append(Section("systems", "Systems", "table", _systems_table(comparison)))
    sections.append(Section("pairs", "Pairwise", "table", _pairs_table(comparison)))
    tables = _win_rate_tables(comparison)
    if tables:
        sections.append(Section("win-rates", "Win rates", "tables", {
            "tables": tables,
            "hint": "Each cell: the share of the records both systems answered where the row's system scores better "
                    "than the column's, ties counted half (0.50: even). Read a row to see whom a system beats."}))
    sections.append(Section("samples", "Questions", "compare_samples", _samples(comparison, records)))
    return sections


def render_compare_report(comparison: Mapping[str, Any], records: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    header = {"task": f"compare · {comparison.get('task')}",
              "model": " vs ".join(comparison.get("systems") or {}),
              "created_at": comparison.get("created_at"),
              "counts": {"records": (comparison.get("dataset") or {}).get("n_records"),
                         "errors": sum(errored_records(r) for r in records.values())},
              "timings": comparison.get("timings")}
    if comparison.get("require"):
        header["gate"] = {"passed": bool(comparison.get("passed")), "label": "Requirements"}
    return render_report(header, [], sections=build_compare_sections(comparison, records))


def write_compare_report(path: str | os.PathLike, comparison: Mapping[str, Any],
                         records: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
    atomic_write_text(path, render_compare_report(comparison, records))
