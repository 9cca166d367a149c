"""The LLM judge: parsing, and judgements through a real runner (boto3 against the local Bedrock server),
kept in the run store, counted when unparseable, reused on a re-run."""

from __future__ import annotations

import json

import pytest

from evalkit.scoring.judge import UnparseableJudgement, parse_judgement
from tests.aws_server import AWSServer, aws_environment
from tests.helpers import write_jsonl


@pytest.mark.parametrize("text, score, reasoning", [
    ("<reasoning>Matches the reference.</reasoning>\n<score>4</score>", 4.0, "Matches the reference."),
    ("<reasoning>Close.</reasoning><score> 3.5 </score>", 3.5, "Close."),
    ("<score>1</score> on second thought <score>2</score>", 2.0, None),  # the last tag counts
    ("The answer is partly right.\nScore: 3", 3.0, None),
    ("**Score:** 5", 5.0, None),
    ("I would give it 4/5.", 4.0, None),
    ("<reasoning>Wrong year.<score>0</score>", 0.0, "Wrong year."),
])
def test_judgements_are_parsed(text, score, reasoning):
    assert parse_judgement(text) == (score, reasoning)


@pytest.mark.parametrize("text, message", [
    ("The answer looks fine to me.", "no score found"), ("", "no score found"),
    ("<score>7</score>", "outside 0..5"), ("<score>excellent</score>", "no score found"),
])
def test_unparseable_judgements_raise(text, message):
    with pytest.raises(UnparseableJudgement, match=message):
        parse_judgement(text)


def test_judge_scores_through_the_executor_counts_unparseable_ones_and_a_rerun_reuses_every_judgement(
        tmp_path, monkeypatch):
    """The local server answers with the prompt's last twelve words; the prompt ends with the answer, so each
    answer decides what the judge says."""
    from evalkit.api import evaluate_summarization

    rows = [
        {"id": "a", "question": "How long is the warranty?", "answer": "Two years.",
         "output": "Two years. <reasoning>Same as the reference.</reasoning> <score>5</score>"},
        {"id": "b", "question": "Which port?", "answer": "8443", "output": "Port 80. <score>1</score>"},
        {"id": "c", "question": "What colour?", "answer": "Blue", "output": "It is blue, I think."},
        {"id": "d", "question": "How many?", "answer": "32", "output": "<score>9</score>"},
    ]
    data = write_jsonl(tmp_path / "qa.jsonl", rows)
    template = "Question: $question\nReference: $reference\nJudge this answer: $answer"
    with AWSServer() as server:
        for key, value in aws_environment(server.url).items():
            monkeypatch.setenv(key, value)

        def run():
            return evaluate_summarization(
                str(data), input_field="question", target_field="answer", output_field="output",
                output_dir=str(tmp_path / "run"), metrics=["judge"], progress=False, write_report=False,
                metric_options={"judge": {"model": "bedrock:judge.model-v1", "prompt_template": template}})

        result = run()
        calls = len(server.state.calls)
        again = run()
        assert len(server.state.calls) == calls == 4  # one call per record, none on the re-run
    records = {r["id"]: r for r in result.records}
    assert records["a"]["scores"]["judge"] == 5.0 and records["b"]["scores"]["judge"] == 1.0
    assert "Same as the reference." in records["a"]["explanations"]["judge"]  # the raw judgement is kept
    assert "unparseable judgement: no score found" in records["c"]["score_errors"]["judge"]
    assert "It is blue" in records["c"]["explanations"]["judge"]
    assert "outside 0..5" in records["d"]["score_errors"]["judge"]
    summary = result.results["metrics"]["judge"]
    assert summary["n"] == 2 and summary["errors"] == 2 and summary["mean"] == 3.0 and summary["range"] == [0, 5]
    assert result.results["counts"]["scoring_errors"] == 2
    assert result.results["scoring_calls"]["judge"] == {"reused": 0, "called": 4, "failed": 0, "retries": 0}
    assert again.results["scoring_calls"]["judge"]["reused"] == 4
    assert [r["scores"] for r in again.records] == [r["scores"] for r in result.records]
    sent = json.loads(json.dumps(server.state.calls[0].body))
    assert "Judge this answer:" in json.dumps(sent)
    settings = result.results["metric_settings"]["judge"]
    assert settings["model"] == "bedrock:judge.model-v1" and settings["prompt_template"] == template


def test_a_judge_prompt_without_its_fields_or_model_is_refused_before_anything_runs(tmp_path):
    from evalkit.errors import UsageError
    from evalkit.scoring.base import METRICS

    judge = METRICS.get("judge")
    with pytest.raises(UsageError, match=r"\$reference"):
        judge.check_options(model="hf:smollm2", prompt_template="Q: $question A: $answer")
    with pytest.raises(UsageError, match="needs a judge model"):
        judge.check_options()
    with pytest.raises(UsageError, match="unknown model runner"):
        judge.check_options(model="nosuch:model")
