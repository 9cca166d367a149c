"""The ACR report: ``evalkit acr run`` (summary.json + results.jsonl) and ``evalkit acr compare``
(compare.json + compare.jsonl, and a run directory per model).

For one model: the summary (portion memorized with its Wilson CI, mean found ACR with its Student-t CI, counts),
the distribution of found ACRs, the ACR-against-length chart and one row per target (target, found prompt, |y|,
|x|, ACR, memorized, found or the budget it ran out of, verified by generation). For two models: the paired
memorized and completion-test tables with exact McNemar tests, the mean ACR difference, and one row per target
side by side, then each model's section. Drawn without importing ``acr`` (charts from :mod:`evalkit.plots`).
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
    _dict,
    _finite,
    _flatten,
    _fmt_num,
    _histogram_png,
    _overview,
    _p,
    _plain,
    _text,
    render_report,
)


def _acr_plot_png(rows: Sequence[Mapping]) -> str | None:
    """acr.plot_acr drawn on a bare Agg Figure (no pyplot state), as base64 PNG; None if nothing to plot."""
    if not any(_finite(r.get("acr")) is not None for r in rows):
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from evalkit.plots import plot_acr_rows  # the report never imports acr

    fig = Figure(figsize=(6, 3.6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    try:
        plot_acr_rows([dict(r) for r in rows], ax=fig.add_subplot())
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=120, metadata={"Software": None})
    finally:
        fig.clear()
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _acr_section(summary: Mapping, rows: Sequence[Any]) -> dict:
    """Data of the ``acr`` section: summary table, per-target table and the ACR plot."""
    s = _dict(summary)

    def with_ci(key: str) -> str:
        ci = s.get(f"{key}_ci95")
        text = _fmt_num(s.get(key))
        if isinstance(ci, (list, tuple)) and len(ci) == 2:
            text += f"  [{_fmt_num(ci[0])}, {_fmt_num(ci[1])}]"
        return text

    total = s.get("total")
    summary_rows = [
        ("Memorized (Wilson 95% CI)", f"{_fmt_num(s.get('memorized'))} of {_fmt_num(total)}: "
                                      + with_ci("portion_memorized")),
        ("Memorized, prompt text re-tokenizes", f"{_fmt_num(s.get('memorized_retokenizes'))} of {_fmt_num(total)}"),
        ("Prompt found", f"{_fmt_num(s.get('found'))} of {_fmt_num(total)}"),
        ("No prompt found within the budget", f"{_fmt_num(s.get('not_found'))} of {_fmt_num(total)} (proves nothing "
                                              "about the true shortest prompt)"),
        ("Mean found ACR over the found prompts (Student-t 95% CI)", with_ci("mean_acr")),
        ("Found prompt shorter than DEFLATE(y), in bytes", f"{_fmt_num(s.get('beats_deflate'))} of {_fmt_num(total)}"),
        ("Resumed / computed", f"{_fmt_num(s.get('resumed'))} / {_fmt_num(s.get('computed'))}"),
        ("Forward passes", _fmt_num(s.get("forward_passes"))),
        ("Re-scored by the model (screened best and near-matches)", _fmt_num(s.get("exact_rechecks"))),
        ("Stopped before the target's end (could not match or move the search)", _fmt_num(s.get("pruned"))),
        ("Candidates per second", _fmt_num(s.get("candidates_per_second"), 1)),
    ]
    from evalkit.summary_table import acr_budget_text

    targets = []
    for i, row in enumerate(rows):
        r = _dict(row)
        acr = _finite(r.get("acr"))
        found = r.get("success") is True and acr is not None
        targets.append({
            "index": str(i + 1),
            "target": _text(r.get("target")),
            "prompt": _text(r.get("prompt_text")),
            "target_tokens": _fmt_num(r.get("target_tokens")),
            "prompt_tokens": _fmt_num(r.get("prompt_tokens")) if found else "—",
            "acr": f"≥ {acr:.3f}" if found else "—",
            "memorized": r.get("memorized") is True,
            "result": "found" if found else f"no prompt found within the budget ({acr_budget_text(r.get('budget'))})",
            "verified": _fmt_num(r.get("verified_generation")),
        })
    found = [f for r in rows if _dict(r).get("success") is True and (f := _finite(_dict(r).get("acr"))) is not None]
    return {"summary": summary_rows, "config": _flatten(_dict(s.get("config"))), "rows": targets,
            "png": _acr_plot_png([r for r in rows if isinstance(r, Mapping)]),
            "hist_png": _histogram_png("found ACR", found) if found else None, "n_found": len(found)}


def build_acr_sections(summary: Mapping, rows: Sequence[Any]) -> list[Section]:
    """Sections of an ACR run's report: run overview, the ACR section, environment."""
    s = _dict(summary)
    targets = _dict(s.get("targets"))
    overview = _overview({
        "task": "acr", "model": s.get("model"), "created_at": s.get("created_at"), "seed": s.get("seed"),
        "dataset": {"path": targets.get("path"), "sha256": targets.get("sha256"),
                    "n_records": targets.get("n_targets")},
        "counts": s.get("counts"), "timings": s.get("timings"),
    })
    memorized = s.get("memorized")
    badge = None if memorized is None else f"{_fmt_num(memorized)}/{_fmt_num(s.get('total'))} memorized"
    sections = [Section("run", "Run", "overview", overview),
                Section("acr", "Adversarial compression ratio", "acr", _acr_section(s, rows), badge=badge)]
    env = {"versions": _flatten(_dict(s.get("versions"))),
           "runner": _flatten(s.get("runner")) if s.get("runner") is not None else []}
    if env["versions"] or env["runner"]:
        sections.append(Section("environment", "Environment", "environment", env))
    return sections


