"""Remote runners: how much ``--concurrency`` buys against a model behind an API, side by side in one run.

A local server that speaks the Bedrock Runtime wire protocol (tests/aws_server.py) answers every Converse
call after a fixed latency (default 200 ms); a real boto3 client reaches it through
``AWS_ENDPOINT_URL_BEDROCK_RUNTIME``. The same ``evalkit run summarization`` (100 records by default) runs
with ``--concurrency 1`` and ``--concurrency 8`` into fresh output directories; the benchmark prints the
generation time of each, their ratio, and checks that both runs wrote identical records.

    python benchmarks/bench_remote.py [--records 100] [--latency 0.2] [--concurrency 8]

Exit status 0 when the ratio is at least 6x and the records are identical.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import news_records  # noqa: E402
from tests.aws_server import AWSServer, aws_environment  # noqa: E402

MODEL = "bedrock:anthropic.claude-3-haiku-20240307-v1:0"


def _comparable(record: dict) -> dict:
    """A record without what may differ between two equal runs (timing, the store hit flag)."""
    generation = {k: v for k, v in (record.get("generation") or {}).items() if k not in ("latency_s", "cached")}
    return {**record, "generation": generation}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100)
    parser.add_argument("--latency", type=float, default=0.2, help="seconds the server takes per call")
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args(argv)

    from evalkit.api import evaluate_summarization
    from tests.helpers import write_jsonl

    news = news_records()
    rows = [{"id": f"n{i:03d}", "document": news[i % len(news)]["document"] + f" (copy {i})",
             "summary": news[i % len(news)]["summary"]} for i in range(args.records)]
    with AWSServer(latency_s=args.latency) as server, tempfile.TemporaryDirectory() as tmp:
        os.environ.update(aws_environment(server.url))
        data = write_jsonl(Path(tmp) / "data.jsonl", rows)
        runs = {}
        for concurrency in (1, args.concurrency):
            started = time.perf_counter()
            result = evaluate_summarization(str(data), MODEL, output_dir=f"{tmp}/c{concurrency}", progress=False,
                                            write_report=False, concurrency=concurrency)
            runs[concurrency] = {"wall": time.perf_counter() - started,
                                 "generation": result.results["timings"]["generation_s"],
                                 "records": [_comparable(r) for r in result.records],
                                 "calls": result.results["generation"]["called"]}
        one, many = runs[1], runs[args.concurrency]
    ratio = one["generation"] / many["generation"]
    identical = json.dumps(one["records"], sort_keys=True) == json.dumps(many["records"], sort_keys=True)
    print(f"{args.records} records, server latency {args.latency * 1000:.0f} ms per call, bedrock Converse via boto3")
    print(f"--concurrency 1: generation {one['generation']:.2f} s ({one['calls']} calls), "
          f"whole run {one['wall']:.2f} s")
    print(f"--concurrency {args.concurrency}: generation {many['generation']:.2f} s ({many['calls']} calls), "
          f"whole run {many['wall']:.2f} s")
    print(f"speed-up of generation: {ratio:.2f}x (target >= 6x); records identical: {identical}")
    return 0 if ratio >= 6 and identical else 1


if __name__ == "__main__":
    sys.exit(main())
