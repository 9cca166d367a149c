"""Scale-out on Ray beyond generation (a real local Ray instance, shared by the session): the actor pool every
Ray path uses survives a killed actor, and scoring on Ray -- model metrics on actor pools, lexical metrics as
tasks -- gives exactly the single-process scores, kept in the run store chunk by chunk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evalkit.cli import main
from tests.helpers import SlowEcho, read_jsonl, scored_outputs, write_jsonl

pytest.importorskip("ray")


def test_a_killed_actor_costs_only_its_in_flight_items(local_ray):
    from evalkit.raycluster import ActorPool, RaySettings

    pool = ActorPool(SlowEcho, (0.2,), RaySettings(workers=2, cpus_per_worker=0.5))
    before = pool.pids()
    seen: dict[int, int] = {}
    pids = set()
    for n, (index, (value, pid)) in enumerate(pool.map_unordered("work", list(range(12)))):
        assert index not in seen  # nothing twice
        seen[index] = value
        pids.add(pid)
        if n == 1:  # one actor dies with items queued on it: Ray restarts it and runs them again
            local_ray.kill(pool.actors[0], no_restart=False)
    assert seen == {i: 2 * i for i in range(12)}  # nothing lost
    after = pool.pids()
    assert after[0] != before[0] and after[1] == before[1] and after[0] in pids
    pool.close()
    assert pool.actors == []


def _records(run_dir: Path) -> list[dict]:
    return read_jsonl(run_dir / "records.jsonl")


def test_scores_on_ray_equal_the_single_process_scores(local_ray, news_records, tmp_path, monkeypatch):
    """300 records (two chunks): ROUGE and METEOR as tasks, BERTScore and semantic similarity as actor pools;
    every record and every mean equal bit for bit to the single-process run's with the same torch threads as a
    worker (with other thread counts PyTorch's CPU kernels sum in another order: benchmarks/bench_ray.py
    prints how far model scores then move, 7.5e-8 at most here)."""
    import torch

    from evalkit.scoring import chunks

    monkeypatch.setattr(chunks, "SCORE_CHUNK", 256)  # two chunks of these 300 records, wherever they run
    data = write_jsonl(tmp_path / "outputs.jsonl", scored_outputs(news_records, 300))
    base = ["run", "summarization", "--dataset", str(data), "--output-field", "output", "--no-progress",
            "--no-report", "--metrics", "rouge,meteor,bertscore,semantic_similarity"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what a worker with --ray-cpus-per-worker 1 runs
    try:
        assert main([*base, "--output-dir", str(tmp_path / "alone")]) == 0
    finally:
        torch.set_num_threads(threads)
    assert main([*base, "--output-dir", str(tmp_path / "ray"), "--ray", "--ray-cpus-per-worker", "1"]) == 0
    alone, pooled = _records(tmp_path / "alone"), _records(tmp_path / "ray")
    assert len(alone) == 300 and pooled == alone
    columns = {"rouge1", "rouge2", "rougeL", "meteor", "bertscore", "bertscore_precision", "bertscore_recall",
               "semantic_similarity"}
    assert all(set(r["scores"]) == columns for r in alone)
    a, b = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("alone", "ray"))
    assert a["metrics"] == b["metrics"]
    assert b["scoring_store"] == {m: {"reused": 0, "scored": 300} for m in
                                  ("rouge", "meteor", "bertscore", "semantic_similarity")}
    # every chunk's scores are in the run store: the same run again scores nothing, and says so
    assert main([*base, "--output-dir", str(tmp_path / "ray"), "--ray", "--ray-cpus-per-worker", "1"]) == 0
    again = json.loads((tmp_path / "ray" / "results.json").read_text())
    assert again["scoring_store"]["bertscore"] == {"reused": 300, "scored": 0}
    assert _records(tmp_path / "ray") == alone and again["metrics"] == a["metrics"]


def test_a_pool_the_cluster_cannot_hold_is_refused_before_anything_loads(local_ray, news_records, tmp_path, capsys):
    data = write_jsonl(tmp_path / "outputs.jsonl", scored_outputs(news_records, 4))
    code = main(["run", "summarization", "--dataset", str(data), "--output-field", "output", "--metrics", "rouge",
                 "--output-dir", str(tmp_path / "out"), "--ray", "--ray-workers", "3", "--ray-cpus-per-worker", "1",
                 "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "3 Ray workers x 1 CPUs (--ray-cpus-per-worker) need 3 CPUs; the Ray cluster has 2" in err
    assert not (tmp_path / "out").exists()
