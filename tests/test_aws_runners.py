"""Bedrock and SageMaker runners with real boto3 clients against a local server that speaks their wire
protocols (tests/aws_server.py), with throttling, 5xx, timeouts, slow answers and dropped connections.

No mock of boto3: the clients sign real requests (fake keys and session token) and send them over HTTP
to 127.0.0.1, reached through ``AWS_ENDPOINT_URL_BEDROCK_RUNTIME`` / ``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME``.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evalkit.runners.base import Request, RunnerOptions, create_runner
from evalkit.runners.executor import ExecutionStats, execute
from tests.aws_server import ACCESS_KEY, SECRET_KEY, SESSION_TOKEN, AWSServer, answer, aws_environment
from tests.helpers import write_jsonl

ROOT = Path(__file__).resolve().parents[1]
CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
TEMPLATE = "Summarize the following text in one sentence: $model_input"
FAST_RETRIES = "retry_base_delay_s: 0.01\nretry_max_delay_s: 0.05\n"


@pytest.fixture(scope="module")
def server():
    with AWSServer(slow_s=1.5) as running:
        yield running


@pytest.fixture()
def aws_env(server, monkeypatch):
    for key, value in aws_environment(server.url).items():
        monkeypatch.setenv(key, value)
    return {**os.environ}


def _cli(env: dict[str, str], *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**env, "HF_HUB_OFFLINE": "1"}
    env.pop("EVALKIT_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "evalkit", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "records.jsonl").read_text().split("\n") if line]


def _dataset(tmp_path: Path, news_records: list[dict], documents: list[str]) -> Path:
    rows = [{"id": f"r{i:02d}", "document": d, "summary": news_records[i % len(news_records)]["summary"]}
            for i, d in enumerate(documents)]
    return write_jsonl(tmp_path / "d.jsonl", rows)


FAULTY = ["plain one two three four", "[[throttle:5]] throttled five times", "[[unavailable:2]] two 503s",
          "[[timeout:2]] two model timeouts", "[[slow:1]] one answer past the timeout",
          "[[drop:1]] one dropped connection", "[[modelerror]] the model fails", "[[validation]] a bad request",
          "plain five six seven eight", "plain nine ten eleven", "[[throttle:2]] [[drop:1]] mixed faults",
          "plain twelve thirteen"]


def _faulty_run(tmp_path: Path, news_records: list[dict], tag: str = "") -> tuple[Path, Path, list[str]]:
    """The FAULTY documents (each with ``tag``: the server counts faults per prompt, so a tag gives fresh
    ones), their dataset and a Bedrock model config with fast retries."""
    config = tmp_path / "model.yaml"
    config.write_text(f"model: bedrock:{CLAUDE}\nmax_new_tokens: 32\n{FAST_RETRIES}")
    documents = [f"{d}{tag}" for d in FAULTY]
    return _dataset(tmp_path, news_records, documents), config, documents


def test_every_record_completes_through_faults_and_fatal_errors_are_not_retried(server, aws_env, tmp_path,
                                                                                news_records):
    data, config, _ = _faulty_run(tmp_path, news_records)
    out = tmp_path / "run"
    before = len(server.state.calls)
    proc = _cli(aws_env, "run", "summarization", "--model-config", config, "--dataset", data, "--output-dir", out,
                "--timeout", "1", "--concurrency", "4", "--no-progress", "--no-report")
    assert proc.returncode == 0, proc.stderr
    calls = server.state.calls[before:]
    records = _records(out)
    assert [r["id"] for r in records] == [f"r{i:02d}" for i in range(len(FAULTY))]  # none lost, none duplicated
    for record, document in zip(records, FAULTY, strict=True):
        prompt = TEMPLATE.replace("$model_input", document)
        answered = [c for c in calls if c.prompt == prompt and c.status == 200]
        if "modelerror" in document or "validation" in document:
            assert record["model_output"] is None and record["generation"]["error_kind"] == "fatal"
            assert record["generation"]["attempts"] == 1 and len([c for c in calls if c.prompt == prompt]) == 1
            continue
        assert record["error"] is None and record["model_output"] == answer(prompt)
        # answered once (a [[slow]] attempt is answered too, after the client gave up on it and retried)
        assert len(answered) == (2 if "slow" in document else 1)
    by_id = {r["id"]: r["generation"] for r in records}
    assert by_id["r01"]["attempts"] == 6 and by_id["r02"]["attempts"] == 3 and by_id["r03"]["attempts"] == 3
    assert by_id["r04"]["attempts"] == 2 and by_id["r05"]["attempts"] == 2 and by_id["r10"]["attempts"] == 3
    assert records[6]["error"].startswith("ModelErrorException (HTTP 424)")
    assert records[7]["error"].startswith("ValidationException (HTTP 400)")
    results = json.loads((out / "results.json").read_text())
    assert results["generation"] == {"reused": 0, "called": 12, "failed": 2,
                                     "retries": sum(g["attempts"] - 1 for g in by_id.values()),
                                     "identity_changed": None}
    identity = results["runner"]["identity"]
    assert identity == {"runner": "bedrock", "api": "converse", "model_id": CLAUDE, "region": "us-east-1",
                        "endpoint": server.url}
    assert "generation: 0 reused from the run store, 12 generated (2 failed" in proc.stdout

    # The same command again: every finished call is reused; only the two failed records are called again.
    before = len(server.state.calls)
    again = _cli(aws_env, "run", "summarization", "--model-config", config, "--dataset", data, "--output-dir", out,
                 "--timeout", "1", "--no-progress", "--no-report")
    assert again.returncode == 0, again.stderr
    assert sorted(c.prompt for c in server.state.calls[before:]) == sorted(
        TEMPLATE.replace("$model_input", d) for d in FAULTY if "modelerror" in d or "validation" in d)
    assert "generation: 10 reused from the run store, 2 generated" in again.stdout
    assert [r["model_output"] for r in _records(out)] == [r["model_output"] for r in records]
    # --no-cache calls every record again (and keeps storing them)
    before = len(server.state.calls)
    fresh = _cli(aws_env, "run", "summarization", "--model-config", config, "--dataset", data, "--output-dir", out,
                 "--timeout", "1", "--no-progress", "--no-report", "--no-cache", "--max-new-tokens", "32")
    assert fresh.returncode == 0, fresh.stderr
    assert len({c.prompt for c in server.state.calls[before:]}) == len(FAULTY)


def test_on_ray_the_same_calls_run_under_one_rate_limit(server, aws_env, tmp_path, news_records):
    """--ray with a remote model: calls run on two Ray actors (a local Ray the command starts), every attempt
    still starts in the driver's executor: the same retries, the same records, one --max-rps for all."""
    pytest.importorskip("ray")
    data, config, documents = _faulty_run(tmp_path, news_records, " (on ray)")
    out = tmp_path / "run"
    before = len(server.state.calls)
    proc = _cli(aws_env, "run", "summarization", "--model-config", config, "--dataset", data, "--output-dir", out,
                "--timeout", "1", "--concurrency", "4", "--max-rps", "20", "--no-progress", "--no-report",
                "--ray", "--ray-workers", "2")
    assert proc.returncode == 0, proc.stderr
    calls = server.state.calls[before:]
    records = _records(out)
    assert [r["id"] for r in records] == [f"r{i:02d}" for i in range(len(FAULTY))]
    by_id = {r["id"]: r["generation"] for r in records}
    assert by_id["r01"]["attempts"] == 6 and by_id["r02"]["attempts"] == 3 and by_id["r03"]["attempts"] == 3
    assert by_id["r06"]["attempts"] == 1 and records[6]["generation"]["error_kind"] == "fatal"
    assert records[7]["error"].startswith("ValidationException (HTTP 400)")  # classified inside the actor
    for record, document in zip(records, documents, strict=True):
        if record["error"] is None:
            assert record["model_output"] == answer(TEMPLATE.replace("$model_input", document))
    assert len(calls) == sum(g["attempts"] for g in by_id.values())  # every request sent is counted
    # One limit for all: any 5 consecutive arrivals span at least 4 slots of 1/20 s (0.2 s); a limit per actor
    # would let two actors' calls interleave at twice the rate (0.1 s). Checked over windows rather than
    # single gaps, which the hop from the driver through an actor to the server jitters on a loaded machine.
    times = sorted(c.time for c in calls)
    assert len(times) >= 5
    assert min(b - a for a, b in zip(times, times[4:], strict=False)) >= 4 / 20 - 0.05
    results = json.loads((out / "results.json").read_text())
    assert results["runner"]["ray"]["workers"] == 2 and results["generation"]["called"] == 12
    assert results["runner"]["identity"]["model_id"] == CLAUDE
    # the run store is keyed on what ran, not where: without Ray the same command reuses every finished call
    before = len(server.state.calls)
    again = _cli(aws_env, "run", "summarization", "--model-config", config, "--dataset", data, "--output-dir", out,
                 "--timeout", "1", "--no-progress", "--no-report")
    assert again.returncode == 0, again.stderr
    assert len(server.state.calls[before:]) == 2 and "10 reused from the run store" in again.stdout


