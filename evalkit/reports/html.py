"""Self-contained HTML report for one evaluation run.

``render_report(results, records)`` turns a run's ``results.json`` (a dict) and ``records.jsonl``
(a list of dicts) into one HTML file that needs nothing else: styles and the small sorting/filter
script are inline, histograms are inline base64 PNGs, and a Content-Security-Policy forbids the page
from loading anything at all (only the report's own script, pinned by its SHA-256, may run).

Security: every model / dataset / metadata string is untrusted. The Jinja2 environment autoescapes
everything, nothing untrusted is marked safe, and no data is handed to JavaScript (the script reads
the already-escaped DOM). Text is escaped, never deleted.

Extending: the page body is a list of :class:`Section` objects; each names a macro of
``templates/run.html.j2`` (``kind``) that renders ``section.data``. To add a section, write a
``section_<kind>`` macro, register it in the template's ``renderers`` dict and build the section in
:func:`build_sections` (or pass ``extra_sections=`` to :func:`render_report`). A section whose kind
has no macro is rendered as a generic key/value table.

Rebuild a run's report from the command line::

    python -m evalkit.reports.html RESULTS_DIR        # reads results.json + records.jsonl
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import math
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from evalkit.atomic import atomic_write_text

TEMPLATE_NAME = "run.html.j2"
TEMPLATE_DIR = Path(__file__).with_name("templates")
PREVIEW_CHARS = 150  # characters of a text cell shown before "more"
SMALL_N = 10  # below this many records a metric's interval gets a caveat

# Stable display order for well-known metrics; anything else follows in results order.
_METRIC_ORDER = ("rouge1", "rouge2", "rougeL", "rougeLsum", "meteor", "bertscore",
                 "bertscore_precision", "bertscore_recall")


@dataclass(frozen=True)
class Section:
    """One top-level block of the report.

    id: HTML anchor (unique in the page); title: heading and nav label; kind: which template macro
    renders it (``section_<kind>``; unknown kinds fall back to a key/value table of ``data``);
    data: whatever that macro expects; badge: optional short status shown next to the nav label
    (e.g. ``"PASS"``/``"FAIL"``), with badge_ok choosing its colour.
    """

    id: str
    title: str
    kind: str
    data: Any = None
    badge: str | None = None
    badge_ok: bool | None = None


@dataclass
class _Text:
    """A text cell: a short preview plus (when truncated, or several parts) the full parts."""

    preview: str
    parts: list[str] = field(default_factory=list)
    truncated: bool = False
    missing: bool = False


# ----------------------------------------------------------------------------------------------
# small, crash-proof formatting helpers (results.json fields may be missing or oddly typed)


def _dict(v: Any) -> dict:
    return v if isinstance(v, Mapping) else {}


def _finite(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _fmt_num(v: Any, digits: int = 4) -> str:
    """Numbers to fixed decimals (ints as ints); anything else to its plain string form."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "∞" if v > 0 else "−∞"
        return f"{v:.{digits}f}"
    return _plain(v)


