"""fmeval 1.2.3 interop, offline, with the real fmeval, Ray and models built here.

* an evalkit runner, as an fmeval ``ModelRunner``, drives ``SummarizationAccuracy.evaluate_sample`` and a small
  ``evaluate()`` on Ray; fmeval's ROUGE and METEOR equal evalkit's on the same outputs, and so does BERTScore,
  since offline both use the packaged all-MiniLM-L6-v2 (layer 6);
* an fmeval ``BedrockModelRunner`` (fmeval's own, talking to the local Bedrock wire server) drives ``evalkit run``.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from evalkit.runners.base import RunnerOptions, create_runner
from tests.aws_server import AWSServer, answer, aws_environment
from tests.helpers import build_tiny_causal_lm, read_jsonl, write_jsonl

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
fmeval_runners = pytest.importorskip("evalkit.runners.fmeval")  # the module imports without fmeval ...
import fmeval  # noqa: E402,F401  ... but these tests need it: `make install` installs it (no skip there)

from evalkit.runners.fmeval import (  # noqa: E402
    EvalkitModelRunner,
    FmevalRunner,
    ray_runtime_env,
    use_offline_metrics,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny") / "model")


def _evalkit_scores(tmp_path: Path, pairs: list[tuple[str, str]]) -> list[dict]:
    """evalkit's own per-record scores for (output, reference) pairs (bring-your-own outputs)."""
    import evalkit

    data = write_jsonl(tmp_path / "byo.jsonl", [{"id": str(i), "document": "-", "summary": ref, "output": out}
                                                for i, (out, ref) in enumerate(pairs)])
    run = evalkit.evaluate_summarization(str(data), output_field="output", output_dir=str(tmp_path / "byo"),
                                         progress=False, write_report=False)
    return [r["scores"] for r in run.records]


def test_an_evalkit_runner_is_an_fmeval_model_runner_and_pickles(tiny_model):
    from fmeval.model_runners.model_runner import ModelRunner

    runner = EvalkitModelRunner(f"hf:{tiny_model}", RunnerOptions(max_new_tokens=6, progress=False))
    assert isinstance(runner, ModelRunner)
    output, log_probability = runner.predict("the city council said")
    assert isinstance(output, str) and output and log_probability is None
    copy = pickle.loads(pickle.dumps(runner))  # as fmeval ships it to a Ray actor: spec and options only
    assert copy._runner is None and copy.predict("the city council said") == (output, None)
    assert len(pickle.dumps(runner)) < 2000  # no model weights travel


def test_fmeval_evaluate_sample_matches_evalkit_on_an_evalkit_runners_output(tiny_model, tmp_path, news_records):
    use_offline_metrics()
    from fmeval.eval_algorithms.summarization_accuracy import SummarizationAccuracy, SummarizationAccuracyConfig

    runner = EvalkitModelRunner.from_runner(create_runner(f"hf:{tiny_model}", RunnerOptions(max_new_tokens=12,
                                                                                            progress=False)))
    records = news_records[:4]
    outputs = [runner.predict(f"Summarize: {r['document']}")[0] for r in records]
    outputs[0] = records[0]["document"].split(". ")[0] + "."  # one output with real overlap, so scores are not all 0
    ours = _evalkit_scores(tmp_path, [(o, r["summary"]) for o, r in zip(outputs, records, strict=True)])
    for rouge in ("rouge1", "rouge2", "rougeL"):
        algo = SummarizationAccuracy(SummarizationAccuracyConfig(rouge_type=rouge))
        for output, record, mine in zip(outputs, records, ours, strict=True):
            theirs = {s.name: s.value for s in algo.evaluate_sample(record["summary"], output)}
            assert theirs["rouge"] == pytest.approx(mine[rouge], abs=1e-6)
            assert theirs["meteor"] == pytest.approx(mine["meteor"], abs=1e-6)
            assert theirs["bertscore"] == pytest.approx(mine["bertscore"], abs=1e-5)
    assert ours[0]["rouge2"] > 0  # the comparison is not of zeros only