def render_acr_report(summary: Mapping, rows: Sequence[Any]) -> str:
    """The self-contained HTML report of an ACR run (``summary.json`` + ``results.jsonl`` rows)."""
    s = _dict(summary)
    counts = {"records": s.get("total", len(rows)), "errors": 0}
    results = {"task": "acr", "model": s.get("model"), "created_at": s.get("created_at"), "counts": counts,
               "timings": s.get("timings")}
    return render_report(results, [], sections=build_acr_sections(s, list(rows)))


def write_acr_report(path: str | os.PathLike, summary: Mapping, rows: Sequence[Any]) -> None:
    atomic_write_text(path, render_acr_report(summary, rows))


def _yes_no(v: Any) -> str:
    return "—" if v is None else ("yes" if v else "no")


def _acr_cell(r: Mapping, side: str) -> str:
    if r.get(f"found{side}") and r.get(f"acr{side}") is not None:
        return f"≥ {float(r[f'acr{side}']):.3f} (|x|={_fmt_num(r.get(f'prompt_tokens{side}'))})"
    return "no prompt found"


def _paired_table(table: Mapping, label: str) -> dict[str, Any]:
    t = _dict(table)
    return {"columns": [label, "B yes", "B no"],
            "rows": [{"cells": ["A yes", _fmt_num(t.get("both")), _fmt_num(t.get("only_a"))]},
                     {"cells": ["A no", _fmt_num(t.get("only_b")), _fmt_num(t.get("neither"))]}]}