def _plain(v: Any) -> str:
    """Any JSON value as display text (strings verbatim, containers as compact JSON)."""
    if isinstance(v, str):
        return v
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    try:
        return json.dumps(v, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(v)


def _fmt_seconds(v: Any) -> str:
    f = _finite(v)
    if f is None:
        return _plain(v)
    if f < 60:
        return f"{f:.1f} s"
    m, s = divmod(f, 60)
    if m < 60:
        return f"{int(m)} min {s:04.1f} s"
    h, m = divmod(m, 60)
    return f"{int(h)} h {int(m):02d} min"


def _flatten(d: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested dicts to ``[("a.b", "value"), ...]`` for generic key/value tables."""
    if not isinstance(d, Mapping):
        return [(prefix or "value", _plain(d))] if d is not None or prefix else []
    rows: list[tuple[str, str]] = []
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping) and v:
            rows.extend(_flatten(v, key))
        else:
            rows.append((key, _plain(v)))
    return rows


def _preview(text: str, limit: int = PREVIEW_CHARS) -> tuple[str, bool]:
    if len(text) <= limit and text.count("\n") < 4:
        return text, False
    cut = text[:limit]
    lines = cut.split("\n")
    if len(lines) > 4:
        cut = "\n".join(lines[:4])
    elif " " in cut[limit // 2:]:
        cut = cut[: cut.rfind(" ")]
    return cut.rstrip() + " …", True


def _text(v: Any) -> _Text:
    if v is None:
        return _Text(preview="", missing=True)
    if isinstance(v, (list, tuple)):
        parts = [_plain(x) for x in v]
        if not parts:
            return _Text(preview="", missing=True)
        if len(parts) == 1:
            return _text(parts[0])
        first, _ = _preview(parts[0])
        return _Text(preview=first, parts=parts, truncated=True)
    s = _plain(v)
    pv, cut = _preview(s)
    return _Text(preview=pv, parts=[s], truncated=cut)


def _ordered_metrics(names: Iterable[str]) -> list[str]:
    seen = list(dict.fromkeys(str(n) for n in names))
    known = [m for m in _METRIC_ORDER if m in seen]
    return known + [m for m in seen if m not in known]


def _score_class(v: float | None) -> str:
    """Five-step shading for scores in [0, 1]; no shading for other ranges."""
    if v is None or not 0.0 <= v <= 1.0:
        return ""
    return f"q{min(int(v * 5), 4)}"


# ----------------------------------------------------------------------------------------------
# section builders


def _short_sha(value: Any) -> str | None:
    return None if not isinstance(value, str) or not value else value[:12]


def _evaluated(results: Mapping) -> str:
    """What was evaluated, in one line: the model, or whose precomputed outputs."""
    model = results.get("model")
    if model:
        return _plain(model)
    outputs = _dict(results.get("outputs"))
    if outputs.get("path"):
        return f"precomputed outputs from {_plain(outputs['path'])}"
    field = results.get("output_field") or _dict(results.get("dataset")).get("output_field")
    return f"precomputed outputs (dataset field '{_plain(field)}')" if field else "precomputed outputs"


def _overview(results: Mapping) -> dict:
    """What was evaluated, for people who did not run it: model and generation settings, dataset, run facts,
    counts; labels, never raw keys; nothing that is unknown."""
    def rows(pairs: Iterable[tuple[str, Any]]) -> list[tuple[str, str]]:
        return [(label, _plain(value) if not isinstance(value, str) else value) for label, value in pairs
                if value is not None and value != ""]

    runner = _dict(results.get("runner"))
    identity = _dict(runner.get("identity"))
    files = _dict(identity.get("files"))
    adapter = _dict(identity.get("adapter"))
    retriever = _dict(results.get("retriever"))
    model_rows = rows([
        ("Evaluated", _evaluated(results)),
        ("Runner", runner.get("runner")),
        ("Model files", f"{_short_sha(files.get('sha256'))} ({_fmt_num(files.get('files'))} files)"
         if files.get("sha256") else None),
        ("Adapter", f"{runner.get('adapter_path')} ({_short_sha(adapter.get('sha256'))})"
         if runner.get("adapter_path") else None),
        ("Remote model", identity.get("model_id") or identity.get("endpoint")),
        ("Max new tokens", runner.get("max_new_tokens")),
        ("Decoding", runner.get("decoding")),
        ("Chat template", {True: "yes", False: "no"}.get(runner.get("chat_template"))),
        ("dtype / device", f"{runner.get('dtype')} / {runner.get('device')}" if runner.get("dtype") else None),
        ("Batch size", runner.get("batch_size")),
        ("Retrieval", f"top {retriever.get('top_k')} of {retriever.get('chunks')} chunks of "
                      f"{retriever.get('documents')} ({retriever.get('embedding_model')})" if retriever else None),
    ])
    ds = _dict(results.get("dataset"))
    fields = ", ".join(f"{k.removesuffix('_field')}: {ds[k]}" for k in ("input_field", "target_field",
                                                                        "output_field", "id_field") if ds.get(k))
    dataset_rows = rows([
        ("Path", ds.get("path")), ("SHA-256", ds.get("sha256")), ("Format", ds.get("format")),
        ("Records", f"{_fmt_num(ds.get('n_records'))}" + (f" of {_fmt_num(ds.get('rows'))} rows"
                                                          if ds.get("rows") not in (None, ds.get("n_records")) else "")
         if ds.get("n_records") is not None else None),
        ("Fields", fields or None),
        ("Reference delimiter", ds.get("target_delimiter")),
        ("Sample", f"{_fmt_num(results['max_samples'])} records (seeded)" if results.get("max_samples") else None),
    ])
    versions = _dict(results.get("versions"))
    outcome = _dict(results.get("outcome"))
    total = _dict(results.get("timings")).get("total_s")
    run_rows = rows([
        ("Task", results.get("task")), ("Created", results.get("created_at")),
        ("Duration", _fmt_seconds(total) if total is not None else None), ("Seed", results.get("seed")),
        ("Outcome", outcome.get("status")), ("evalkit", versions.get("evalkit")),
        ("Run fingerprint", _short_sha(results.get("run_fingerprint"))),
    ])
    counts = _dict(results.get("counts"))
    count_rows = [(label, _fmt_num(counts[key])) for key, label in (
        ("records", "Records"), ("scored", "Scored by every metric"), ("errors", "Generation errors"),
        ("scoring_errors", "Scoring errors"), ("failed_records", "Records with any error"),
        ("truncated", "Inputs truncated"), ("skipped_invalid", "Invalid rows skipped")) if key in counts]
    timings = [(str(k).removesuffix("_s").replace("_", " ").capitalize(), _fmt_seconds(v))
               for k, v in _dict(results.get("timings")).items() if k != "total_s"]
    template = results.get("prompt_template")
    return {
        "model": model_rows,
        "dataset": dataset_rows,
        "run": run_rows,
        "counts": count_rows,
        "timings": timings,
        "prompt_template": None if template is None else _plain(template),
    }


def _metric_rows(results: Mapping) -> list[dict]:
    metrics = _dict(results.get("metrics"))
    rows = []
    for name in _ordered_metrics(metrics):
        m = metrics.get(name, None)
        if not isinstance(m, Mapping):
            m = {"mean": m}
        ci = m.get("ci95")
        lo = hi = None
        if isinstance(ci, (list, tuple)) and len(ci) == 2:
            lo, hi = ci
        rows.append({
            "name": name,
            "bar": _ci_bar(m.get("mean"), lo, hi),
            "mean": _fmt_num(m.get("mean")),
            "std": _fmt_num(m.get("std")),
            "n": _fmt_num(m.get("n")),
            "errors": _fmt_num(m.get("errors")) if "errors" in m else "—",
            "ci": None if ci is None else (
                f"[{_fmt_num(lo)}, {_fmt_num(hi)}]" if lo is not None or hi is not None else _plain(ci)),
            "better": {True: "higher", False: "lower"}.get(m.get("higher_is_better"), "higher"),
            "few": isinstance(m.get("n"), int) and 0 < m["n"] < SMALL_N,
        })
    return rows


def _ci_bar(mean: Any, lo: Any, hi: Any) -> dict | None:
    """Positions (percent of a 0..1 axis) for the small mean/CI graphic; None off that scale."""
    m, a, b = _finite(mean), _finite(lo), _finite(hi)
    if m is None or not 0.0 <= m <= 1.0:
        return None
    a = m if a is None else min(max(a, 0.0), 1.0)
    b = m if b is None else min(max(b, 0.0), 1.0)
    a, b = min(a, b), max(a, b)
    return {"mean": f"{m * 100:.2f}", "lo": f"{a * 100:.2f}", "width": f"{max(b - a, 0.0) * 100:.2f}"}


def _p(value: Any) -> str:
    """A p-value as the terminal prints it: ``<0.0001`` below, four decimals above, ``—`` when untested."""
    f = _finite(value)
    if f is None:
        return "—"
    return "<0.0001" if f < 1e-4 else f"{f:.4f}"


_VERDICT_MARKS = {"PASS": "✓ PASS", "FAIL": "✗ FAIL", "WARN": "! WARN"}


def _gate(gate: Any) -> dict:
    """A gate result (``results["gate"]``) or a comparison's require rules (``{"passed", "rules": [...]}``) as
    people read it: a headline, one row per check with the numbers that decided it, its full message, the
    warnings as a list. Verdicts are words and marks, never colour alone."""
    g = _dict(gate)
    passed = g.get("passed")
    passed = passed if isinstance(passed, bool) else None
    raw = g.get("checks")
    if isinstance(raw, Mapping):
        checks = [(str(name), _dict(c)) for name, c in raw.items()]
    else:
        checks = [(str(_dict(c).get("rule") or _dict(c).get("name") or i), _dict(c))
                  for i, c in enumerate(g.get("rules") or raw or [])]
    rows = []
    for name, c in checks:
        verdict = str(c.get("verdict") or ("PASS" if c.get("passed") else "FAIL"))
        low, high = c.get("ci95_low"), c.get("ci95_high")
        if isinstance(c.get("ci95"), (list, tuple)) and len(c["ci95"]) == 2:
            low, high = c["ci95"]
        baseline = c.get("baseline", c.get("b_mean"))
        candidate = c.get("candidate", c.get("a_mean"))
        rows.append({
            "name": name, "metric": _plain(c.get("metric") or "—"), "n": _fmt_num(c.get("n")),
            "baseline": _fmt_num(baseline), "candidate": _fmt_num(candidate), "delta": _fmt_num(c.get("delta")),
            "ci": "—" if _finite(low) is None or _finite(high) is None else f"[{_fmt_num(low)}, {_fmt_num(high)}]",
            "p": _p(c.get("p_value", c.get("p"))), "p_holm": _p(c.get("p_adjusted", c.get("p_holm"))),
            "verdict": _VERDICT_MARKS.get(verdict, verdict), "ok": verdict != "FAIL", "warn": verdict == "WARN",
            "message": _plain(c.get("message") or ""), "test": _plain(c.get("test") or ""),
            "errors": _fmt_num(c.get("errors")) if c.get("errors") else None,
        })
    failed = sum(not r["ok"] for r in rows)
    warned = sum(r["warn"] for r in rows)
    if passed is None and rows:
        passed = failed == 0
    headline = None
    if passed is not None:
        headline = (f"{'PASSED' if passed else 'FAILED'}: {failed} of {len(rows)} checks failed"
                    + (f", {warned} warned" if warned else ""))
    facts = []
    for label, key in (("Candidate", "candidate"), ("Baseline", "baseline"), ("Shared record ids", "shared_ids"),
                       ("Significance level", "alpha"), ("Errored records", "on_error"), ("Tests", "tests")):
        if g.get(key) is not None and not isinstance(g.get(key), Mapping):
            facts.append((label, _fmt_num(g[key]) if key == "alpha" else _plain(g[key])))
    warnings = [_plain(w) for w in g.get("warnings") or []] if isinstance(g.get("warnings"), list) else []
    return {"passed": passed, "headline": headline, "rows": rows, "warnings": warnings, "facts": facts}


# Histograms drawn ahead of the report, keyed by name and the exact values drawn (see prerender_histograms).
_PRERENDERED: dict[tuple[str, tuple[float, ...]], str] = {}


def prerender_histograms(columns: Mapping[str, Sequence[Any]]) -> None:
    """Draw the histograms of score columns already final, while the run still waits on other metrics
    (``evalkit.pipeline`` calls this on a background thread once only metric processes are left). The report
    uses a drawing only when its column holds exactly the same values, in the same order, when it is built;
    anything else is drawn then, as before. Each call replaces what an earlier one left."""
    _PRERENDERED.clear()
    for name, raw in columns.items():
        values = tuple(f for v in raw if (f := _finite(v)) is not None)
        if values:
            _PRERENDERED[(name, values)] = _histogram_png(name, values)


def _histograms(metric_names: Sequence[str], records: Sequence[Mapping]) -> list[dict]:
    out = []
    for name in metric_names:
        values = [f for r in records
                  if (f := _finite(_dict(r.get("scores")).get(name))) is not None]
        png = None
        if values:
            png = _PRERENDERED.pop((name, tuple(values)), None) or _histogram_png(name, values)
        out.append({"name": name, "n": len(values), "png": png,
                    "mean": _fmt_num(sum(values) / len(values), 3) if values else "—"})
    return out


def _histogram_png(name: str, values: Sequence[float]) -> str:
    """One histogram as base64 PNG. Agg canvas on a bare Figure: no pyplot, no global backend switch."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.4, 2.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    try:
        ax = fig.add_subplot()
        lo, hi = min(values), max(values)
        unit = lo >= 0.0 and hi <= 1.0
        bins = [i / 20 for i in range(21)] if unit else min(30, max(5, int(math.sqrt(len(values))) + 1))
        ax.hist(values, bins=bins, color="#4c78a8", edgecolor="white", linewidth=0.6)
        mean = sum(values) / len(values)
        # the mean is a dashed line named in the legend, not a label over the bars
        ax.axvline(mean, color="#d9622b", linewidth=1.6, linestyle="--", label=f"mean {mean:.3f}")
        ax.legend(loc="upper left" if mean > (0.5 if unit else (lo + hi) / 2) else "upper right", fontsize=10,
                  frameon=False, handlelength=1.6)
        if unit:
            ax.set_xlim(0, 1)
        ax.set_xlabel(name, fontsize=10, color="#333")
        ax.set_ylabel("records", fontsize=10, color="#333")
        ax.tick_params(labelsize=9, colors="#444")
        ax.yaxis.get_major_locator().set_params(integer=True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        for side in ("left", "bottom"):
            ax.spines[side].set_color("#bbb")
        ax.grid(axis="y", color="#eee", linewidth=0.8)
        ax.set_axisbelow(True)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=150, metadata={"Software": None})
    finally:
        fig.clear()
    return base64.b64encode(buf.getvalue()).decode("ascii")


def errored_records(records: Iterable[Any]) -> int:
    """Records whose generation failed or that a metric could not score."""
    return sum(1 for r in records if isinstance(r, Mapping) and (r.get("error") is not None or r.get("score_errors")))


def _record_details(rec: Mapping) -> list[tuple[str, str]]:
    """What a reader may want under an answer: retrieved context (RAG) and each metric's explanation (the
    judge's reasoning), as (label, text) pairs."""
    details = []
    for chunk in rec.get("retrieved") or []:
        c = _dict(chunk)
        details.append((f"context [{_plain(c.get('rank'))}] {_plain(c.get('id'))} (cosine {_fmt_num(c.get('score'))})",
                        _plain(c.get("text"))))
    for column, text in _dict(rec.get("explanations")).items():
        details.append((f"{column}: explanation", _plain(text)))
    return details


def _flags(rec: Mapping) -> list[str]:
    """Plain words for what happened to a record beyond its scores: an answer cut off by the token limit, an
    input cut to fit the context."""
    flags = []
    generation = _dict(rec.get("generation"))
    if generation.get("finish_reason") == "length":
        flags.append("output cut off at the max-new-tokens limit")
    if rec.get("truncated"):
        flags.append("input truncated to fit the model's context")
    return flags


def _sample_table(metric_names: Sequence[str], records: Sequence[Any],
                  lower_is_better: Iterable[str] = ()) -> dict:
    """One row per record. Worst first: records with errors, then by the first metric, worst value first
    (the reader can sort by any column, or by id)."""
    lower = set(lower_is_better)
    rows = []
    n_errors = n_flagged = 0
    for i, rec in enumerate(records):
        if not isinstance(rec, Mapping):
            rec = {"error": f"malformed record: {_plain(rec)}"}
        scores = _dict(rec.get("scores"))
        cells = []
        for name in metric_names:
            v = scores.get(name)
            f = _finite(v)
            if f is not None:
                cells.append({"text": f"{f:.3f}", "v": repr(f), "cls": _score_class(f)})
            elif v is None:
                cells.append({"text": "", "v": "", "cls": "na"})
            else:
                cells.append({"text": _plain(v), "v": "", "cls": "na"})
        error = rec.get("error")
        score_errors = _dict(rec.get("score_errors"))
        if error is None and score_errors:  # generation worked, some metric could not score it
            error = "; ".join(f"{name}: {_plain(message)}" for name, message in score_errors.items())
        if error is not None:
            n_errors += 1
        flags = _flags(rec)
        n_flagged += bool(flags)
        rid = rec.get("id")
        first = _finite(scores.get(metric_names[0])) if metric_names else None
        worst_key = (0 if error is not None else 1,
                     0.0 if first is None else (-first if metric_names[0] in lower else first), i)
        rows.append({
            "id": str(i) if rid is None else _plain(rid),
            "input": _text(rec.get("model_input")),
            "prompt": None if rec.get("prompt") in (None, rec.get("model_input")) else _plain(rec.get("prompt")),
            "output": _text(rec.get("model_output")),
            "reference": _text(rec.get("target_output")),
            "scores": cells,
            "error": None if error is None else _text(error),
            "flags": flags,
            "details": _record_details(rec),
            "order": worst_key,
        })
    rows.sort(key=lambda r: r["order"])
    worst_word = {m: "highest first" if m in lower else "lowest first" for m in metric_names}
    return {"metrics": list(metric_names), "rows": rows, "n_errors": n_errors, "n_flagged": n_flagged,
            "worst_word": worst_word,
            "order": f"errors first, then by {metric_names[0]}, worst first" if metric_names else "as in the file"}


def build_sections(results: Mapping, records: Sequence[Mapping]) -> list[Section]:
    """The report's default sections, in page order."""
    score_names = _ordered_metrics(
        [*_dict(results.get("metrics")),
         *(k for r in records if isinstance(r, Mapping) for k in _dict(r.get("scores")))])
    settings = _flatten(_dict(results.get("metric_settings")))
    sections = []
    if "gate" in results and results["gate"] is not None:  # the verdict first
        gate = _gate(results["gate"])
        badge = None if gate["passed"] is None else ("PASS" if gate["passed"] else "FAIL")
        sections.append(Section("gate", "CI gate", "gate", gate, badge=badge, badge_ok=gate["passed"]))
    sections += [
        Section("run", "What was evaluated", "overview", _overview(results)),
        Section("metrics", "Metrics", "metrics", {"rows": _metric_rows(results), "settings": settings}),
    ]
    hist_names = [n for n in score_names
                  if any(_finite(_dict(r.get("scores")).get(n)) is not None
                         for r in records if isinstance(r, Mapping))]
    if hist_names:
        sections.append(Section("distributions", "Score distributions", "distributions",
                                _histograms(hist_names, [r for r in records if isinstance(r, Mapping)])))
    lower = [m for m, summary in _dict(results.get("metrics")).items()
             if _dict(summary).get("higher_is_better") is False]
    sections.append(Section("samples", "Samples", "samples", _sample_table(score_names, records, lower)))
    env = {"versions": _flatten(_dict(results.get("versions"))),
           "runner": _flatten(results.get("runner")) if results.get("runner") is not None else []}
    if env["versions"] or env["runner"]:
        sections.append(Section("environment", "Environment", "environment", env))
    return sections


# ----------------------------------------------------------------------------------------------
# rendering


def _csp_sha256(text: str):
    """CSP source for an inline block: ``'sha256-<base64>'`` (only base64 characters: safe markup)."""
    from markupsafe import Markup

    digest = base64.b64encode(hashlib.sha256(str(text).encode("utf-8")).digest()).decode("ascii")
    return Markup(f"'sha256-{digest}'")


# Control characters (C0 but tab, newline and carriage return; DEL; C1) never reach the page raw: a NUL in
# HTML is a parse error that browsers turn into U+FFFD, and the others are invisible. They are shown as
# visible escapes instead (``\x00``), so text is escaped, never silently changed or deleted.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _visible_controls(value: Any) -> Any:
    """Jinja ``finalize``: every ``{{ ... }}`` value passes here before autoescaping."""
    from markupsafe import Markup

    if isinstance(value, str) and not isinstance(value, Markup) and _CONTROL.search(value):
        return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", value)
    return value


@lru_cache(maxsize=1)
def _environment():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=True,  # everything, whatever the template's file name
        undefined=jinja2.Undefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        finalize=_visible_controls,
    )
    env.filters["csp_sha256"] = _csp_sha256
    return env


def render_report(results: Mapping, records: Sequence[Mapping], *,
                  extra_sections: Iterable[Section] = (), sections: Sequence[Section] | None = None) -> str:
    """Render the self-contained HTML report for one run.

    ``extra_sections`` are inserted before the per-sample table (see :class:`Section`); ``sections``,
    when given, replaces the default sections altogether (e.g. the ACR report, which has no samples).
    """
    results = _dict(results)
    records = list(records or [])
    sections = list(sections) if sections is not None else build_sections(results, records)
    extra = list(extra_sections)
    if extra:
        at = next((i for i, s in enumerate(sections) if s.id == "samples"), len(sections))
        sections[at:at] = extra
    counts = _dict(results.get("counts"))
    n_errors = counts.get("failed_records", counts.get("errors"))
    if n_errors is None:
        n_errors = sum(1 for r in records if isinstance(r, Mapping) and r.get("error") is not None)
    total = _dict(results.get("timings")).get("total_s")
    gate = _dict(results.get("gate"))
    verdict = None
    if isinstance(gate.get("passed"), bool):
        verdict = (_plain(gate.get("label") or "Gate"), "✓ PASSED" if gate["passed"] else "✗ FAILED",
                   "ok" if gate["passed"] else "bad")
    stats = [
        verdict or ("", None, ""),
        ("Records", _fmt_num(counts.get("records", len(records))), ""),
        ("Scored", _fmt_num(counts["scored"]) if "scored" in counts else None, ""),
        ("Records with errors", _fmt_num(n_errors), "bad" if (_finite(n_errors) or 0) > 0 else ""),
        ("Skipped invalid", _fmt_num(counts["skipped_invalid"]) if "skipped_invalid" in counts else None,
         "warn" if (_finite(counts.get("skipped_invalid")) or 0) > 0 else ""),
        ("Total time", _fmt_seconds(total) if total is not None else None, ""),
    ]
    title_bits = [_plain(results["task"])] if results.get("task") is not None else []
    if results.get("metrics") is not None or results.get("model") is not None:
        title_bits.append(_evaluated(results))
    html = _environment().get_template(TEMPLATE_NAME).render(
        title=" · ".join(title_bits) or "Evaluation run",
        task=None if results.get("task") is None else _plain(results["task"]),
        model=title_bits[1] if len(title_bits) > 1 else None,
        created_at=None if results.get("created_at") is None else _plain(results["created_at"]),
        stats=[s for s in stats if s[1] is not None],
        sections=sections,
        generator=f"evalkit {_evalkit_version()}",
    )
    # Lone surrogates (possible in JSON-decoded text) cannot be written as UTF-8: show them as
    # visible \udXXX escapes instead of failing or dropping them.
    return html.lstrip().encode("utf-8", "backslashreplace").decode("utf-8")


def _evalkit_version() -> str:
    try:
        from evalkit import __version__
    except ImportError:  # pragma: no cover
        return ""
    return __version__


def write_report(path: str | os.PathLike, results: Mapping, records: Sequence[Mapping], **kwargs: Any) -> None:
    """Render and write the report atomically (readers never see a half-written file)."""
    atomic_write_text(path, render_report(results, records, **kwargs))


# ----------------------------------------------------------------------------------------------
# CLI: python -m evalkit.reports.html RESULTS_DIR


def main(argv: Sequence[str] | None = None) -> int:
    from evalkit.errors import EvalkitError
    from evalkit.results import load_run

    parser = argparse.ArgumentParser(
        prog="python -m evalkit.reports.html",
        description="Re-render report.html from a run directory's results.json and records.jsonl.")
    parser.add_argument("run_dir", type=Path, help="directory holding results.json and records.jsonl")
    parser.add_argument("-o", "--output", type=Path, help="where to write (default: RUN_DIR/report.html)")
    args = parser.parse_args(argv)
    try:
        run = load_run(args.run_dir)
    except EvalkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    out = args.output or args.run_dir / "report.html"
    write_report(out, run.results, run.records)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
