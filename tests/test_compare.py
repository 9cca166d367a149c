"""evalkit compare: config checking (exit 2 before anything loads), the comparison's statistics and files,
require rules with JUnit/Markdown, shared scoring equal to separate runs, RAG systems and resume through the
local Bedrock server."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from evalkit.cli import main
from tests.aws_server import AWSServer, aws_environment
from tests.helpers import read_jsonl, write_jsonl

FACTS = [
    ("What colour is the Orbit dock?", "The Orbit dock is matte black."),
    ("How long is the X200 warranty?", "The X200 has a two-year warranty."),
    ("Which port does the hub use?", "The hub listens on port 8443."),
    ("How many sensors can one hub pair?", "One hub pairs up to eight sensors."),
    ("What charges the X200?", "The X200 charges from the 12 V adapter."),
    ("Where is data stored?", "Data is stored in Frankfurt, in the EU."),
    ("How often should the filter be replaced?", "Replace the filter every three months."),
    ("What does error E42 mean?", "E42 means the temperature sensor is disconnected."),
    ("How long does EU shipping take?", "EU orders arrive in three to five business days."),
    ("What Wi-Fi does the hub support?", "The hub supports Wi-Fi 6 on 2.4 and 5 GHz."),
    ("How do I reset the device?", "Hold the power button for ten seconds to reset it."),
    ("What is the hub's operating range?", "The hub works between 0 and 40 degrees Celsius."),
]


def _questions(tmp_path: Path, n: int = 24) -> Path:
    rows = []
    for i in range(n):
        question, answer = FACTS[i % len(FACTS)]
        rows.append({"id": f"q{i}", "question": f"{question} (case {i})", "answer": answer,
                     "gold": "facts.md", "rating": 5 - (i % 4)})
    return write_jsonl(tmp_path / "questions.jsonl", rows)


def _outputs(tmp_path: Path, name: str, answers: list[str], *, with_ids: bool = True) -> Path:
    rows = [({"id": f"q{i}"} if with_ids else {}) | {"output": a} for i, a in enumerate(answers)]
    return write_jsonl(tmp_path / f"{name}.jsonl", rows)


def _config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "compare.yaml"
    path.write_text(textwrap.dedent(body))
    return path


@pytest.fixture()
def three_systems(tmp_path) -> Path:
    """Three precomputed systems on 24 questions: 'good' answers with the reference, 'vague' with a loose
    paraphrase, 'refuser' declines every other question."""
    _questions(tmp_path)
    refs = [FACTS[i % len(FACTS)][1] for i in range(24)]
    _outputs(tmp_path, "good", refs)
    _outputs(tmp_path, "vague", [f"I think it is something like: {r.split()[-1]}" for r in refs])
    _outputs(tmp_path, "refuser", [("I don't know." if i % 2 else r) for i, r in enumerate(refs)], with_ids=False)
    return _config(tmp_path, """\
        task: qa
        dataset: {path: questions.jsonl}
        systems:
          - {name: good, outputs: good.jsonl}
          - {name: vague, outputs: vague.jsonl}
          - {name: refuser, outputs: refuser.jsonl}
        metrics: [semantic_similarity, rougeL, refusal]
        require:
          - "good > vague on semantic_similarity"
          - "good > refuser on refusal"
          - "refuser >= good on rougeL"
        output_dir: out
        """)


def test_three_systems_compared_with_paired_statistics_verdicts_and_require_rules(three_systems, tmp_path, capsys):
    from scipy import stats

    junit, summary = tmp_path / "rules.xml", tmp_path / "summary.md"
    code = main(["compare", "--config", str(three_systems), "--no-progress", "--junit", str(junit),
                 "--summary-md", str(summary)])
    out = capsys.readouterr().out
    assert code == 1  # one rule fails: the refuser is worse than good on rougeL
    comparison = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert set(comparison["systems"]) == {"good", "vague", "refuser"}
    for summaries in comparison["systems"].values():
        assert set(summaries) == {"semantic_similarity", "rougeL", "refusal"}
        for s in summaries.values():
            assert {"mean", "ci95", "n"} <= set(s) and s["n"] == 24
    assert comparison["systems"]["good"]["rougeL"]["mean"] == pytest.approx(1.0)
    assert comparison["systems"]["refuser"]["refusal"]["mean"] == pytest.approx(0.5)
    assert comparison["systems"]["refuser"]["refusal"]["ci_method"] == "wilson"
    assert len(comparison["pairs"]) == 3 * 3
    for pair in comparison["pairs"]:
        assert {"a", "b", "metric", "delta", "ci95", "p", "p_holm", "wins", "ties", "losses"} <= set(pair)
        assert pair["wins"] + pair["ties"] + pair["losses"] == pair["n"] == 24
        assert pair["p_holm"] >= pair["p"]
    # one pair recomputed by hand: good vs vague on semantic similarity, paired t-test is not used below 100
    records = {name: {r["id"]: r for r in read_jsonl(tmp_path / "out" / "systems" / name / "records.jsonl")}
               for name in ("good", "vague")}
    d = np.array([records["good"][k]["scores"]["semantic_similarity"] - records["vague"][k]["scores"]
                  ["semantic_similarity"] for k in records["good"]])
    pair = next(p for p in comparison["pairs"] if (p["a"], p["b"], p["metric"]) == ("good", "vague",
                                                                                     "semantic_similarity"))
    assert pair["delta"] == pytest.approx(d.mean())
    assert pair["ci95"] == pytest.approx(list(stats.ttest_1samp(d, 0).confidence_interval()))
    assert pair["test"].startswith("sign-flip") and pair["p"] < 0.001 and pair["wins"] == 24
    refusal = next(p for p in comparison["pairs"] if (p["a"], p["b"], p["metric"]) == ("good", "refuser", "refusal"))
    assert refusal["test"] == "exact McNemar" and refusal["wins"] == 12 and refusal["delta"] == pytest.approx(-0.5)
    assert "good beats vague on semantic_similarity by 0." in out and pair["p_holm"] < 0.01
    assert "good beats refuser on refusal (lower is better) by 0.50" in out
    rules = {r["rule"]: r for r in comparison["require"]}
    assert rules["good > vague on semantic_similarity"]["verdict"] == "PASS"
    assert rules["good > refuser on refusal"]["verdict"] == "PASS"
    assert rules["refuser >= good on rougeL"]["verdict"] == "FAIL" and not comparison["passed"]
    assert "FAIL" in out and "compare: FAILED (1 of 3 checks)" in out
    assert '<testsuite name="evalkit compare"' in junit.read_text() and junit.read_text().count("<failure") == 1
    assert summary.read_text().startswith("### evalkit compare: ❌ FAILED")
    report = (tmp_path / "out" / "report.html").read_text()
    assert "good beats vague" in report and "Requirements" in report and "data:image/png;base64," in report
    for name in ("good", "vague", "refuser"):  # a run directory per system, in the evalkit run format
        results = json.loads((tmp_path / "out" / "systems" / name / "results.json").read_text())
        assert results["outputs"]["matched_by"] == ("line order" if name == "refuser" else "id (id)")


def test_shared_scoring_equals_separate_runs(three_systems, tmp_path):
    """compare builds the metrics once for every system; the scores equal those of separate evalkit runs."""
    assert main(["compare", "--config", str(three_systems), "--no-progress"]) == 1
    rows = read_jsonl(tmp_path / "questions.jsonl")
    outputs = [row["output"] for row in read_jsonl(tmp_path / "vague.jsonl")]
    write_jsonl(tmp_path / "with-outputs.jsonl", [r | {"output": o} for r, o in zip(rows, outputs, strict=True)])
    assert main(["run", "qa", "--dataset", str(tmp_path / "with-outputs.jsonl"), "--output-field", "output",
                 "--metrics", "semantic_similarity,rouge,refusal", "--output-dir", str(tmp_path / "alone"),
                 "--no-progress", "--no-report"]) == 0
    alone = read_jsonl(tmp_path / "alone" / "records.jsonl")
    shared = read_jsonl(tmp_path / "out" / "systems" / "vague" / "records.jsonl")
    assert [r["scores"] for r in alone] == [r["scores"] for r in shared]


@pytest.mark.parametrize("edit, key, message", [
    ("systems:\n  - {name: a, outputs: a.jsonl, colour: red}", "systems[0].colour", "unknown key 'colour'"),
    ("systems:\n  - {name: a, model: hf:smollm2, retriever: {documents: nowhere/}}",
     "systems[0].retriever.documents", "directory not found"),
    ("systems:\n  - {name: a, outputs: a.jsonl}\n  - {name: a, outputs: a.jsonl}", "systems[1].name",
     "duplicate system name"),
    ("systems:\n  - {name: a, outputs: a.jsonl}\nmetrics: [semantic_similarity, bleu]", "metrics[1]",
     "unknown metric 'bleu'"),
    ("systems:\n  - {name: a, outputs: a.jsonl}\nrequire: ['a > b on rougeL']", "require[0]",
     "no system named 'b'"),
    ("systems:\n  - {name: a, outputs: a.jsonl}\nrequire: ['a better than b']", "require[0]", "expected 'A > B"),
    ("systems:\n  - {name: a, outputs: a.jsonl}\nmetrics: [judge]", "metrics", "add judge: {model"),
    ("systems:\n  - {name: a, outputs: a.jsonl}\nseed: many", "seed", "expected an integer"),
    ("systems:\n  - {name: a}", "systems[0]", "exactly one of 'model'"),
])
def test_config_errors_name_the_file_line_and_key_and_exit_2(tmp_path, capsys, edit, key, message):
    _questions(tmp_path, 4)
    _outputs(tmp_path, "a", ["x"] * 4)
    config = _config(tmp_path, "task: qa\ndataset: {path: questions.jsonl}\noutput_dir: out\n" + edit + "\n")
    assert main(["compare", "--config", str(config), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{config}:" in err and f"field '{key}'" in err and message in err
    assert not (tmp_path / "out").exists()  # nothing ran, nothing was written


def test_empty_question_sets_and_mismatched_outputs_exit_2_naming_the_file(tmp_path, capsys):
    _questions(tmp_path, 4)
    (tmp_path / "empty.jsonl").write_text("")
    _outputs(tmp_path, "short", ["x"] * 3, with_ids=False)
    write_jsonl(tmp_path / "missing.jsonl", [{"id": "q0", "output": "x"}, {"id": "q1", "output": "y"}])
    write_jsonl(tmp_path / "stray.jsonl", [{"id": f"q{i}", "output": "x"} for i in range(4)]
                + [{"id": "q9", "output": "z"}])
    cases = [("dataset: {path: empty.jsonl}\nsystems: [{name: a, outputs: short.jsonl}]", "empty.jsonl",
              "dataset is empty"),
             ("dataset: {path: questions.jsonl}\nsystems: [{name: a, outputs: short.jsonl}]", "short.jsonl",
              "3 outputs for 4 questions"),
             ("dataset: {path: questions.jsonl}\nsystems: [{name: a, outputs: missing.jsonl}]", "missing.jsonl",
              "no output for 2 of 4 questions (first: id 'q2')"),
             ("dataset: {path: questions.jsonl}\nsystems: [{name: a, outputs: stray.jsonl}]", "stray.jsonl:5",
              "id 'q9' is not a question of the dataset")]
    for body, name, message in cases:
        config = _config(tmp_path, f"task: qa\noutput_dir: out\n{body}\n")
        assert main(["compare", "--config", str(config), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert name in err and message in err and "Traceback" not in err


def test_rag_and_model_systems_resume_every_generation_and_judgement(tmp_path, monkeypatch, capsys):
    """Bedrock systems through the local wire server (it answers with the prompt's last twelve words): a RAG
    system records its retrieved chunks and retrieval recall; the judge scores every answer; a re-run makes no
    call at all."""
    _questions(tmp_path, 8)
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "facts.md").write_text("# Facts\n" + "\n\n".join(a for _, a in FACTS))
    (kb / "other.md").write_text("# Other\nThe cafeteria opens at noon. Parking is free on Sundays.")
    config = _config(tmp_path, """\
        task: qa
        dataset: {path: questions.jsonl, gold_field: gold, human_score_field: rating}
        systems:
          - {name: plain, model: "bedrock:plain.model-v1"}
          - {name: rag, model: "bedrock:plain.model-v1", retriever: {documents: kb/, top_k: 2, chunk_size: 200}}
        metrics: [semantic_similarity, judge]
        judge: {model: "bedrock:judge.model-v1", prompt_template: "Q $question R $reference A $answer <score>3</score>"}
        require: ["rag >= plain - 0.5 on judge"]
        output_dir: out
        """)
    monkeypatch.setenv("EVALKIT_CACHE_DIR", str(tmp_path / "cache"))
    with AWSServer() as server:
        for key, value in aws_environment(server.url).items():
            monkeypatch.setenv(key, value)
        assert main(["compare", "--config", str(config), "--no-progress"]) == 0
        first = len(server.state.calls)
        assert first == 8 * 2 + 8 * 2  # two systems' answers, and a judgement of each
        assert main(["compare", "--config", str(config), "--no-progress"]) == 0
        assert len(server.state.calls) == first  # resumed: nothing called again
    capsys.readouterr()
    comparison = json.loads((tmp_path / "out" / "comparison.json").read_text())
    recall = comparison["systems"]["rag"]["retrieval_recall"]
    assert recall["mean"] == 1.0 and recall["ci_method"] == "wilson" and recall["ci95"][1] == 1.0  # 8 of 8
    assert recall["ci95"][0] == pytest.approx(0.6756, abs=1e-4)  # Wilson's lower bound at 8/8
    assert "retrieval_recall" not in comparison["systems"]["plain"]
    assert comparison["systems"]["rag"]["judge"]["mean"] == 3.0
    assert comparison["systems"]["rag"]["judge"]["agreement"]["n"] == 8
    rag = read_jsonl(tmp_path / "out" / "systems" / "rag" / "records.jsonl")
    assert len(rag[0]["retrieved"]) == 2 and rag[0]["retrieved"][0]["document"] == "facts.md"
    assert rag[0]["retrieved"][0]["text"] in rag[0]["prompt"] and "Question:" in rag[0]["prompt"]
    assert "<score>3</score>" in rag[0]["explanations"]["judge"]
    details = comparison["system_details"]["rag"]
    assert details["kind"] == "rag" and details["retriever"]["index_reused"] is True  # built once, then reused