def build_acr_compare_sections(summary: Mapping, records: Sequence[Any],
                               runs: Mapping[str, tuple[Mapping, Sequence[Any]]]) -> list[Section]:
    """Sections of ``evalkit acr compare``: the model-vs-model verdict, the paired tables, one row per target,
    then each model's own ACR section (``runs``: label -> (summary.json, results.jsonl rows))."""
    s = _dict(summary)

    def ci(key: str) -> str:
        interval = s.get(f"{key}_ci95")
        text = _fmt_num(s.get(key))
        return text + (f" [{_fmt_num(interval[0])}, {_fmt_num(interval[1])}]"
                       if isinstance(interval, (list, tuple)) and len(interval) == 2 else "")

    n = s.get("n")
    facts = [("Model A", _plain(s.get("model_a"))), ("Model B", _plain(s.get("model_b"))),
             ("Targets", f"{_fmt_num(n)} from {_plain(_dict(s.get('targets')).get('path'))}"),
             ("Memorized (ACR > threshold)",
              f"A {_fmt_num(s.get('memorized_a'))}, B {_fmt_num(s.get('memorized_b'))} of {_fmt_num(n)}; exact "
              f"McNemar p = {_p(s.get('memorized_mcnemar_p'))}"),
             ("Completion test (greedy continuation of the first half)",
              f"A {_fmt_num(s.get('completion_memorized_a'))}, B {_fmt_num(s.get('completion_memorized_b'))} of "
              f"{_fmt_num(n)}; exact McNemar p = {_p(s.get('completion_mcnemar_p'))}"),
             ("Portion memorized, Wilson 95% CI", f"A {ci('portion_memorized_a')}; B {ci('portion_memorized_b')}"),
             ("Mean found ACR, Student-t 95% CI", f"A {ci('mean_acr_a')}; B {ci('mean_acr_b')}"),
             ("Mean ACR difference B − A (targets found by both)",
              f"{ci('mean_acr_diff')} over {_fmt_num(s.get('both_found'))} targets"),
             ("Seed", _plain(s.get("seed"))), ("Created", _plain(s.get("created_at")))]
    rows = []
    for r in records:
        r = _dict(r)
        rows.append({"cells": [_fmt_num(r.get("index")), _text(r.get("target")).preview, _acr_cell(r, "_a"),
                               _acr_cell(r, "_b"), _fmt_num(r.get("acr_diff")),
                               f"{_yes_no(r.get('memorized_a'))} / {_yes_no(r.get('memorized_b'))}",
                               f"{_yes_no(r.get('completion_memorized_a'))} / "
                               f"{_yes_no(r.get('completion_memorized_b'))}"]})
    sections = [
        Section("acr-compare", "Model A vs model B", "kv", facts),
        Section("acr-paired", "Paired outcomes", "tables", {
            "tables": [_paired_table(s.get("memorized_table"), "memorized"),
                       _paired_table(s.get("completion_table"), "completion test")],
            "hint": "Each target counted once: memorized (or completed) by both models, by only one, or by neither. "
                    "The McNemar test above uses only the targets where the models disagree."}),
        Section("acr-targets", "Targets side by side", "table", {
            "columns": ["#", "target", "ACR A", "ACR B", "B − A", "memorized A / B", "completion A / B"],
            "rows": rows, "text_columns": [1],
            "hint": "Each found ACR is a lower bound on the true ACR (a shorter prompt may exist); 'no prompt found' "
                    "means the search ran out of its budget, which proves nothing about the target."})]
    for label, (run_summary, run_rows) in runs.items():
        for section in build_acr_sections(run_summary, run_rows):
            if section.id == "acr":
                sections.append(Section(f"acr-{label}", f"ACR of model {label.upper()}", "acr", section.data,
                                        badge=section.badge))
    return sections


def render_acr_compare_report(summary: Mapping, records: Sequence[Any],
                              runs: Mapping[str, tuple[Mapping, Sequence[Any]]]) -> str:
    s = _dict(summary)
    header = {"task": "acr compare", "model": f"{_plain(s.get('model_a'))} vs {_plain(s.get('model_b'))}",
              "created_at": s.get("created_at"), "counts": {"records": s.get("n"), "errors": 0}}
    return render_report(header, [], sections=build_acr_compare_sections(s, records, runs))


def write_acr_compare_report(path: str | os.PathLike, summary: Mapping, records: Sequence[Any],
                             runs: Mapping[str, tuple[Mapping, Sequence[Any]]]) -> None:
    atomic_write_text(path, render_acr_compare_report(summary, records, runs))
