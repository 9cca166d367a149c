"""Self-contained HTML reports: a run (:mod:`~evalkit.reports.html`), a comparison (``compare_html``), ACR
audits (``acr_html``) and several finished directories side by side (``multi_html``; ``sources`` reads any
finished output directory back). ``render_report(results, records) -> str`` and ``write_report(path, results,
records)`` render one run. From the command line: ``evalkit report RUN_DIR [RUN_DIR ...] -o FILE.html``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Section", "render_report", "write_report"]

if TYPE_CHECKING:  # pragma: no cover
    from evalkit.reports.html import Section, render_report, write_report


def __getattr__(name: str) -> Any:
    # Lazy, so that `python -m evalkit.reports.html` does not import the module twice (runpy warning)
    # and importing evalkit.reports stays cheap (jinja2/matplotlib load only when rendering).
    if name in __all__:
        from evalkit.reports import html

        return getattr(html, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
