"""examples/domain-qa, reduced: its fine-tuning script (two LoRA steps) and its compare config (six questions,
short answers and judgements), end to end on the real SmolLM2, the shipped MiniLM and the committed knowledge
base. The full example is `python finetune.py && evalkit compare --config config.yaml` (README)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from evalkit.cli import main
from tests.helpers import read_jsonl

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "domain-qa"


def test_the_example_data_is_what_its_readme_promises():
    from evalkit.data.dataset import DatasetSpec, load_dataset
    from evalkit.rag.documents import load_documents

    pages = load_documents(EXAMPLE / "kb")
    assert len(pages) >= 20
    questions = load_dataset(DatasetSpec(path=str(EXAMPLE / "questions.jsonl"), input_field="question",
                                         target_field="answer", target_delimiter="<OR>", gold_field="gold"))
    assert len(questions.samples) >= 40
    names = {p.id for p in pages}
    for sample in questions.samples:  # every gold passage is a page of the knowledge base
        assert sample.gold and set(sample.gold) <= names, sample.id


@pytest.mark.slow
def test_finetune_then_compare_baseline_finetuned_and_rag(tmp_path):
    adapter = tmp_path / "lora"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(EXAMPLE / "finetune.py"), "--max-steps", "2", "--epochs", "1",
                           "--max-length", "128", "--output", str(adapter)], capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == "smollm2"
    assert json.loads((adapter / "training.json").read_text())["steps"] == 2

    config = yaml.safe_load((EXAMPLE / "config.yaml").read_text())
    config["dataset"]["path"] = str(EXAMPLE / "questions.jsonl")
    systems = {s["name"]: s for s in config["systems"]}
    assert set(systems) == {"baseline", "finetuned", "rag"} and systems["finetuned"]["model"] == "hf:checkpoints/lora"
    systems["finetuned"]["model"] = f"hf:{adapter}"
    systems["rag"]["retriever"]["documents"] = str(EXAMPLE / "kb")
    config.update(max_samples=6, metrics=["semantic_similarity", "rougeL", "refusal", "judge"],
                  generation={"max_new_tokens": 16, "batch_size": 6}, output_dir=str(tmp_path / "out"))
    config["judge"]["max_new_tokens"] = 24
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))

    code = main(["compare", "--config", str(path), "--no-progress"])
    assert code in (0, 1)  # the rules' verdicts depend on six questions; both are a finished comparison
    comparison = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert set(comparison["systems"]) == {"baseline", "finetuned", "rag"}
    for name, summaries in comparison["systems"].items():
        assert summaries["semantic_similarity"]["n"] == 6, name
        assert summaries["judge"]["n"] == 6  # every judgement is a score or a counted error
    assert comparison["systems"]["rag"]["retrieval_recall"]["n"] == 6
    assert {r["rule"] for r in comparison["require"]} == set(config["require"])
    finetuned = json.loads((tmp_path / "out" / "systems" / "finetuned" / "results.json").read_text())
    assert finetuned["runner"]["adapter_path"] == str(adapter.resolve())
    baseline = json.loads((tmp_path / "out" / "systems" / "baseline" / "results.json").read_text())
    assert baseline["runner"]["adapter_path"] is None
    rag = read_jsonl(tmp_path / "out" / "systems" / "rag" / "records.jsonl")
    assert all(len(r["retrieved"]) == 3 and r["retrieved"][0]["text"] in r["prompt"] for r in rag)
    assert (tmp_path / "out" / "report.html").stat().st_size > 0
