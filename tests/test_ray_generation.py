"""evalkit run --ray: generation on a pool of Ray actors (a real local Ray instance, a real tiny transformers
model). The records and metrics equal the single-process run's; an actor killed mid-run costs nothing; without
--ray nothing imports Ray."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from evalkit.cli import main
from tests.helpers import build_tiny_causal_lm, read_jsonl, write_jsonl

ray = pytest.importorskip("ray")

GENERATION = ["--max-new-tokens", "8", "--batch-size", "2", "--no-progress", "--no-report", "--metrics", "rouge"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny"))


@pytest.fixture()
def dataset(tmp_path, news_records) -> Path:
    return write_jsonl(tmp_path / "news.jsonl", news_records[:12])


def _records(run_dir: Path) -> list[dict]:
    rows = read_jsonl(run_dir / "records.jsonl")
    for row in rows:  # how long a call took, and whether it was reused, differ by nature
        row.pop("generation", None)
    return rows


def test_ray_run_equals_the_single_process_run(local_ray, tiny, dataset, tmp_path):
    alone, pooled = tmp_path / "alone", tmp_path / "pooled"
    base = ["run", "summarization", "--model", f"hf:{tiny}", "--dataset", str(dataset), *GENERATION]
    assert main([*base, "--output-dir", str(alone)]) == 0
    assert main([*base, "--output-dir", str(pooled), "--ray", "--ray-workers", "2",
                 "--ray-cpus-per-worker", "0.5"]) == 0
    assert _records(pooled) == _records(alone)
    a, b = (json.loads((d / "results.json").read_text()) for d in (alone, pooled))
    assert a["metrics"] == b["metrics"] and a["runner"]["identity"] == b["runner"]["identity"]
    assert b["runner"]["ray"]["workers"] == 2 and "ray" not in a["runner"]
    # the run store is keyed on what ran, not on how: the single-process run resumes the Ray run's calls
    again = tmp_path / "again"
    (again).mkdir()
    (again / "calls.sqlite").write_bytes((pooled / "calls.sqlite").read_bytes())
    assert main([*base, "--output-dir", str(again)]) == 0
    resumed = json.loads((again / "results.json").read_text())["generation"]
    assert resumed["reused"] == 12 and resumed["called"] == 0


def test_an_actor_killed_mid_run_loses_and_repeats_nothing(local_ray, tiny, tmp_path):
    from evalkit.raycluster import RaySettings
    from evalkit.runners.base import Request, RunnerOptions, create_runner
    from evalkit.runners.executor import execute
    from evalkit.runners.ray_pool import RayPool
    from evalkit.runners.store import RunStore

    options = RunnerOptions(batch_size=2, max_new_tokens=6, progress=False)
    words = "river bridge school market museum".split()
    prompts = [f"the city council said the {w} was new in {words[i % 3]} year" for i, w in enumerate(words * 8)]
    prompts = [f"{p} {'the ' * (i % 20)}{i}" for i, p in enumerate(prompts)]  # 40 distinct prompts: 3 lists
    # (of 4 batches of 2 per actor: 16, 16 and 8)

    class KilledOnce(RayPool):
        calls = 0

        def call_batch(self, requests):
            self.calls += 1
            if self.calls == 2:  # the second list: one actor dies with its share in flight
                victim = self.pool.actors[0]
                pid = ray.get(victim.pid.remote())
                refs = [a.call.remote("call_batch", list(requests)[i::2]) for i, a in enumerate(self.pool.actors)]
                ray.kill(victim, no_restart=False)
                parts = ray.get(refs)  # Ray restarts the actor and runs its share again
                assert ray.get(victim.pid.remote()) != pid
                merged = [None] * len(requests)
                for i, part in enumerate(parts):
                    merged[i::2] = part
                return merged
            return super().call_batch(requests)

    pool = KilledOnce(f"hf:{tiny}", options, RaySettings(workers=2, cpus_per_worker=0.5))
    requests = [Request(id=f"r{i}", prompt=p) for i, p in enumerate(prompts)]
    with RunStore(tmp_path) as store:
        results = execute(pool, requests, store=store, progress=False)
    assert pool.calls >= 2 and all(r.ok for r in results) and [r.id for r in results] == [q.id for q in requests]
    alone = create_runner(f"hf:{tiny}", options).generate(prompts)
    assert [r.text for r in results] == alone  # nothing lost, nothing changed
    assert pool.calls == 3
    with RunStore(tmp_path) as store:  # a re-run finds every call stored, and calls nothing
        again = execute(pool, requests, store=store, progress=False)
    assert all(r.cached for r in again) and [r.text for r in again] == alone and pool.calls == 3
    pool.close()


def test_without_ray_nothing_imports_it(dataset, tmp_path):
    code = ("import sys; from evalkit.cli import main; "
            f"code = main(['run', 'summarization', '--dataset', {str(dataset)!r}, '--output-field', 'summary', "
            f"'--metrics', 'rouge', '--output-dir', {str(tmp_path / 'out')!r}, '--no-progress', '--no-report']); "
            "assert code == 0, code; assert 'ray' not in sys.modules, 'ray imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_compare_on_ray_equals_compare_without(local_ray, tiny, dataset, tmp_path):
    (tmp_path / "compare.yaml").write_text(
        "task: summarization\n"
        f"dataset: {{path: {dataset}}}\n"
        "systems:\n"
        f"  - {{name: short, model: 'hf:{tiny}', max_new_tokens: 4}}\n"
        f"  - {{name: long, model: 'hf:{tiny}', max_new_tokens: 8}}\n"
        "metrics: [rougeL]\n"
        "generation: {batch_size: 2}\n")
    args = ["compare", "--config", str(tmp_path / "compare.yaml"), "--no-progress"]
    assert main([*args, "--output-dir", str(tmp_path / "alone")]) == 0
    assert main([*args, "--output-dir", str(tmp_path / "pooled"), "--ray", "--ray-cpus-per-worker", "0.5"]) == 0
    for name in ("short", "long"):
        assert _records(tmp_path / "pooled" / "systems" / name) == _records(tmp_path / "alone" / "systems" / name)
    a, b = (json.loads((tmp_path / d / "comparison.json").read_text()) for d in ("alone", "pooled"))
    assert a["systems"] == b["systems"] and a["pairs"] == b["pairs"]
