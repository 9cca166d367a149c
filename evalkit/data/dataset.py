"""Load evaluation records from JSONL, a JSON list, CSV, or a local Hugging Face ``datasets`` directory.

Every record is validated before any model is loaded; a bad record is reported with its file, line
and field. With ``skip_invalid`` bad records are set aside and counted instead.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalkit.errors import InputError
from evalkit.jsonl import split_lines
from evalkit.progress import quiet_library_progress

JSONL_SUFFIXES = {".jsonl", ".ndjson"}


@dataclass(frozen=True)
class Sample:
    """One validated record. ``references`` holds one or more reference texts."""

    id: str
    line: int
    model_input: str | None
    references: tuple[str, ...]
    model_output: str | None = None
    gold: tuple[str, ...] | None = None  # gold passages (``gold_field``): documents, chunk ids or passage text
    human_score: float | None = None  # a person's rating of the reference answer (``human_score_field``)


@dataclass(frozen=True)
class InvalidRecord:
    line: int
    field: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "field": self.field, "reason": self.reason}


@dataclass
class DatasetSpec:
    path: str
    input_field: str = "document"
    target_field: str = "summary"
    output_field: str | None = None
    id_field: str = "id"
    target_delimiter: str | None = None
    split: str | None = None
    gold_field: str | None = None  # gold passages per record, for retrieval recall@k and MRR
    human_score_field: str | None = None  # human ratings per record, for the judge's agreement with people


@dataclass
class LoadedDataset:
    spec: DatasetSpec
    format: str
    sha256: str
    samples: list[Sample]
    invalid: list[InvalidRecord] = field(default_factory=list)
    n_rows: int = 0
    # References of every valid record, before --max-samples: what dataset-level statistics (BERTScore's
    # idf) are computed from, so they do not depend on which records were sampled or errored.
    all_references: list[tuple[str, ...]] = field(default_factory=list, repr=False)
    all_inputs: list[str | None] = field(default_factory=list, repr=False)
    all_ids: list[str] = field(default_factory=list, repr=False)

    def metadata(self) -> dict[str, Any]:
        return {
            "path": self.spec.path,
            "format": self.format,
            "sha256": self.sha256,
            "rows": self.n_rows,
            "n_records": len(self.samples),
            "input_field": self.spec.input_field,
            "target_field": self.spec.target_field,
            "output_field": self.spec.output_field,
            "id_field": self.spec.id_field,
            "target_delimiter": self.spec.target_delimiter,
            **({"gold_field": self.spec.gold_field} if self.spec.gold_field else {}),
            **({"human_score_field": self.spec.human_score_field} if self.spec.human_score_field else {}),
        }


def load_dataset(spec: DatasetSpec, *, skip_invalid: bool = False, max_samples: int | None = None,
                 seed: int = 0, progress: bool = True) -> LoadedDataset:
    path = Path(spec.path)
    if not path.exists():
        raise InputError("dataset not found", path=spec.path)
    fmt, rows = _read_rows(path, spec.split, progress)
    samples: list[Sample] = []
    invalid: list[InvalidRecord] = []
    first_line_of_id: dict[str, int] = {}
    n_rows = 0
    for line, row in rows:
        n_rows += 1
        try:
            sample = _to_sample(row, line, spec)
            if sample.id in first_line_of_id:
                raise InputError(f"duplicate id '{sample.id}' (first on line {first_line_of_id[sample.id]})",
                                 path=spec.path, line=line, field=spec.id_field)
        except InputError as exc:
            if not skip_invalid:
                if exc.path is None:
                    raise InputError(exc.reason, path=spec.path, line=line, field=exc.field) from None
                raise
            invalid.append(InvalidRecord(line, exc.field, exc.reason))
            continue
        first_line_of_id[sample.id] = line
        samples.append(sample)
    if not samples:
        raise InputError("no valid records" if n_rows else "dataset is empty", path=spec.path)
    all_references = [s.references for s in samples]
    all_inputs = [s.model_input for s in samples]
    all_ids = [s.id for s in samples]
    if max_samples is not None and max_samples < len(samples):
        keep = sorted(random.Random(seed).sample(range(len(samples)), max_samples))
        samples = [samples[i] for i in keep]
    return LoadedDataset(spec, fmt, dataset_sha256(path), samples, invalid, n_rows, all_references,
                         all_inputs, all_ids)


def dataset_sha256(path: Path) -> str:
    """sha256 of a file, or of a directory's files (names and contents, sorted)."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class _Unparsable:
    reason: str


