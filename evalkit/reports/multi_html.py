"""The report of several finished output directories (``evalkit report DIR DIR ... -o FILE.html``).

What was evaluated comes first (one row per directory: kind, model, dataset, date, duration, errors), then
every verdict the directories hold (gate checks, require rules), then -- when two or more runs or systems
share metrics -- the comparison of all of them (the sections of the ``evalkit compare`` report: systems with
CIs and a chart, every pair, win rates, verdict lines, questions side by side), then each ACR audit. One
self-contained file, with the escaping and the content security policy of the run report.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from evalkit.atomic import atomic_write_text
from evalkit.reports.acr_html import build_acr_compare_sections, build_acr_sections
from evalkit.reports.compare_html import build_compare_sections, require_gate
from evalkit.reports.html import Section, _fmt_num, _fmt_seconds, _gate, _plain, errored_records, render_report
from evalkit.reports.sources import ACR, ACR_COMPARE, COMPARE, RUN, ReportSource


def _what(source: ReportSource) -> dict[str, str]:
    d = source.data
    if source.kind == RUN:
        dataset = d.get("dataset") or {}
        counts = d.get("counts") or {}
        model = d.get("model") or f"precomputed outputs ({d.get('output_field') or 'output field'})"
        errors = counts.get("failed_records", counts.get("errors"))
        status = (d.get("outcome") or {}).get("status")
        kind = f"evalkit run {d.get('task') or ''}".strip() + (f" ({status})" if status not in (None, "complete")
                                                               else "")
        return {"kind": kind, "model": _plain(model),
                "dataset": f"{dataset.get('path')} ({_fmt_num(dataset.get('n_records'))} records, sha256 "
                           f"{str(dataset.get('sha256'))[:12]})",
                "created": _plain(d.get("created_at") or "—"),
                "duration": _fmt_seconds((d.get("timings") or {}).get("total_s")),
                "errors": _fmt_num(errors)}
    if source.kind == COMPARE:
        dataset = d.get("dataset") or {}
        return {"kind": f"evalkit compare {d.get('task') or ''}".strip(),
                "model": " vs ".join(d.get("systems") or {}),
                "dataset": f"{dataset.get('path')} ({_fmt_num(dataset.get('n_records'))} records, sha256 "
                           f"{str(dataset.get('sha256'))[:12]})",
                "created": _plain(d.get("created_at") or "—"),
                "duration": _fmt_seconds((d.get("timings") or {}).get("total_s")), "errors": "—"}
    targets = d.get("targets") or {}
    if source.kind == ACR_COMPARE:
        return {"kind": "evalkit acr compare", "model": f"{_plain(d.get('model_a'))} vs {_plain(d.get('model_b'))}",
                "dataset": f"{targets.get('path')} ({_fmt_num(d.get('n'))} targets)",
                "created": _plain(d.get("created_at") or "—"), "duration": "—", "errors": "—"}
    return {"kind": "evalkit acr run", "model": _plain(d.get("model")),
            "dataset": f"{targets.get('path')} ({_fmt_num(d.get('total'))} targets)",
            "created": _plain(d.get("created_at") or "—"),
            "duration": _fmt_seconds((d.get("timings") or {}).get("total_s")), "errors": "—"}


def _runs_table(sources: Sequence[ReportSource]) -> dict[str, Any]:
    rows = []
    for s in sources:
        w = _what(s)
        rows.append({"cells": [s.label, w["kind"], w["model"], w["dataset"], w["created"], w["duration"],
                               w["errors"]]})
    return {"columns": ["directory", "what", "model / systems", "dataset", "created", "duration", "errors"],
            "rows": rows, "text_columns": [1, 2, 3, 4],
            "hint": "One row per output directory given to evalkit report, in the order given."}


def _verdict_sections(sources: Sequence[ReportSource]) -> list[Section]:
    sections = []
    for i, s in enumerate(sources):
        if s.kind == RUN and s.data.get("gate") is not None:
            data = _gate(s.data["gate"])
        elif s.kind == COMPARE and s.data.get("require"):
            data = require_gate(s.data)
        else:
            continue
        badge = None if data["passed"] is None else ("PASS" if data["passed"] else "FAIL")
        sections.append(Section(f"verdict-{i + 1}", f"Verdict: {s.label}", "gate", data, badge=badge,
                                badge_ok=data["passed"]))
    return sections


def build_multi_sections(sources: Sequence[ReportSource], comparison: Mapping[str, Any] | None,
                         records: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[Section]:
    """Sections of a report over ``sources``; ``comparison`` (from evalkit.compare.finished) covers the runs
    and systems among them, ``records`` their records by the same names."""
    sections = [Section("runs", "What was evaluated", "table", _runs_table(sources))]
    sections += _verdict_sections(sources)
    if comparison is not None:
        compared = [s for s in build_compare_sections(comparison, records) if s.id not in ("overview", "require")]
        notes = comparison.get("notes") or []
        if notes:
            compared.insert(0, Section("notes", "Read this first", "lines", {"lines": notes}))
        sections += compared
    for i, s in enumerate(sources):
        if s.kind == ACR_COMPARE:
            for section in build_acr_compare_sections(s.data, s.records, s.acr_runs):
                sections.append(Section(f"{section.id}-{i + 1}", f"{section.title}: {s.label}", section.kind,
                                        section.data, badge=section.badge, badge_ok=section.badge_ok))
        if s.kind == ACR:
            for section in build_acr_sections(s.data, s.records):
                if section.id == "acr":
                    sections.append(Section(f"acr-{i + 1}", f"ACR: {s.label}", "acr", section.data,
                                            badge=section.badge, badge_ok=section.badge_ok))
    return sections


def render_multi_report(sources: Sequence[ReportSource], comparison: Mapping[str, Any] | None,
                        records: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    header = {"task": f"report · {len(sources)} output directories",
              "model": " vs ".join(s.label for s in sources),
              "counts": {"records": sum(len(r) for r in records.values()) if records else None,
                         "errors": sum(errored_records(r) for r in records.values())}}
    return render_report(header, [], sections=build_multi_sections(sources, comparison, records))


def write_multi_report(path: str | os.PathLike, sources: Sequence[ReportSource],
                       comparison: Mapping[str, Any] | None,
                       records: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
    atomic_write_text(path, render_multi_report(sources, comparison, records))