def test_a_killed_run_resumes_with_zero_repeated_calls(server, aws_env, tmp_path, news_records):
    documents = [f"record number {i} with some words to summarize" for i in range(24)]
    data = _dataset(tmp_path, news_records, documents)
    out = tmp_path / "run"
    args = ["run", "summarization", "--model", f"bedrock:{CLAUDE}", "--dataset", str(data), "--output-dir", str(out),
            "--concurrency", "2", "--no-progress", "--no-report"]
    server.state.latency_s = 0.25
    try:
        env = {**aws_env, "HF_HUB_OFFLINE": "1"}
        process = subprocess.Popen([sys.executable, "-m", "evalkit", *args], cwd=ROOT, env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        store = out / "calls.sqlite"
        deadline = time.monotonic() + 120
        finished: set[str] = set()
        while time.monotonic() < deadline and len(finished) < 6:
            time.sleep(0.1)
            if store.exists():
                try:
                    with sqlite3.connect(store) as db:
                        finished = {json.loads(p)["prompt"] for (p,) in db.execute("SELECT payload FROM calls")}
                except sqlite3.Error:
                    continue
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        time.sleep(1.0)  # the server logs a call when it answers: let the killed run's in-flight calls land
    finally:
        server.state.latency_s = 0.0
    with sqlite3.connect(store) as db:
        finished = {json.loads(p)["prompt"] for (p,) in db.execute("SELECT payload FROM calls WHERE ok = 1")}
    assert 6 <= len(finished) < len(documents)  # killed mid-run
    before = len(server.state.calls)
    proc = _cli(aws_env, *args)
    assert proc.returncode == 0, proc.stderr
    again = [c.prompt for c in server.state.calls[before:]]
    assert not set(again) & finished  # zero repeated calls for finished records
    assert len(again) == len(documents) - len(finished)
    records = _records(out)
    assert len(records) == len(documents) and all(r["model_output"] for r in records)
    assert sum(r["generation"]["cached"] for r in records) == len(finished)


def test_credentials_reach_no_file_and_no_log_line(server, aws_env, tmp_path, news_records):
    data = _dataset(tmp_path, news_records, ["plain words here", "[[throttle:2]] retried twice", "[[validation]] x"])
    out = tmp_path / "run"
    before = len(server.state.calls)
    proc = _cli(aws_env, "-vv", "run", "summarization", "--model", f"bedrock:{CLAUDE}", "--dataset", data,
                "--output-dir", out, "--max-attempts", "4")
    assert proc.returncode == 0, proc.stderr
    assert "retrying in" in proc.stderr  # verbose indeed: the retries are logged
    sent = server.state.calls[before]
    assert sent.headers.get("X-Amz-Security-Token") == SESSION_TOKEN and ACCESS_KEY in sent.headers["Authorization"]
    for secret in (SECRET_KEY, SESSION_TOKEN):
        assert secret not in proc.stdout and secret not in proc.stderr
        for file in out.rglob("*"):
            if file.is_file():
                assert secret.encode() not in file.read_bytes(), file


def test_every_backend_and_request_format(server, aws_env):
    prompts = ["first prompt with a few words", "[[throttle:1]] second prompt"]
    options = RunnerOptions(max_new_tokens=16, timeout_s=5, retry_base_delay_s=0.01, retry_max_delay_s=0.02)
    specs = {
        "bedrock-invoke:meta.llama3-8b-instruct-v1:0": "max_gen_len",
        "bedrock-invoke:us.anthropic.claude-3-5-haiku-20241022-v1:0": "anthropic_version",
        "bedrock-invoke:amazon.titan-text-express-v1": "inputText",
        "bedrock-invoke:mistral.mistral-7b-instruct-v0:2": "prompt",
        "bedrock-invoke:cohere.command-r-v1:0": "message",
        "bedrock-invoke:cohere.command-text-v14": "prompt",
        "sagemaker:jumpstart-llm": "inputs",
    }
    for spec, key in specs.items():
        before = len(server.state.calls)
        runner = create_runner(spec, options)
        results = execute(runner, [Request(id=str(i), prompt=p) for i, p in enumerate(prompts)], progress=False)
        bodies = [c.body for c in server.state.calls[before:] if c.status == 200]
        assert all(key in body for body in bodies), (spec, bodies)
        expected = [answer(b.get("prompt") or b.get("inputText") or b.get("inputs") or b.get("message")
                           or b["messages"][0]["content"][0]["text"]) for b in bodies]
        assert sorted(r.text for r in results) == sorted(expected), spec
        assert [r.attempts for r in results] == [1, 2]
    sagemaker = [c for c in server.state.calls if c.route == "invocations" and c.status == 200][-1].body
    assert sagemaker["parameters"] == {"max_new_tokens": 16, "return_full_text": False, "do_sample": False}
    # a user template and output path, as fmeval's runners take them, and the SageMaker headers
    custom = RunnerOptions(max_new_tokens=16, backend={
        "content_template": '{"text_inputs": $prompt, "max_length": 16}', "output_path": "generation",
        "target_variant": "blue", "custom_attributes": "accept_eula=true"})
    before = len(server.state.calls)
    result = execute(create_runner("sagemaker:custom-endpoint", custom), [Request(id="a", prompt='say "hi"')],
                     progress=False)[0]
    call = server.state.calls[before]
    assert call.body == {"text_inputs": 'say "hi"', "max_length": 16} and result.text == answer('say "hi"')
    assert call.headers["X-Amzn-SageMaker-Target-Variant"] == "blue"
    assert call.headers["X-Amzn-SageMaker-Custom-Attributes"] == "accept_eula=true"
    arn = "arn:aws:bedrock:us-west-2:123456789012:imported-model/abc"
    imported = create_runner(f"bedrock-invoke:{arn}", RunnerOptions(backend={
        "content_template": '{"prompt": $prompt, "max_gen_len": 16}', "output_path": "generation"}))
    before = len(server.state.calls)
    result = execute(imported, [Request(id="i", prompt="an imported model")], progress=False)[0]
    assert server.state.calls[before].model == arn and result.text == answer("an imported model")
    assert imported.identity()["region"] == "us-west-2" and imported.identity()["format"] == "content_template"
    converse = execute(create_runner("bedrock:" + CLAUDE, RunnerOptions(system_prompt="Be brief.", top_p=0.9,
                                                                         stop_sequences=("###",))),
                       [Request(id="c", prompt="[[filtered]] hello")], progress=False)[0]
    body = server.state.calls[-1].body
    assert body["system"] == [{"text": "Be brief."}] and body["inferenceConfig"] == {
        "maxTokens": 64, "temperature": 0.0, "topP": 0.9, "stopSequences": ["###"]}
    assert converse.error_kind == "filtered" and converse.finish_reason == "content_filtered"


def test_the_rate_limit_spaces_every_request(server, aws_env):
    options = RunnerOptions(max_new_tokens=8, concurrency=8, max_rps=20.0)
    before = len(server.state.calls)
    started = time.monotonic()
    execute(create_runner("bedrock:" + CLAUDE, options), [Request(id=str(i), prompt=f"rate {i}") for i in range(12)],
            progress=False)
    elapsed = time.monotonic() - started
    times = sorted(c.time for c in server.state.calls[before:])
    assert elapsed >= 11 / 20 - 0.01
    assert min(b - a for a, b in zip(times, times[1:], strict=False)) >= 1 / 20 - 0.02


def test_fail_fast_stops_and_keeps_what_finished(server, aws_env, tmp_path, news_records):
    documents = ["plain a b c", "plain d e f", "[[validation]] broken", *[f"plain later {i}" for i in range(10)]]
    data = _dataset(tmp_path, news_records, documents)
    out = tmp_path / "run"
    before = len(server.state.calls)
    proc = _cli(aws_env, "run", "summarization", "--model", f"bedrock:{CLAUDE}", "--dataset", data, "--output-dir",
                out, "--concurrency", "1", "--fail-fast", "--no-progress", "--no-report")
    assert proc.returncode == 3 and "--fail-fast: record 'r02' failed (fatal)" in proc.stderr
    assert len(server.state.calls[before:]) == 3  # nothing after the failure
    results = json.loads((out / "results.json").read_text())
    assert results["outcome"]["status"] == "stopped_fail_fast"
    with sqlite3.connect(out / "calls.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM calls WHERE ok = 1").fetchone()[0] == 2


def test_bad_aws_settings_are_refused_before_any_call(server, aws_env, tmp_path, news_records):
    data = _dataset(tmp_path, news_records, ["plain a"])
    config = tmp_path / "bad.yaml"
    config.write_text("model: sagemaker:endpoint-a\nmax_new_tokens: 8\ncontent_templat: '{}'\n")
    before = len(server.state.calls)
    cases = [
        (["--model-config", config], f"{config}:3: unknown key"),
        (["--model", "sagemaker:bad_name!"], "not a SageMaker endpoint name"),
        (["--model", "bedrock-invoke:acme.unknown-model"], "cannot tell the request format"),
        (["--model", "sagemaker:ok", "--model-config", _yaml(tmp_path, "family: llama\n")],
         "sagemaker: unknown model-config key(s) family"),
        (["--model", "sagemaker:ok", "--model-config", _yaml(tmp_path, "content_template: '{\"a\": 1}'\n")],
         "content_template must be a JSON string containing $prompt"),
    ]
    for extra, message in cases:
        proc = _cli(aws_env, "run", "summarization", "--dataset", data, "--output-dir", tmp_path / "o", *extra)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    no_region = {k: v for k, v in aws_env.items() if k not in ("AWS_REGION", "AWS_DEFAULT_REGION")}
    proc = _cli(no_region, "run", "summarization", "--dataset", data, "--model", f"bedrock:{CLAUDE}")
    assert proc.returncode == 2 and "no AWS region" in proc.stderr
    no_keys = {k: v for k, v in aws_env.items() if not k.startswith(("AWS_ACCESS", "AWS_SECRET", "AWS_SESSION"))}
    proc = _cli(no_keys, "run", "summarization", "--dataset", data, "--model", f"bedrock:{CLAUDE}")
    assert proc.returncode == 2 and "no AWS credentials" in proc.stderr
    assert len(server.state.calls) == before  # nothing was called


def _yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / f"c{abs(hash(text))}.yaml"
    path.write_text(text)
    return path


def test_one_process_per_output_directory(server, aws_env, tmp_path, news_records):
    from evalkit.runners.store import run_lock

    data = _dataset(tmp_path, news_records, ["plain a"])
    out = tmp_path / "run"
    with run_lock(out):
        proc = _cli(aws_env, "run", "summarization", "--dataset", data, "--model", f"bedrock:{CLAUDE}",
                    "--output-dir", out)
    assert proc.returncode == 2 and "is in use by another evalkit process" in proc.stderr
    assert _cli(aws_env, "run", "summarization", "--dataset", data, "--model", f"bedrock:{CLAUDE}", "--output-dir",
                out, "--no-report").returncode == 0  # released


def test_statistics_of_a_run(server, aws_env):
    stats = ExecutionStats()
    runner = create_runner("bedrock:" + CLAUDE, RunnerOptions(max_new_tokens=8, retry_base_delay_s=0.0))
    execute(runner, [Request(id="1", prompt="[[throttle:3]] s")], progress=False, stats=stats)
    assert stats.to_dict() == {"reused": 0, "called": 1, "failed": 0, "retries": 3}


def test_records_that_send_the_same_request_share_one_call(server, aws_env, tmp_path):
    from evalkit.runners.store import RunStore

    runner = create_runner("bedrock:" + CLAUDE, RunnerOptions(max_new_tokens=8))
    requests = [Request(id=f"r{i}", prompt="the very same prompt" if i % 2 else f"prompt {i}") for i in range(6)]
    before = len(server.state.calls)
    stats = ExecutionStats()
    with RunStore(tmp_path) as store:
        results = execute(runner, requests, store=store, progress=False, stats=stats)
        assert len(server.state.calls) - before == 4  # three distinct prompts and one shared
        assert [r.id for r in results] == [r.id for r in requests]
        assert len({r.text for r, q in zip(results, requests, strict=True) if q.prompt == "the very same prompt"}) == 1
        assert (stats.called, stats.reused) == (4, 2)
        again = execute(runner, requests, store=store, progress=False)
    assert len(server.state.calls) - before == 4 and [r.id for r in again] == [r.id for r in requests]
    assert all(r.cached for r in again)
