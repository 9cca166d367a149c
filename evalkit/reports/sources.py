"""What a report can be built from: finished output directories of every evalkit command, read back.

* an ``evalkit run`` directory: ``results.json`` + ``records.jsonl`` (``evalkit gate`` writes its verdict into
  the same ``results.json``);
* an ``evalkit compare`` directory: ``comparison.json`` + ``systems/<name>/`` run directories;
* an ``evalkit acr run`` directory: ``summary.json`` + ``results.jsonl``;
* an ``evalkit acr compare`` directory: ``compare.json`` + ``compare.jsonl`` + ``model_a/`` and ``model_b/``.

The kind is told by the files, so runs made at different times, by different versions, or of different kinds
can be reported side by side. Anything else is an InputError naming the directory (exit 2), before rendering.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalkit.errors import InputError
from evalkit.jsonl import split_lines

RUN, COMPARE, ACR, ACR_COMPARE = "run", "compare", "acr", "acr-compare"


@dataclass
class ReportSource:
    """One finished output directory. ``data`` is its results.json, comparison.json or summary.json;
    ``records`` its records (a run), its systems' records by system name (a comparison) or its result rows
    (ACR)."""

    path: Path
    kind: str
    label: str
    data: dict[str, Any]
    records: Any = field(repr=False, default=None)
    # a comparison's systems: name -> (results.json, records) of systems/<name>/
    systems: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = field(repr=False, default_factory=dict)
    # an ACR comparison's two runs: "a"/"b" -> (summary.json, results.jsonl rows) of model_a/, model_b/
    acr_runs: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = field(repr=False, default_factory=dict)


def _json_file(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"malformed JSON: {exc.msg}", path=str(path), line=exc.lineno) from None
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", path=str(path)) from None
    if not isinstance(value, dict):
        raise InputError(f"expected a JSON object, got {type(value).__name__}", path=str(path))
    return value


def _jsonl_file(path: Path) -> list[dict[str, Any]]:
    rows = []
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", path=str(path)) from None
    for number, line in split_lines(text):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise InputError(f"malformed JSON: {exc.msg}", path=str(path), line=number) from None
    return rows


def load_source(directory: str | Path, label: str | None = None) -> ReportSource:
    """The finished output directory at ``directory``, whichever command wrote it."""
    from evalkit.results import load_run

    path = Path(directory)
    if not path.is_dir():
        raise InputError("not a directory (pass the output directory of evalkit run, compare or acr run)",
                         path=str(path))
    name = label or path.resolve().name
    if (path / "comparison.json").is_file():
        comparison = _json_file(path / "comparison.json")
        systems = {}
        for system in comparison.get("systems") or {}:
            run = load_run(path / "systems" / system)
            systems[system] = (run.results, run.records)
        return ReportSource(path, COMPARE, name, comparison, {k: v[1] for k, v in systems.items()}, systems)
    if (path / "results.json").is_file():
        run = load_run(path)
        return ReportSource(path, RUN, name, run.results, run.records)
    if (path / "compare.json").is_file() and (path / "compare.jsonl").is_file():
        runs = {}
        for label in ("a", "b"):
            run = path / f"model_{label}"
            if (run / "summary.json").is_file() and (run / "results.jsonl").is_file():
                runs[label] = (_json_file(run / "summary.json"), _jsonl_file(run / "results.jsonl"))
        return ReportSource(path, ACR_COMPARE, name, _json_file(path / "compare.json"),
                            _jsonl_file(path / "compare.jsonl"), acr_runs=runs)
    if (path / "summary.json").is_file() and (path / "results.jsonl").is_file():
        return ReportSource(path, ACR, name, _json_file(path / "summary.json"), _jsonl_file(path / "results.jsonl"))
    raise InputError("not a finished evalkit output directory: no results.json (evalkit run), comparison.json "
                     "(evalkit compare), summary.json + results.jsonl (evalkit acr run) or compare.json + "
                     "compare.jsonl (evalkit acr compare)", path=str(path))


def load_sources(directories: list[str | Path]) -> list[ReportSource]:
    """Every directory read and checked before anything renders; labels made unique (the directory name, then
    as much of its path as tells it apart)."""
    paths = [Path(d) for d in directories]
    resolved = [p.resolve() for p in paths]
    labels = []
    for i, p in enumerate(resolved):
        depth = 1
        while depth < len(p.parts) and any(
                j != i and q.parts[-depth:] == p.parts[-depth:] for j, q in enumerate(resolved)):
            depth += 1
        labels.append("/".join(p.parts[-depth:]))
    seen: set[Path] = set()
    for p, r in zip(paths, resolved, strict=True):
        if r in seen:
            raise InputError("the same directory is given twice", path=str(p))
        seen.add(r)
    return [load_source(p, label) for p, label in zip(paths, labels, strict=True)]