def _to_sample(row: Any, line: int, spec: DatasetSpec) -> Sample:
    if isinstance(row, _Unparsable):
        raise InputError(row.reason)
    if not isinstance(row, dict):
        raise InputError(f"record must be an object, got {type(row).__name__}", line=line)
    references = _references(row, spec)
    model_output = None
    if spec.output_field is not None:
        model_output = _required_text(row, spec.output_field, allow_empty=True)
        model_input = row.get(spec.input_field)
        model_input = model_input if isinstance(model_input, str) else None
    else:
        model_input = _required_text(row, spec.input_field, allow_empty=False)
    raw_id = row.get(spec.id_field)
    if raw_id is None or raw_id == "":
        record_id = str(line)
    elif isinstance(raw_id, (str, int)) and not isinstance(raw_id, bool):
        record_id = str(raw_id)
    else:
        raise InputError(f"id must be a string or integer, got {type(raw_id).__name__}", field=spec.id_field)
    gold = _gold(row, spec.gold_field) if spec.gold_field else None
    human = _human_score(row, spec.human_score_field) if spec.human_score_field else None
    return Sample(record_id, line, model_input, references, model_output, gold, human)


def _gold(row: dict, name: str) -> tuple[str, ...]:
    value = row.get(name)
    if isinstance(value, str) and value.strip():
        return (value.strip(),)
    if isinstance(value, list) and value and all(isinstance(v, str) and v.strip() for v in value):
        return tuple(v.strip() for v in value)
    raise InputError("expected a gold passage (a document name, chunk id or passage text) or a non-empty list of "
                     f"them, got {'nothing' if value is None else type(value).__name__}", field=name)


def _human_score(row: dict, name: str) -> float | None:
    """A finite number; missing or null means "not rated" (agreement rests on the rated records)."""
    value = row.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise InputError(f"expected a number, got {value!r}", field=name) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"expected a finite number, got {value!r}", field=name)
    return float(value)


def _required_text(row: dict, name: str, *, allow_empty: bool) -> str:
    if name not in row or row[name] is None:
        raise InputError("missing field", field=name)
    value = row[name]
    if not isinstance(value, str):
        raise InputError(f"expected a string, got {type(value).__name__}", field=name)
    if not allow_empty and not value.strip():
        raise InputError("empty text", field=name)
    return value


def _references(row: dict, spec: DatasetSpec) -> tuple[str, ...]:
    name = spec.target_field
    if name not in row or row[name] is None:
        raise InputError("missing field", field=name)
    value = row[name]
    if isinstance(value, str):
        parts = value.split(spec.target_delimiter) if spec.target_delimiter else [value]
    elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        parts = value
    else:
        raise InputError("expected a string or a non-empty list of strings, got "
                         f"{type(value).__name__}", field=name)
    parts = [p.strip() if spec.target_delimiter else p for p in parts]
    if any(not p.strip() for p in parts):
        raise InputError("empty reference text", field=name)
    return tuple(parts)


def read_rows(path: str | Path, progress: bool = False) -> tuple[str, Iterator[tuple[int, Any]]]:
    """(format, (line, row) pairs) of a JSONL, JSON list or CSV file, as datasets are read; a row that cannot
    be parsed comes as an object with a ``reason``."""
    return _read_rows(Path(path), None, progress)


