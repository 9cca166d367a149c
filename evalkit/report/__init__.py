"""Self-contained HTML reports for evaluation runs.

``render_report(results, records) -> str`` and ``write_report(path, results, records)``; see
:mod:`evalkit.report.html`. Rebuild a run's report with ``python -m evalkit.report.html RUN_DIR``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Section", "render_report", "write_report"]

if TYPE_CHECKING:  # pragma: no cover
    from evalkit.report.html import Section, render_report, write_report


def __getattr__(name: str) -> Any:
    # Lazy, so that `python -m evalkit.report.html` does not import the module twice (runpy warning)
    # and importing evalkit.report stays cheap (jinja2/matplotlib load only when rendering).
    if name in __all__:
        from evalkit.report import html

        return getattr(html, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
