"""The same generation job single-process and on 1 and 2 Ray workers: throughput ratio and Ray's overhead.

SmolLM2 (hf:smollm2) summarizes N news articles (greedy, --max-new-tokens tokens) through the executor and a
run store, as `evalkit run` does. Single process: one runner with torch's default threads. Ray: a local
instance (dashboard off), N actors of one model each with 1 / N of the CPUs; generation is timed from the first
call to the last stored result, model loading and Ray start-up separately. The outputs must be identical.

    .venv/bin/python benchmarks/bench_ray.py [--records 32] [--max-new-tokens 32]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks.common import cpu_description, news_records  # noqa: E402


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
    args = parser.parse_args()
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
        import ray

        from evalkit.runners.ray_pool import RayPool, RaySettings

        start = time.perf_counter()
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, object_store_memory=256 * 1024 * 1024,
                 log_to_driver=False)
        ray_start = time.perf_counter() - start
        for workers in (1, 2):
            start = time.perf_counter()
            pool = RayPool("hf:smollm2", options, RaySettings(workers=workers,
                                                               cpus_per_worker=os.cpu_count() / workers))
            load = time.perf_counter() - start
            seconds, outputs = _job(pool, requests, os.path.join(tmp, f"ray{workers}"))
            assert outputs == reference, f"{workers} Ray workers changed the outputs"
            rows[f"Ray, {workers} worker{'s' if workers > 1 else ''}"] = (load, seconds)
            pool.close()
        ray.shutdown()
    single = rows["single process"][1]
    print(f"CPU: {cpu_description()}")
    print(f"{args.records} summaries with SmolLM2, {args.max_new_tokens} new tokens, batch 4; outputs identical")
    print(f"Ray start-up (local instance): {ray_start:.1f} s")
    for name, (load, seconds) in rows.items():
        print(f"  {name:16s} load {load:5.1f} s   generation {seconds:6.1f} s   {args.records / seconds:5.2f} "
              f"records/s   {seconds / args.records * 1000:6.0f} ms/record   vs single process {single / seconds:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
