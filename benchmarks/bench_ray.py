"""Where the time of a run goes, single-process and on Ray: the per-record cost of each stage.

1. Generation: SmolLM2 (hf:smollm2) summarizes --records news articles (greedy, --max-new-tokens tokens)
   through the executor and a run store, as `evalkit run` does. Single process: one runner with torch's
   default threads. Ray: a local instance (dashboard off), 1 and 2 actors of one model each with 1 / N of
   the CPUs. Generation is timed from the first call to the last stored result; model loading and Ray
   start-up separately. The outputs must be identical.
2. Scoring: --pairs output/reference pairs with ROUGE, METEOR and BERTScore (MiniLM), chunk by chunk as a
   run scores them: single process vs Ray (lexical metrics as tasks, BERTScore as a pool of 2 actors; the
   workers' metric loading is part of the Ray time). Lexical scores must be identical; BERTScore's largest
   difference is printed (workers run 1 torch thread each, the single process all cores: the last float32
   bits may differ).
3. Store writes on the driver (the one serial stage): a stored call (one fsynced transaction each) and a
   stored score (one transaction per chunk of 256 records).

    .venv/bin/python benchmarks/bench_ray.py [--records 32] [--max-new-tokens 32] [--pairs 1000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks.common import byo_pairs, cpu_description, news_records  # noqa: E402


def _job(runner, requests, directory):
    from evalkit.runners.executor import execute
    from evalkit.runners.store import RunStore

    start = time.perf_counter()
    with RunStore(directory) as store:
        results = execute(runner, requests, store=store, progress=False)
    return time.perf_counter() - start, [r.text for r in results]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--skip-generation", action="store_true")
    args = parser.parse_args()
    print(f"CPU: {cpu_description()}")
    import ray

    start = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, object_store_memory=256 * 1024 * 1024,
             log_to_driver=False)
    print(f"Ray start-up (local instance): {time.perf_counter() - start:.1f} s")
    if not args.skip_generation:
        _generation(args)
    _scoring(args.pairs)
    _store_writes(args.pairs)
    ray.shutdown()
    return 0


def _generation(args) -> None:
    from evalkit.runners.base import Request, RunnerOptions, create_runner

    records = news_records()
    prompts = [f"Summarize the following text in one sentence: {records[i % len(records)]['document']}"
               for i in range(args.records)]
    requests = [Request(id=str(i), prompt=p) for i, p in enumerate(prompts)]
    options = RunnerOptions(batch_size=4, max_new_tokens=args.max_new_tokens, progress=False)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        runner = create_runner("hf:smollm2", options)
        load = time.perf_counter() - start
        seconds, reference = _job(runner, requests, os.path.join(tmp, "single"))
        rows["single process"] = (load, seconds)
        del runner
        from evalkit.raycluster import RaySettings
        from evalkit.runners.ray_pool import RayPool

        for workers in (1, 2):
            start = time.perf_counter()
            pool = RayPool("hf:smollm2", options, RaySettings(workers=workers,
                                                               cpus_per_worker=os.cpu_count() / workers))
            load = time.perf_counter() - start
            seconds, outputs = _job(pool, requests, os.path.join(tmp, f"ray{workers}"))
            assert outputs == reference, f"{workers} Ray workers changed the outputs"
            rows[f"Ray, {workers} worker{'s' if workers > 1 else ''}"] = (load, seconds)
            pool.close()
    single = rows["single process"][1]
    print(f"\n1. generation: {args.records} summaries with SmolLM2, {args.max_new_tokens} new tokens, batch 4; "
          "outputs identical")
    for name, (load, seconds) in rows.items():
        print(f"  {name:16s} load {load:5.1f} s   generation {seconds:6.1f} s   {args.records / seconds:5.2f} "
              f"records/s   {seconds / args.records * 1000:6.0f} ms/record   vs single process {single / seconds:.2f}x")


def _items(n: int):
    from evalkit.scoring.base import Item

    return [Item(output, (reference,)) for output, reference in byo_pairs(n)]


def _scoring(n: int) -> None:
    from evalkit.raycluster import RaySettings
    from evalkit.scoring.base import DatasetView, build_metrics
    from evalkit.scoring.chunks import score_metric
    from evalkit.scoring.on_ray import RayScoring

    items = _items(n)
    ids = [str(i) for i in range(n)]
    families = ["rouge", "meteor", "bertscore"]
    options = {"bertscore": {"device": "cpu"}}
    view = DatasetView([i.references for i in items], [None] * n)
    print(f"\n2. scoring: {n} output/reference pairs, chunks of 256")
    on_ray = RayScoring(RaySettings(workers=2, cpus_per_worker=os.cpu_count() / 2), options, view)
    for family in families:
        start = time.perf_counter()
        (metric,) = build_metrics([family], options)
        metric.prepare(view)
        load = time.perf_counter() - start
        start = time.perf_counter()
        alone = score_metric(metric, items, ids)
        single = time.perf_counter() - start
        start = time.perf_counter()
        pooled = score_metric(metric, items, ids, elsewhere=on_ray)
        seconds = time.perf_counter() - start
        warm = ""
        if not metric.loads_model:
            assert pooled == alone, f"{family}: scores on Ray differ"
            start = time.perf_counter()  # the workers keep the metric they built: a second run shows the rest
            assert score_metric(metric, items, ids, elsewhere=on_ray) == alone
            warm = f"; warm workers {time.perf_counter() - start:5.2f} s"
        gap = max(abs(a.value - b.value) for c in alone for a, b in zip(alone[c], pooled[c], strict=True))
        how = "actor pool (2)" if metric.loads_model else "tasks"
        print(f"  {family:10s} load {load:5.2f} s   single process {single:6.2f} s ({single / n * 1000:6.2f} ms/record)"
              f"   Ray {how} {seconds:6.2f} s ({seconds / n * 1000:6.2f} ms/record, workers' loading included"
              f"{warm})   vs single process {single / seconds:.2f}x   max |difference| {gap:.1e}")


def _store_writes(n: int) -> None:
    from evalkit.runners.base import Request, Result
    from evalkit.runners.store import RunStore, call_key

    print(f"\n3. store writes on the driver ({n} records, SQLite WAL, synchronous=FULL)")
    with tempfile.TemporaryDirectory() as tmp, RunStore(tmp) as store:
        requests = [Request(id=str(i), prompt=f"prompt {i} " * 20) for i in range(n)]
        start = time.perf_counter()
        for r in requests:
            store.put(call_key("bench", {"max_new_tokens": 32}, r), "bench", r,
                      Result(id=r.id, text="an output of about thirty words " * 5, latency_s=0.5))
        calls = time.perf_counter() - start
        rows = [(f"k{i}", str(i), {"rouge1": {"value": 0.5, "explanation": None}}) for i in range(n)]
        start = time.perf_counter()
        for i in range(0, n, 256):
            store.put_scores("rouge", rows[i:i + 256])
        scores = time.perf_counter() - start
    print(f"  a stored call  {calls / n * 1000:6.3f} ms/record (one durable transaction each: "
          f"{n / calls:,.0f} records/s)")
    print(f"  a stored score {scores / n * 1000:6.3f} ms/record (one transaction per 256 records: "
          f"{n / scores:,.0f} records/s)")


if __name__ == "__main__":
    raise SystemExit(main())
