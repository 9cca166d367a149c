"""`evalkit run summarization` end to end: files, exit codes, resume, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from evalkit.cli import main
from tests.helpers import build_tiny_causal_lm, read_jsonl, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
METRICS = {"rouge1", "rouge2", "rougeL", "meteor", "bertscore", "bertscore_precision", "bertscore_recall"}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture()
def byo_dataset(tmp_path, news_records) -> Path:
    rows = [{"id": r["id"], "document": r["document"], "summary": r["summary"],
             "output": r["document"].split(". ")[0] + "."} for r in news_records[:12]]
    rows[3]["output"] = ""  # an empty output is a legitimate (bad) answer, scored as such
    return write_jsonl(tmp_path / "byo.jsonl", rows)


def evalkit_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("TQDM_DISABLE", None)  # progress must be silenced by --no-progress itself
    return subprocess.run([sys.executable, "-m", "evalkit", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=600)


def read_run(out: Path) -> tuple[dict, list[dict]]:
    results = json.loads((out / "results.json").read_text())
    records = read_jsonl(out / "records.jsonl")
    return results, records


def test_bring_your_own_outputs_writes_the_documented_files(tmp_path, byo_dataset):
    out = tmp_path / "run"
    proc = evalkit_cli("run", "summarization", "--dataset", str(byo_dataset), "--output-field", "output",
                       "--output-dir", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "rouge2" in proc.stdout and "wrote" in proc.stdout
    results, records = read_run(out)
    assert set(results["metrics"]) == METRICS
    for name, summary in results["metrics"].items():
        assert set(summary) == {"mean", "std", "n", "ci95", "errors", "range", "higher_is_better"}, name
        assert summary["higher_is_better"] is True
        assert summary["n"] == 12 and summary["ci95"][0] <= summary["mean"] <= summary["ci95"][1]
        assert summary["errors"] == 0 and summary["range"] == ([-1.0, 1.0] if "bert" in name else [0.0, 1.0])
    assert results["model"] is None and results["output_field"] == "output"
    assert results["dataset"]["sha256"] == __import__("hashlib").sha256(byo_dataset.read_bytes()).hexdigest()
    assert results["metric_settings"]["bertscore"]["model"] == "all-MiniLM-L6-v2"
    assert results["metric_settings"]["bertscore"]["num_layers"] == 6
    assert results["counts"] == {"rows": 12, "records": 12, "scored": 12, "errors": 0, "scoring_errors": 0,
                                 "failed_records": 0, "truncated": 0, "skipped_invalid": 0}
    assert results["outcome"] == {"status": "complete", "exit_code": 0, "message": None}
    assert {"torch", "nltk", "rouge-score", "bert-score", "evalkit"} <= set(results["versions"])
    assert "scoring_s" in results["timings"] and results["seed"] == 0
    assert [r["id"] for r in records] == [f"news-{i:03d}" for i in range(1, 13)]
    assert set(records[0]) == {"id", "model_input", "prompt", "model_output", "target_output", "scores",
                               "error", "score_errors", "truncated"}
    assert records[3]["model_output"] == "" and records[3]["scores"]["rouge1"] == 0.0
    assert set(records[0]["scores"]) == METRICS
    assert (out / "report.html").stat().st_size > 10_000
    assert not list(out.glob(".*.tmp")), "temporary files left behind"


def test_generation_with_a_local_model_then_resume(tmp_path, tiny_model, news_records):
    data = write_jsonl(tmp_path / "d.jsonl", news_records[:6])
    out = tmp_path / "run"
    args = ["run", "summarization", "--model", f"hf:{tiny_model}", "--dataset", str(data), "--output-dir",
            str(out), "--max-new-tokens", "8", "--batch-size", "4", "--no-progress", "--no-report"]
    assert main(args) == 0
    results, records = read_run(out)
    assert results["model"] == f"hf:{tiny_model}" and "$model_input" in results["prompt_template"]
    assert results["runner"]["resumed_records"] == 0
    assert records[0]["prompt"].startswith("Summarize the following text in one sentence: ")
    assert records[0]["prompt"].endswith(news_records[0]["document"])
    assert all(isinstance(r["model_output"], str) and r["error"] is None for r in records)

    # A second run in the same directory reuses every finished generation, and says the same about the runner.
    assert main(args) == 0
    again, records_again = read_run(out)
    assert again["runner"]["resumed_records"] == 6

    def metadata(runner: dict) -> dict:
        return {k: v for k, v in runner.items() if k not in ("load_seconds", "resumed_records", "generation")}

    assert metadata(again["runner"]) == metadata(results["runner"])
    assert again["runner"]["identity"]["files"]["files"] >= 3  # weights, config, tokenizer files
    assert [r["model_output"] for r in records_again] == [r["model_output"] for r in records]

    # An interrupted run: only two calls made it into the run store.
    import sqlite3

    with sqlite3.connect(out / "calls.sqlite") as db:
        keep = [row[0] for row in db.execute("SELECT key FROM calls ORDER BY created_at LIMIT 2")]
        db.execute(f"DELETE FROM calls WHERE key NOT IN ({','.join('?' * len(keep))})", keep)
    assert main(args) == 0
    resumed, records_resumed = read_run(out)
    assert resumed["runner"]["resumed_records"] == 2 and resumed["generation"]["called"] == 4
    assert [r["model_output"] for r in records_resumed] == [r["model_output"] for r in records]
    assert sum(r["generation"]["cached"] for r in records_resumed) == 2

    # Other generation settings in the same directory: refused (the finished run would be lost) ...
    other = [*args[:-4], "--max-new-tokens", "4", "--no-progress", "--no-report"]
    assert main(other) == 2
    assert read_run(out)[0]["runner"]["resumed_records"] == 2  # untouched
    # ... unless asked to overwrite; then nothing of the old settings is reused ...
    assert main([*other, "--overwrite"]) == 0
    assert read_run(out)[0]["runner"]["resumed_records"] == 0
    # ... and nothing of them is lost either: back to 8 tokens, every call is reused.
    assert main([*args, "--overwrite"]) == 0
    assert read_run(out)[0]["runner"]["resumed_records"] == 6


def test_python_api_returns_a_dataframe(tmp_path, byo_dataset):
    import evalkit

    result = evalkit.evaluate_summarization(str(byo_dataset), output_field="output",
                                            output_dir=str(tmp_path / "api"), progress=False,
                                            write_report=False)
    frame = result.to_pandas()
    assert len(frame) == 12 and set(frame.columns) >= METRICS
    assert frame["rouge1"].mean() == pytest.approx(result.metrics["rouge1"]["mean"])
    assert list(result.metrics_frame().index) == list(result.metrics)
    loaded = evalkit.load_run(tmp_path / "api")
    assert loaded.results == result.results


@pytest.mark.parametrize(("extra", "message"), [
    (["--prompt-template", "Summarize: {document}"], "$model_input"),
    (["--model", "hf:x", "--output-field", "output"], "not both"),
    ([], "--model is required"),
    (["--output-field", "output", "--target-field", "nope"], ":1: missing field (field 'nope')"),
    (["--output-field", "output", "--max-samples", "0"], "positive integer"),
])
def test_usage_and_input_errors_exit_2_with_one_line(tmp_path, byo_dataset, extra, message, capsys):
    code = main(["run", "summarization", "--dataset", str(byo_dataset), "--output-dir", str(tmp_path / "o"),
                 "--no-progress", *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_bad_record_names_file_line_field_and_skip_invalid_counts_it(tmp_path, news_records):
    rows = [dict(r, output="An output.") for r in news_records[:5]]
    path = tmp_path / "d.jsonl"
    lines = [json.dumps(r) for r in rows]
    lines[2] = lines[2].replace('"summary"', '"summry"')
    lines.insert(4, '{"id": "broken", ')
    path.write_text("\n".join(lines) + "\n")
    base = ["run", "summarization", "--dataset", str(path), "--output-field", "output", "--no-progress",
            "--output-dir", str(tmp_path / "o"), "--no-report"]
    proc = evalkit_cli(*base)
    assert proc.returncode == 2
    assert f"{path}:3: missing field (field 'summary')" in proc.stderr and "Traceback" not in proc.stderr
    assert main([*base, "--skip-invalid"]) == 0
    results, records = read_run(tmp_path / "o")
    assert results["counts"]["skipped_invalid"] == 2 and results["counts"]["records"] == 4
    assert [r["line"] for r in results["invalid_records"]] == [3, 5]


def test_unavailable_model_is_one_line_exit_2(tmp_path, byo_dataset):
    proc = evalkit_cli("run", "summarization", "--model", "hf:no-such-org/no-such-model", "--dataset",
                       str(byo_dataset), "--output-dir", str(tmp_path / "o"), "--no-progress")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_help_imports_no_heavy_library():
    code = ("import sys, contextlib, io, evalkit.cli as c; c.build_parser().format_help()\n"
            "for command in (['run', 'summarization'], ['compare'], ['acr', 'run'], ['gate'], ['report']):\n"
            "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
            "        c.build_parser().parse_args([*command, '--help'])\n"
            "print([m for m in ('torch', 'transformers', 'numpy', 'pandas', 'nltk', 'ray', 'boto3') "
            "if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.slow
def test_smollm2_end_to_end(tmp_path, news_records):
    data = write_jsonl(tmp_path / "d.jsonl", news_records[:3])
    out = tmp_path / "smol"
    proc = evalkit_cli("run", "summarization", "--model", "hf:smollm2", "--dataset", str(data),
                       "--output-dir", str(out), "--max-new-tokens", "40", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # --no-progress: not even the GGUF loader's dequantization bar
    results, records = read_run(out)
    assert all(r["model_output"] and "<|im_start|>" not in r["model_output"] for r in records)
    assert results["metrics"]["bertscore"]["mean"] > 0.3 and results["metrics"]["rouge1"]["mean"] > 0.1
    assert results["runner"]["spec"] == "hf:smollm2"


def test_bad_metric_option_fails_before_generating(tmp_path, tiny_model, news_records, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", news_records[:2])
    out = tmp_path / "run"
    code = main(["run", "summarization", "--model", f"hf:{tiny_model}", "--dataset", str(data), "--output-dir",
                 str(out), "--bertscore-model", "some/unknown", "--no-progress"])
    assert code == 2 and "neither a local model directory nor in the Hugging Face cache" in capsys.readouterr().err
    assert not out.exists()


def test_bertscore_idf_comes_from_the_dataset_whatever_is_sampled(tmp_path, byo_dataset):
    """idf weights are a property of the dataset: a --max-samples run scores its records exactly as the
    full run does (they used to come from whichever references were scored)."""
    runs = {}
    for name, extra in (("full", []), ("sample", ["--max-samples", "5", "--seed", "3"])):
        out = tmp_path / name
        assert main(["run", "summarization", "--dataset", str(byo_dataset), "--output-field", "output",
                     "--output-dir", str(out), "--bertscore-idf", "--no-progress", "--no-report", *extra]) == 0
        runs[name] = read_run(out)
    full = {r["id"]: r["scores"] for r in runs["full"][1]}
    sample = runs["sample"][1]
    assert len(sample) == 5
    for record in sample:
        for column in ("bertscore", "bertscore_precision", "bertscore_recall"):
            assert record["scores"][column] == pytest.approx(full[record["id"]][column], abs=1e-7)
    for results, _ in runs.values():
        source = results["metric_settings"]["bertscore"]["idf_source"]
        assert source["records"] == 12 and source["references"] == 12 and source["from"].startswith("dataset")


def test_bertscore_idf_weights_are_counted_without_a_process_pool(monkeypatch):
    """bert-score counts idf documents in a multiprocessing Pool by default; in the metric process (started by
    spawn) that Pool spawns four interpreters that each import transformers. evalkit counts them in process:
    the same weights as bert-score's own counting, no Pool started."""
    import bert_score.utils

    from evalkit.scoring.bertscore import BertScore

    references = ["The cat sat on the mat.", "Markets rallied on Tuesday as the cat slept.", "The the the."]
    metric = BertScore(idf=True)
    expected = bert_score.utils.get_idf_dict(references, metric._scorer._tokenizer, nthreads=0)

    def no_pool(*args, **kwargs):
        raise AssertionError("a process pool was started")

    monkeypatch.setattr(bert_score.utils, "Pool", no_pool)
    metric._scorer.compute_idf(references)
    assert dict(metric._scorer._idf_dict) == dict(expected) and len(expected) > 5


