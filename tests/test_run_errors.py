"""Errors are data: per-record errors through real runners, the error-rate gate, crashes told apart.

Real errors come from the real HF runner: a tiny Llama with a 512-token context, and two records whose
documents do not fit it. The isolation and wrong-count cases use two small runners registered here, as any
runner plug-in registers: one fails on the prompts it cannot handle, one returns too few outputs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from evalkit.cli import main
from evalkit.runners.base import RUNNERS, Runner
from tests.helpers import build_tiny_causal_lm, write_jsonl

LONG = 2  # records with a document too long for the tiny model's context


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture()
def dataset(tmp_path, news_records) -> Path:
    rows = [dict(r) for r in news_records[:10]]
    for i in range(LONG):
        rows[i * 5]["document"] = "the city council said " * 150  # 600 tokens > 512 - 8 new tokens
    return write_jsonl(tmp_path / "d.jsonl", rows)


def _run(tmp_path: Path, dataset: Path, model: str, *extra: str) -> tuple[int, Path]:
    out = tmp_path / "run"
    code = main(["run", "summarization", "--model", model, "--dataset", str(dataset), "--output-dir", str(out),
                 "--max-new-tokens", "8", "--batch-size", "2", "--no-progress", "--no-report", *extra])
    return code, out


def _results(out: Path) -> tuple[dict, list[dict]]:
    results = json.loads((out / "results.json").read_text())
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().split("\n") if line]
    return results, records


def test_over_context_prompts_are_per_record_errors_and_the_error_rate_gate_exits_3(tmp_path, dataset, tiny_model,
                                                                                    capsys):
    code, out = _run(tmp_path, dataset, f"hf:{tiny_model}", "--max-error-rate", "0.1")
    err = capsys.readouterr().err
    assert code == 3
    assert "2 of 10 records errored (20.00%): above --max-error-rate 0.1: exit 3" in err and "not a crash" in err
    results, records = _results(out)
    assert results["outcome"]["status"] == "error_rate_exceeded" and results["outcome"]["exit_code"] == 3
    assert results["gate"]["exit_code"] == 3
    failed = [r for r in records if r["error"] is not None]
    assert [r["id"] for r in failed] == [records[0]["id"], records[5]["id"]]
    for record in failed:
        assert record["error"].startswith("context length: the prompt has ") and "--truncate" in record["error"]
        assert "leaves 504 for a prompt after --max-new-tokens 8" in record["error"]
    assert all(isinstance(r["model_output"], str) for r in records if r["error"] is None)
    assert results["counts"]["errors"] == 2 and results["counts"]["failed_records"] == 2
    assert all(m["n"] == 8 and m["errors"] == 2 for m in results["metrics"].values())
    # the same finished run, gated again at a limit it meets: 2 of 10 is exactly 0.2
    assert main(["gate", "--candidate", str(out), "--max-error-rate", "0.2"]) == 0
    assert json.loads((out / "results.json").read_text())["outcome"]["status"] == "complete"


def test_truncate_cuts_the_input_to_fit_and_records_it(tmp_path, dataset, tiny_model):
    code, out = _run(tmp_path, dataset, f"hf:{tiny_model}", "--truncate")
    assert code == 0
    results, records = _results(out)
    assert results["counts"]["truncated"] == LONG and results["counts"]["errors"] == 0
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    for record in (records[0], records[5]):
        cut = record["truncated"]
        assert cut["prompt_tokens_before"] > 504 >= cut["prompt_tokens"]
        assert 0 < cut["kept_input_tokens"] < cut["input_tokens"] == 600
        assert len(tokenizer(record["prompt"])["input_ids"]) == cut["prompt_tokens"]  # the prompt the model saw
        assert record["prompt"].startswith("Summarize the following text in one sentence: the city council")
        assert record["model_input"] == "the city council said " * 150  # the dataset's input, unchanged
    assert all(r["truncated"] is None for i, r in enumerate(records) if i not in (0, 5))


class _FailsOnBoom(Runner):
    """Raises for a whole batch when any of its prompts holds BOOM (as a backend does for one bad request)."""

    calls: list[int] = []

    def __init__(self, target: str, options):
        self.spec = f"test-boom:{target}"

    def generate(self, prompts: Sequence[str]) -> list[str]:
        type(self).calls.append(len(prompts))
        if any("BOOM" in p for p in prompts):
            raise ValueError("the backend rejected a prompt")
        return [p[-20:] for p in prompts]


class _TooFewOutputs(Runner):
    def __init__(self, target: str, options):
        self.spec = f"test-short:{target}"

    def generate(self, prompts: Sequence[str]) -> list[str]:
        return ["x"] * (len(prompts) - 1)


def test_one_failing_record_does_not_fail_its_neighbours(tmp_path, news_records, monkeypatch):
    rows = [dict(r) for r in news_records[:12]]
    rows[5]["document"] += " BOOM"
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    monkeypatch.setitem(RUNNERS._entries, "test-boom", _FailsOnBoom)
    _FailsOnBoom.calls = []
    code, out = _run(tmp_path, data, "test-boom:x")
    assert code == 0
    _, records = _results(out)
    assert [r["id"] for r in records if r["error"]] == [rows[5]["id"]]
    assert records[5]["error"] == "ValueError: the backend rejected a prompt"
    assert all(r["model_output"] for i, r in enumerate(records) if i != 5)
    assert _FailsOnBoom.calls[0] == 8  # one chunk of 4 batches failed, then was split down to the bad record


def test_a_crash_is_told_apart_from_an_error_rate_in_the_message_and_results(tmp_path, news_records, monkeypatch,
                                                                           capsys):
    data = write_jsonl(tmp_path / "d.jsonl", news_records[:4])
    monkeypatch.setitem(RUNNERS._entries, "test-short", _TooFewOutputs)
    code, out = _run(tmp_path, data, "test-short:x", "--max-error-rate", "0.5")
    err = capsys.readouterr().err
    assert code == 3
    assert "the run crashed" in err and "returned 3 outputs for 4 prompts" in err and "IndexError" not in err
    results = json.loads((out / "results.json").read_text())
    assert results["outcome"]["status"] == "crashed" and results["outcome"]["exit_code"] == 3
    assert "returned 3 outputs for 4 prompts" in results["outcome"]["message"]
    assert main(["gate", "--candidate", str(out), "--max-error-rate", "0.5"]) == 2  # nothing to gate
    assert "stopped before it finished" in capsys.readouterr().err


def test_every_generation_failing_is_a_finished_run_not_a_crash(tmp_path, news_records, monkeypatch, capsys):
    rows = [dict(r, document=r["document"] + " BOOM") for r in news_records[:3]]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    monkeypatch.setitem(RUNNERS._entries, "test-boom", _FailsOnBoom)
    code, out = _run(tmp_path, data, "test-boom:x")
    err = capsys.readouterr().err
    assert code == 3 and "every generation failed (3 of 3)" in err and "not a crash" in err
    results, records = _results(out)
    assert results["outcome"]["status"] == "all_records_failed" and results["counts"]["errors"] == 3
    assert all(r["error"] == "ValueError: the backend rejected a prompt" for r in records)
    assert all(m["n"] == 0 and m["errors"] == 3 and m["mean"] is None for m in results["metrics"].values())
