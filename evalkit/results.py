"""Run results: the documented files (results.json, records.jsonl) and a notebook view."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalkit.errors import InputError
from evalkit.jsonl import split_lines

RESULTS_FILE = "results.json"
RECORDS_FILE = "records.jsonl"
REPORT_FILE = "report.html"


@dataclass
class RunResult:
    """What one run produced. ``results`` is results.json; ``records`` are the records.jsonl rows."""

    output_dir: Path
    results: dict[str, Any]
    records: list[dict[str, Any]] = field(repr=False)

    @property
    def metrics(self) -> dict[str, dict[str, Any]]:
        return self.results["metrics"]

    @property
    def report_path(self) -> Path:
        return self.output_dir / REPORT_FILE

    def to_pandas(self):
        """One row per record: id, texts, error and one column per score."""
        import pandas as pd

        rows = []
        for record in self.records:
            row = {k: v for k, v in record.items() if k != "scores"}
            row.update(record.get("scores") or {})
            rows.append(row)
        return pd.DataFrame(rows)

    def metrics_frame(self):
        """One row per metric: mean, std, n, ci95_low, ci95_high."""
        import pandas as pd

        rows = []
        for name, summary in self.metrics.items():
            ci = summary.get("ci95") or [None, None]
            rows.append({"metric": name, "mean": summary.get("mean"), "std": summary.get("std"),
                         "n": summary.get("n"), "ci95_low": ci[0], "ci95_high": ci[1]})
        return pd.DataFrame(rows).set_index("metric")

    def _repr_html_(self) -> str:  # notebooks show the metric table
        return self.metrics_frame()._repr_html_()


def load_run(run_dir: str | Path) -> RunResult:
    """Read a finished run directory back (e.g. to gate it against a baseline or rebuild a report)."""
    run_dir = Path(run_dir)
    results_path, records_path = run_dir / RESULTS_FILE, run_dir / RECORDS_FILE
    for path in (results_path, records_path):
        if not path.is_file():
            raise InputError("not a finished run directory (file missing)", path=str(path))
    try:
        results = json.loads(results_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"malformed JSON: {exc.msg}", path=str(results_path), line=exc.lineno) from None
    records = []
    for number, line in split_lines(records_path.read_text(encoding="utf-8")):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise InputError(f"malformed JSON: {exc.msg}", path=str(records_path), line=number) from None
    return RunResult(run_dir, results, records)
