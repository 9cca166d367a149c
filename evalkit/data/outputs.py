"""Precomputed outputs: answers made elsewhere (a vendor, an earlier pipeline), matched to the question set.

A JSONL, JSON list or CSV file with one answer per row in ``output_field``. Rows are matched to questions by
``id_field`` when every row has one; when no row has one, by line order, and then the number of rows must
equal the number of questions. Every question must get an answer; anything else is an InputError naming the
file, line and field (exit 2), found before any model loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evalkit.errors import InputError


def load_precomputed_outputs(path: str | Path, question_ids: list[str], *, output_field: str = "output",
                             id_field: str = "id") -> tuple[dict[str, str], dict[str, Any]]:
    """(question id -> output, what was read: path, sha256, fields, how matched, rows)."""
    from evalkit.data.dataset import dataset_sha256, read_rows

    path = Path(path)
    name = str(path)
    if not path.is_file():
        raise InputError("precomputed outputs file not found", path=name)
    _, rows = read_rows(path)
    parsed: list[tuple[int, str | None, str]] = []
    for line, row in rows:
        if not isinstance(row, dict):
            raise InputError(getattr(row, "reason", f"expected an object, got {type(row).__name__}"), path=name,
                             line=line)
        if output_field not in row or row[output_field] is None:
            raise InputError("missing field", path=name, line=line, field=output_field)
        if not isinstance(row[output_field], str):
            raise InputError(f"expected a string, got {type(row[output_field]).__name__}", path=name, line=line,
                             field=output_field)
        raw_id = row.get(id_field)
        if isinstance(raw_id, bool) or not (raw_id is None or isinstance(raw_id, (str, int))):
            raise InputError(f"id must be a string or integer, got {type(raw_id).__name__}", path=name, line=line,
                             field=id_field)
        parsed.append((line, None if raw_id in (None, "") else str(raw_id), row[output_field]))
    if not parsed:
        raise InputError("no outputs in the file", path=name)
    with_id = [p for p in parsed if p[1] is not None]
    source = {"path": name, "sha256": dataset_sha256(path), "output_field": output_field, "rows": len(parsed)}
    if not with_id:
        if len(parsed) != len(question_ids):
            raise InputError(f"{len(parsed)} outputs for {len(question_ids)} questions: outputs without '{id_field}' "
                             "are matched by line order, so the counts must agree", path=name)
        return {qid: text for qid, (_, _, text) in zip(question_ids, parsed, strict=True)}, \
            {**source, "matched_by": "line order"}
    if len(with_id) != len(parsed):
        line = next(p[0] for p in parsed if p[1] is None)
        raise InputError(f"missing id: some outputs have '{id_field}' and this one has not; give every output an "
                         "id (matched by id) or none (matched by line order)", path=name, line=line, field=id_field)
    by_id: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for line, key, text in parsed:
        if key in first_line:
            raise InputError(f"duplicate id '{key}' (first on line {first_line[key]})", path=name, line=line,
                             field=id_field)
        first_line[key] = line  # type: ignore[index]
        by_id[key] = text  # type: ignore[index]
    missing = [q for q in question_ids if q not in by_id]
    if missing:
        raise InputError(f"no output for {len(missing)} of {len(question_ids)} questions (first: id "
                         f"'{missing[0]}')", path=name, field=id_field)
    known = set(question_ids)
    extra = [(line, key) for line, key, _ in parsed if key not in known]
    if extra:
        raise InputError(f"id '{extra[0][1]}' is not a question of the dataset ({len(extra)} such outputs); "
                         "outputs of another question set?", path=name, line=extra[0][0], field=id_field)
    return {q: by_id[q] for q in question_ids}, {**source, "matched_by": f"id ({id_field})"}
