"""Gate verdicts for people and CI systems: terminal table, JUnit XML, Markdown job summary.

Metric names, paths and messages are treated as text everywhere: XML is built with
``xml.etree`` (which escapes markup) after dropping characters XML 1.0 cannot carry, and Markdown
cells are backslash-escaped so a ``|`` or ``<`` in a path cannot break the table or inject HTML.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from evalkit.atomic import atomic_write_text
from evalkit.gate.checks import FAIL, PASS, WARN, GateCheck, GateResult
from evalkit.statistics.paired import ON_ERROR_MEANING
from evalkit.summary_table import text_table

COLUMNS = ("check", "metric", "n", "baseline", "candidate", "delta", "95% CI", "p", "Holm p", "verdict")


def _num(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def _p(value: float | None) -> str:
    if value is None:
        return "-"
    return "<0.0001" if value < 1e-4 else f"{value:.4f}"


def _ci(check: GateCheck) -> str:
    if check.ci95 is None:
        return "-"
    signed = check.kind == "regression"
    return f"[{_num(check.ci95[0], signed)}, {_num(check.ci95[1], signed)}]"


def _n(check: GateCheck) -> str:
    """Records the check rests on, with the errored ones among them (``30 (2 err)``)."""
    if check.n is None:
        return "-"
    return f"{check.n} ({check.errors} err)" if check.errors else str(check.n)


def check_cells(check: GateCheck) -> tuple[str, ...]:
    return (check.label, check.metric or "-", _n(check), _num(check.baseline), _num(check.candidate),
            _num(check.delta, signed=True), _ci(check), _p(check.p_value), _p(check.p_adjusted), check.verdict)


def _what_was_compared(result: GateResult, escape=str) -> str:
    """``candidate X vs baseline Y: 30 shared ids (...); alpha ...; errored records: ...`` (one wording for the
    terminal, JUnit and Markdown; ``escape`` makes the paths safe for the format)."""
    if result.about is not None:
        return escape(result.about)
    text = f"candidate {escape(result.candidate)}"
    if result.baseline is not None:
        text += (f" vs baseline {escape(result.baseline)}: {result.shared_ids} shared ids (candidate "
                 f"{result.candidate_records}, baseline {result.baseline_records}); alpha {result.alpha:g}, "
                 f"Holm across regression checks, sign-flip test below 100 pairs ({result.n_resamples} sign "
                 f"vectors, seed {result.seed}), paired t-test above")
    return text + f"; errored records: {ON_ERROR_MEANING[result.on_error]} (--on-error {result.on_error})"


def _header(result: GateResult) -> str:
    return f"{result.title}: {_what_was_compared(result)}"


def format_gate_table(result: GateResult) -> str:
    """The terminal verdict: a header, one row per check, one line per finding, the final verdict."""
    numeric = set(range(2, len(COLUMNS) - 1))  # n .. Holm p; check, metric and verdict stay left
    table = text_table(COLUMNS, [check_cells(c) for c in result.checks], right=numeric)
    lines = [_header(result), "", table, ""]
    lines.extend(f"{c.verdict}: {c.name}: {c.message}" for c in result.checks if c.verdict != PASS)
    lines.extend(f"warning: {w}" for w in result.warnings)
    lines.append(result.verdict_line)
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# JUnit XML

# XML 1.0 allows tab, LF, CR and these ranges; anything else (NUL, ESC, lone surrogates) is replaced.
_XML_INVALID = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml_text(value: object) -> str:
    return _XML_INVALID.sub("\ufffd", str(value))


def _details(check: GateCheck) -> str:
    cells = dict(zip(COLUMNS, check_cells(check), strict=True))
    lines = [check.message, *(f"{k}: {v}" for k, v in cells.items() if k not in ("check", "verdict"))]
    if check.n is not None:
        lines.append(f"n: {check.n}")
    if check.mde is not None:
        lines.append(f"minimum detectable effect: {check.mde:.4f}")
    return "\n".join(lines)


def junit_xml(result: GateResult) -> str:
    """One ``<testcase>`` per check, ``<failure>`` for failed ones; WARN findings in ``<system-out>``."""
    counts = {"tests": str(len(result.checks)), "failures": str(len(result.failed)), "errors": "0",
              "skipped": "0"}
    root = ET.Element("testsuites", {"name": f"evalkit {result.title}", **counts})
    suite = ET.SubElement(root, "testsuite", {"name": f"evalkit {result.title}", **counts, "time": "0"})
    props = ET.SubElement(suite, "properties")
    for key in ("candidate", "baseline", "shared_ids", "alpha", "n_resamples", "seed", "on_error"):
        value = getattr(result, key)
        if value is not None:
            ET.SubElement(props, "property", {"name": key, "value": _xml_text(value)})
    for check in result.checks:
        case = ET.SubElement(suite, "testcase", {"classname": f"evalkit.{result.title}.{check.kind}",
                                                 "name": _xml_text(check.name), "time": "0"})
        if check.verdict == FAIL:
            failure = ET.SubElement(case, "failure", {"message": _xml_text(check.message),
                                                      "type": f"{result.title}.{check.kind}"})
            failure.text = _xml_text(_details(check))
        else:
            out = ET.SubElement(case, "system-out")
            out.text = _xml_text(("warning: " if check.verdict == WARN else "") + _details(check))
    out = ET.SubElement(suite, "system-out")
    out.text = _xml_text("\n".join([_header(result), *(f"warning: {w}" for w in result.warnings),
                                    result.verdict_line]))
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(path: str | Path, result: GateResult) -> None:
    atomic_write_text(path, junit_xml(result))


# ------------------------------------------------------------------------------------------------
# Markdown

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<|~&])")  # enough for inline text: no links, HTML, emphasis, cells


def md_escape(value: object) -> str:
    """Plain text for one Markdown table cell or line (no markup, no HTML, no line breaks)."""
    text = _XML_INVALID.sub("\ufffd", str(value)).replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
    return _MD_SPECIAL.sub(r"\\\1", text)


_ICON = {PASS: "✅ PASS", WARN: "⚠️ WARN", FAIL: "❌ FAIL"}


def summary_markdown(result: GateResult) -> str:
    """A job summary: verdict heading, what was compared, the table, findings and warnings."""
    status = "✅ PASSED" if result.passed else f"❌ FAILED ({len(result.failed)} of {len(result.checks)} checks)"
    lines = [f"### evalkit {result.title}: {status}", ""]
    about = _what_was_compared(result, md_escape)
    lines += [about[0].upper() + about[1:] + ".", ""]
    lines.append("| " + " | ".join(COLUMNS) + " |")
    lines.append("|" + "|".join(":---" if i < 2 else "---:" for i in range(len(COLUMNS))) + "|")
    for check in result.checks:
        cells = [md_escape(c) for c in check_cells(check)[:-1]] + [_ICON[check.verdict]]
        lines.append("| " + " | ".join(cells) + " |")
    findings = [f"- **{c.verdict}** {md_escape(c.name)}: {md_escape(c.message)}"
                for c in result.checks if c.verdict != PASS]
    findings += [f"- ⚠️ {md_escape(w)}" for w in result.warnings]
    if findings:
        lines += ["", *findings]
    return "\n".join(lines) + "\n"


def write_summary_md(path: str | Path, result: GateResult) -> None:
    atomic_write_text(path, summary_markdown(result))
