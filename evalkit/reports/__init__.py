"""Self-contained HTML reports for evaluation runs.

``render_report(results, records) -> str`` and ``write_report(path, results, records)``; see
:mod:`evalkit.reports.html`. Rebuild a run's report with ``python -m evalkit.reports.html RUN_DIR``.
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
