"""Loading records: formats, ids, references, and errors that name file, line and field."""

from __future__ import annotations

import json

import pytest

from evalkit.data.dataset import DatasetSpec, load_dataset
from evalkit.errors import InputError
from tests.helpers import write_jsonl

GOOD = [{"id": "a", "document": "Doc one.", "summary": "Sum one."},
        {"id": "b", "document": "Doc two.", "summary": "Sum two."}]


def load(path, **kwargs):
    spec_keys = {"input_field", "target_field", "output_field", "id_field", "target_delimiter", "split"}
    spec = DatasetSpec(str(path), **{k: v for k, v in kwargs.items() if k in spec_keys})
    return load_dataset(spec, **{k: v for k, v in kwargs.items() if k not in spec_keys})


def test_jsonl_json_csv_and_hf_directory_load_the_same_records(tmp_path):
    import datasets

    jsonl = write_jsonl(tmp_path / "d.jsonl", GOOD)
    (tmp_path / "d.json").write_text(json.dumps(GOOD, indent=2))
    (tmp_path / "d.csv").write_text('id,document,summary\na,Doc one.,Sum one.\nb,"Doc two.","Sum two."\n')
    datasets.Dataset.from_list(GOOD).save_to_disk(str(tmp_path / "hf"))
    loaded = [load(p) for p in (jsonl, tmp_path / "d.json", tmp_path / "d.csv", tmp_path / "hf")]
    as_tuples = [[(s.id, s.model_input, s.references) for s in d.samples] for d in loaded]
    assert all(t == as_tuples[0] for t in as_tuples)
    assert as_tuples[0] == [("a", "Doc one.", ("Sum one.",)), ("b", "Doc two.", ("Sum two.",))]
    assert [d.format for d in loaded] == ["jsonl", "json", "csv", "hf_datasets"]
    assert len(loaded[0].sha256) == 64


def test_ids_default_to_line_numbers_and_custom_fields(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "x", "ref": "y"}, {"text": "z", "ref": "w"}])
    data = load(path, input_field="text", target_field="ref")
    assert [s.id for s in data.samples] == ["1", "2"]


def test_several_references_as_list_or_delimiter(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [
        {"document": "d", "summary": ["one", "two"]},
        {"document": "d", "summary": "three <OR> four"},
    ])
    data = load(path, target_delimiter="<OR>")
    assert [s.references for s in data.samples] == [("one", "two"), ("three", "four")]


@pytest.mark.parametrize(("line2", "field", "reason"), [
    ('{"id": "b", "document": "x", "summary": ', None, "malformed JSON"),
    ('{"id": "b", "summary": "s"}', "document", "missing field"),
    ('{"id": "b", "document": "x", "summary": ""}', "summary", "empty reference"),
    ('{"id": "b", "document": "x", "summary": 3}', "summary", "expected a string"),
    ('{"id": "b", "document": "  ", "summary": "s"}', "document", "empty text"),
    ('{"id": "a", "document": "x", "summary": "s"}', "id", "duplicate id"),
    ('[1, 2]', None, "must be an object"),
])
def test_bad_record_names_file_line_and_field(tmp_path, line2, field, reason):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(GOOD[0]) + "\n" + line2 + "\n" + json.dumps({**GOOD[1], "id": "c"}) + "\n")
    with pytest.raises(InputError) as info:
        load(path)
    err = info.value
    assert (err.path, err.line, err.field) == (str(path), 2, field)
    assert reason in str(err) and f"{path}:2" in str(err)


def test_skip_invalid_counts_and_keeps_the_rest(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(GOOD[0]) + "\n{oops\n" + '{"id": "x", "document": "d"}\n'
                    + json.dumps(GOOD[1]) + "\n")
    data = load(path, skip_invalid=True)
    assert [s.id for s in data.samples] == ["a", "b"]
    assert [(r.line, r.field) for r in data.invalid] == [(2, None), (3, "summary")]
    assert data.n_rows == 4


def test_json_list_errors_report_the_line_of_the_record(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('[\n  {"id": "a", "document": "d", "summary": "s"},\n  {"id": "b", "document": "d"}\n]\n')
    with pytest.raises(InputError) as info:
        load(path)
    assert (info.value.line, info.value.field) == (3, "summary")


def test_csv_errors_report_the_physical_line(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('id,document,summary\na,"multi\nline doc",s\nb,doc,\n')
    with pytest.raises(InputError) as info:
        load(path)
    assert (info.value.line, info.value.field) == (4, "summary")


def test_output_field_allows_empty_outputs_and_needs_no_input(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"summary": "s", "out": ""}, {"summary": "s", "out": "o"}])
    data = load(path, output_field="out")
    assert [s.model_output for s in data.samples] == ["", "o"]
    bad = write_jsonl(tmp_path / "e.jsonl", [{"summary": "s", "out": None}])
    with pytest.raises(InputError, match="missing field"):
        load(bad, output_field="out")


def test_max_samples_is_a_seeded_sample_in_file_order(tmp_path):
    rows = [{"id": str(i), "document": "d", "summary": "s"} for i in range(50)]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    first = [s.id for s in load(path, max_samples=10, seed=1).samples]
    assert first == [s.id for s in load(path, max_samples=10, seed=1).samples]
    assert first != [s.id for s in load(path, max_samples=10, seed=2).samples]
    assert first == sorted(first, key=int) and len(first) == 10


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load(tmp_path / "nope.jsonl")
    (tmp_path / "d.parquet").write_text("x")
    with pytest.raises(InputError, match="unsupported dataset format"):
        load(tmp_path / "d.parquet")