def test_new_weights_at_the_same_path_are_generated_again_and_said_so(tmp_path, news_records):
    """The run store keys on what ran: another checkpoint saved to the same directory is another model."""
    model = build_tiny_causal_lm(tmp_path / "ckpt", seed=1)
    data = write_jsonl(tmp_path / "d.jsonl", news_records[:4])
    out = tmp_path / "run"
    args = ["run", "summarization", "--model", f"hf:{model}", "--dataset", str(data), "--output-dir", str(out),
            "--max-new-tokens", "6", "--no-progress", "--no-report"]
    assert main(args) == 0
    first, _ = read_run(out)
    build_tiny_causal_lm(tmp_path / "ckpt", seed=2)  # new weights, same path, same spec
    proc = evalkit_cli(*args)
    assert proc.returncode == 0, proc.stderr
    second, second_records = read_run(out)
    assert second["generation"]["reused"] == 0 and second["generation"]["called"] == 4
    assert second["runner"]["identity"]["files"]["sha256"] != first["runner"]["identity"]["files"]["sha256"]
    assert "now resolves to another model" in second["generation"]["identity_changed"]
    assert "note: hf:" in proc.stdout and "now resolves to another model" in proc.stdout
    assert all(not r["generation"]["cached"] for r in second_records)
    build_tiny_causal_lm(tmp_path / "ckpt", seed=1)  # the first weights again: their calls were never lost
    assert main(args) == 0
    assert read_run(out)[0]["generation"]["reused"] == 4