def test_fmeval_evaluate_on_ray_with_an_evalkit_runner(tiny_model, tmp_path, news_records, monkeypatch):
    import ray

    records = [{"document": r["document"], "summary": r["summary"]} for r in news_records[:5]]
    data = write_jsonl(tmp_path / "fmeval.jsonl", records)
    monkeypatch.setenv("EVAL_RESULTS_PATH", str(tmp_path / "fmeval-results"))
    env = {**ray_runtime_env(), "env_vars": {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                                             "SAGEMAKER_SUPPRESS_V2_WARNING": "1", "TOKENIZERS_PARALLELISM": "false"}}
    ray.init(num_cpus=2, object_store_memory=200 * 1024 * 1024, runtime_env=env, include_dashboard=False,
             log_to_driver=False, ignore_reinit_error=True)
    from ray.data.context import DataContext, ShuffleStrategy

    # fmeval averages each score with a Ray Data aggregate. Ray's default shuffle starts aggregator actors for
    # it, new worker processes that each import fmeval (33-40 s per score on 2 cores); the sort-based shuffle
    # runs it as tasks on the workers already up (0.2 s). Same numbers: five rows, one partition.
    context = DataContext.get_current()
    strategy, context.shuffle_strategy = context.shuffle_strategy, ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    try:
        use_offline_metrics()
        from fmeval.constants import MIME_TYPE_JSONLINES
        from fmeval.data_loaders.data_config import DataConfig
        from fmeval.eval_algorithms.summarization_accuracy import SummarizationAccuracy

        config = DataConfig(dataset_name="news", dataset_uri=str(data), dataset_mime_type=MIME_TYPE_JSONLINES,
                            model_input_location="document", target_output_location="summary")
        runner = EvalkitModelRunner(f"hf:{tiny_model}", RunnerOptions(max_new_tokens=8, progress=False))
        outputs = SummarizationAccuracy().evaluate(model=runner, dataset_config=config, num_records=5,
                                                   prompt_template="Summarize: $model_input", save=True)
    finally:
        context.shuffle_strategy = strategy
        ray.shutdown()
    assert outputs[0].dataset_scores and {s.name for s in outputs[0].dataset_scores} == {"meteor", "rouge",
                                                                                           "bertscore"}
    saved = [row for path in (tmp_path / "fmeval-results").rglob("*.jsonl") for row in read_jsonl(path)]
    assert len(saved) == 5
    direct = create_runner(f"hf:{tiny_model}", RunnerOptions(max_new_tokens=8, progress=False))
    pairs = []
    for row in saved:
        assert row["model_output"] == direct.generate([f"Summarize: {row['model_input']}"])[0]
        pairs.append((row["model_output"], row["target_output"]))
    ours = _evalkit_scores(tmp_path, pairs)
    for row, mine in zip(saved, ours, strict=True):
        theirs = {s["name"]: s["value"] for s in row["scores"]}
        assert theirs["rouge"] == pytest.approx(mine["rouge2"], abs=1e-6)  # fmeval's default ROUGE is rouge2
        assert theirs["meteor"] == pytest.approx(mine["meteor"], abs=1e-6)
        assert theirs["bertscore"] == pytest.approx(mine["bertscore"], abs=1e-5)


def test_an_fmeval_model_runner_drives_evalkit_run(tmp_path, news_records, monkeypatch):
    from fmeval.model_runners.bedrock_model_runner import BedrockModelRunner

    import evalkit

    with AWSServer() as server:
        for key, value in aws_environment(server.url).items():
            monkeypatch.setenv(key, value)
        theirs = BedrockModelRunner(model_id="meta.llama3-8b-instruct-v1:0",
                                    content_template='{"prompt": $prompt, "max_gen_len": 32}', output="generation")
        data = write_jsonl(tmp_path / "d.jsonl", news_records[:3])
        runner = FmevalRunner(theirs, name="llama3-via-fmeval")
        run = evalkit.evaluate_summarization(str(data), model=runner, output_dir=str(tmp_path / "run"),
                                             progress=False, write_report=False, metrics=("rouge", "meteor"))
        calls = len(server.state.calls)
        again = evalkit.evaluate_summarization(str(data), model=runner, output_dir=str(tmp_path / "run"),
                                               progress=False, write_report=False, metrics=("rouge", "meteor"))
    assert [r["model_output"] for r in run.records] == [answer(r["prompt"]) for r in run.records]
    assert run.results["model"] == "fmeval:llama3-via-fmeval"
    assert run.results["runner"]["identity"]["class"].endswith("BedrockModelRunner")
    assert calls == 3 and again.results["generation"]["reused"] == 3  # the run store works for wrapped runners