def _read_rows(path: Path, split: str | None, progress: bool = True) -> tuple[str, Iterator[tuple[int, Any]]]:
    if path.is_dir():
        return "hf_datasets", _hf_rows(path, split, progress)
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return "jsonl", _jsonl_rows(path)
    if suffix == ".json":
        return "json", _json_list_rows(path)
    if suffix in {".csv", ".tsv"}:
        return suffix[1:], _csv_rows(path, "\t" if suffix == ".tsv" else ",")
    raise InputError("unsupported dataset format; use .jsonl, .json, .csv/.tsv or a `datasets` "
                     "directory saved with save_to_disk", path=str(path))


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", path=str(path)) from None


def _jsonl_rows(path: Path) -> Iterator[tuple[int, Any]]:
    for number, text in split_lines(_read_text(path)):
        if not text.strip():
            continue
        try:
            yield number, json.loads(text)
        except json.JSONDecodeError as exc:  # one bad line spoils only its own record
            yield number, _Unparsable(f"malformed JSON: {exc.msg} (column {exc.colno})")


def _json_list_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """Decode a JSON array element by element so each record knows the line it starts on."""
    text = _read_text(path)
    decoder = json.JSONDecoder()

    def fail(msg: str, pos: int) -> InputError:
        return InputError(f"malformed JSON: {msg}", path=str(path), line=text.count("\n", 0, pos) + 1)

    def skip_ws(pos: int) -> int:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        return pos

    pos = skip_ws(0)
    if pos >= len(text) or text[pos] != "[":
        raise fail("expected a list of records ('[' ...)", pos)
    pos = skip_ws(pos + 1)
    if pos < len(text) and text[pos] == "]":
        return
    while True:
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise fail(exc.msg, exc.pos) from None
        yield text.count("\n", 0, pos) + 1, value
        pos = skip_ws(end)
        if pos < len(text) and text[pos] == ",":
            pos = skip_ws(pos + 1)
        elif pos < len(text) and text[pos] == "]":
            if skip_ws(pos + 1) != len(text):
                raise fail("extra data after the list", skip_ws(pos + 1))
            return
        else:
            raise fail("expected ',' or ']'", pos)


def _csv_rows(path: Path, delimiter: str) -> Iterator[tuple[int, Any]]:
    """Rows with the physical line they start on. Strict quoting: a quote opened and never closed would
    otherwise swallow every following row into one field and the file would load as one record."""
    text = _read_text(path)
    # newline="": the csv module sees every line break itself, so breaks inside quoted fields are kept
    # and line numbers count physical lines (U+2028 and friends are not line breaks here)
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    start = 2  # the header is line 1
    try:
        for row in reader:
            if None in row:  # more cells than header columns
                raise InputError(f"{len(row[None])} more cell(s) than header columns", path=str(path),
                                 line=start)
            yield start, {k: v for k, v in row.items() if v is not None}
            start = reader.line_num + 1
    except csv.Error as exc:
        reason = str(exc)
        if "unexpected end of data" in reason:
            reason = ("a quoted field that starts in this record is never closed: it would swallow every "
                      "following line (close the quote, or double quotes inside quoted text)")
        elif "expected after" in reason:
            reason = (f"malformed quoted field ({reason}): a quote inside a quoted field must be doubled, or "
                      "a quote opened in this record is not closed where it should be")
        raise InputError(f"malformed CSV: {reason}", path=str(path), line=start) from None


def _hf_rows(path: Path, split: str | None, progress: bool = True) -> Iterator[tuple[int, Any]]:
    import datasets  # heavy; only for this format

    try:
        with quiet_library_progress(not progress):
            loaded = datasets.load_from_disk(str(path))
    except FileNotFoundError as exc:
        raise InputError(f"not a dataset saved with `save_to_disk` ({exc})", path=str(path)) from None
    if isinstance(loaded, datasets.DatasetDict):
        names = list(loaded)
        chosen = split or ("test" if "test" in loaded else names[0] if len(names) == 1 else None)
        if chosen not in loaded:
            raise InputError(f"choose a split with --split (available: {', '.join(names)})", path=str(path))
        loaded = loaded[chosen]
    elif split is not None:
        raise InputError("--split given but the directory holds a single Dataset", path=str(path))
    yield from enumerate(loaded, start=1)
