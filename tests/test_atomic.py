"""Result files are replaced whole or not at all."""

from __future__ import annotations

import json
import os
import stat

import pytest

from evalkit.atomic import atomic_write_json, atomic_write_jsonl


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "results.json"
    atomic_write_json(path, {"ok": 1})
    with pytest.raises(ValueError):
        atomic_write_json(path, {"bad": float("nan")})  # not valid JSON: refused before anything is replaced
    assert json.loads(path.read_text()) == {"ok": 1}
    assert os.listdir(tmp_path) == ["results.json"]


def test_interrupted_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "records.jsonl"
    atomic_write_jsonl(path, [{"id": "1"}])

    def rows():
        yield {"id": "2"}
        raise KeyboardInterrupt  # e.g. Ctrl-C while the rows are being produced

    with pytest.raises(KeyboardInterrupt):
        atomic_write_jsonl(path, rows())
    assert path.read_text() == '{"id": "1"}\n' and os.listdir(tmp_path) == ["records.jsonl"]


def test_written_files_have_ordinary_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "r.json", {})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == 0o644
