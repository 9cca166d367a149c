"""Every input is read correctly or refused clearly, before any model loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evalkit.cli import main
from evalkit.data.dataset import DatasetSpec, load_dataset
from evalkit.errors import InputError
from tests.helpers import build_tiny_causal_lm, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
# Valid inside JSON strings, and line breaks to str.splitlines(); NUL arrives escaped (\u0000) in JSON.
ODD = "a\u2028b\u2029c\u0085d\x00e"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture()
def forbid_model_loads(monkeypatch):
    """Fail the test if a metric model or a runner is loaded: the check under test must come first."""
    def loaded(*args, **kwargs):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr("evalkit.scoring.base.build_metrics", loaded)
    monkeypatch.setattr("evalkit.runners.base.create_runner", loaded)


def _byo_rows(news_records, n=6):
    return [{"id": r["id"], "document": r["document"], "summary": r["summary"],
             "output": r["document"].split(". ")[0] + "."} for r in news_records[:n]]


def _run(*args: str) -> int:
    return main(["run", "summarization", "--no-progress", *args])


def test_jsonl_lines_break_only_at_newline_and_evalkit_reads_and_gates_its_own_files(tmp_path, news_records, capsys):
    rows = _byo_rows(news_records)
    rows[1]["document"] = f"start {ODD} end"
    rows[1]["output"] = f"out {ODD}"
    data = tmp_path / "d.jsonl"
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    lines.insert(3, '{"id": "broken"')  # line 4: the only bad line
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert "\u2028" in data.read_text(encoding="utf-8")  # written raw, as ensure_ascii=False does
    loaded = load_dataset(DatasetSpec(str(data), output_field="output"), skip_invalid=True)
    assert [s.id for s in loaded.samples] == [r["id"] for r in rows]  # none split, none dropped
    assert [(r.line, r.reason[:14]) for r in loaded.invalid] == [(4, "malformed JSON")]
    assert loaded.samples[1].model_input == f"start {ODD} end" and loaded.samples[3].line == 5

    out = tmp_path / "run"
    assert _run("--dataset", str(data), "--output-field", "output", "--skip-invalid", "--output-dir", str(out)) == 0
    raw = (out / "records.jsonl").read_text(encoding="utf-8")
    assert "\u2028" not in raw and "\\u2028" in raw and "\\u0000" in raw  # escaped: any line reader works
    from evalkit.results import load_run

    run = load_run(out)
    assert run.records[1]["model_input"] == f"start {ODD} end" and run.records[1]["model_output"] == f"out {ODD}"
    assert len(run.records) == 6
    # evalkit gates its own run
    assert main(["gate", "--candidate", str(out), "--baseline", str(out), "--max-regression", "rouge1=0.1"]) == 0
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "\x00" not in html and "\\x00e" in html  # escaped NUL is shown, never written raw
    capsys.readouterr()


def test_acr_target_files_keep_a_target_whole(tmp_path):
    from acr.targets import load_targets

    txt = tmp_path / "t.txt"
    txt.write_text(f"first {ODD[:-2]} target\nsecond\r\n", encoding="utf-8")
    assert load_targets(txt) == [f"first {ODD[:-2]} target", "second"]
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text(json.dumps({"text": f"x{ODD}y"}, ensure_ascii=False) + "\n", encoding="utf-8")
    assert load_targets(jsonl) == [f"x{ODD}y"]


def test_csv_with_an_unterminated_quote_is_refused_with_its_line(tmp_path, forbid_model_loads, capsys):
    path = tmp_path / "d.csv"
    path.write_text('id,document,summary,output\n1,doc one,sum one,out\n2,doc two,"sum two,out\n'
                    "3,doc three,sum three,out\n4,doc four,sum four,out\n", encoding="utf-8")
    assert _run("--dataset", str(path), "--output-field", "output", "--output-dir", str(tmp_path / "o")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"evalkit: error: {path}:3: malformed CSV: a quoted field") and "never closed" in err
    assert len(err.splitlines()) == 1
    closed_later = tmp_path / "late.csv"
    closed_later.write_text('id,document,summary,output\n1,doc,"sum one,out\n2,doc,sum,out\n3,doc,"sum",out\n',
                            encoding="utf-8")
    with pytest.raises(InputError, match=r"late.csv:2: malformed CSV"):
        load_dataset(DatasetSpec(str(closed_later), output_field="output"))
    good = tmp_path / "good.csv"
    good.write_text('id,document,summary,output\n1,"two\nlines, a comma",s,o\n2,d,"x ""q"" y",o\n', encoding="utf-8")
    loaded = load_dataset(DatasetSpec(str(good), output_field="output"))
    assert [(s.line, s.references) for s in loaded.samples] == [(2, ("s",)), (4, ('x "q" y',))]


def test_output_dir_that_is_a_file_or_unwritable_is_refused_first(tmp_path, news_records, forbid_model_loads,
                                                                  capsys):
    data = write_jsonl(tmp_path / "d.jsonl", _byo_rows(news_records))
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for target, message in ((a_file, "exists and is not a directory"),
                            (Path("/proc/evalkit-test-dir"), "is not writable")):
        assert _run("--dataset", str(data), "--output-field", "output", "--output-dir", str(target)) == 2
        err = capsys.readouterr().err.strip()
        assert err == err.splitlines()[0] and message in err and str(target) in err


def test_unknown_runner_and_bertscore_options_fail_fast_in_one_line(tmp_path, news_records, forbid_model_loads,
                                                                   capsys):
    data = write_jsonl(tmp_path / "d.jsonl", _byo_rows(news_records))
    cases = [
        (["--model", "openai:gpt-4o"], "unknown model runner 'openai'"),
        (["--model", "hf:no-such-org/no-such-model"], "neither a local path nor in the Hugging Face cache"),
        (["--output-field", "output", "--bertscore-model", "no-such-org/no-such-model"],
         "neither a local model directory nor in the Hugging Face cache"),
        (["--output-field", "output", "--bertscore-layer", "7"], "has 6 layers (choose 1 to 6)"),
    ]
    for extra, message in cases:
        started = time.perf_counter()
        assert _run("--dataset", str(data), "--output-dir", str(tmp_path / "o"), *extra) == 2
        assert time.perf_counter() - started < 10  # no hub retries
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
        assert not (tmp_path / "o").exists()


def test_a_finished_run_of_other_settings_is_not_overwritten(tmp_path, news_records, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", _byo_rows(news_records))
    out = tmp_path / "run"
    base = ["--dataset", str(data), "--output-field", "output", "--output-dir", str(out), "--no-report"]
    assert _run(*base) == 0
    first = (out / "results.json").read_text()
    assert _run(*base, "--max-samples", "3") == 2
    err = capsys.readouterr().err
    assert "holds a finished run made with other settings (max_samples: None -> 3)" in err and "--overwrite" in err
    assert (out / "results.json").read_text() == first  # untouched
    assert _run(*base) == 0  # the same settings again: allowed (a re-run, not a different run)
    assert _run(*base, "--max-samples", "3", "--overwrite") == 0
    assert json.loads((out / "results.json").read_text())["counts"]["records"] == 3


def test_no_progress_silences_every_bar_including_model_loading(tmp_path, news_records, tiny_model):
    data = write_jsonl(tmp_path / "d.jsonl", news_records[:4])
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("TQDM_DISABLE", None)
    proc = subprocess.run([sys.executable, "-m", "evalkit", "run", "summarization", "--model", f"hf:{tiny_model}",
                           "--dataset", str(data), "--output-dir", str(tmp_path / "o"), "--max-new-tokens", "4",
                           "--no-progress"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
