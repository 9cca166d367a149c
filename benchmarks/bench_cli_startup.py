"""How long `evalkit --help` takes (target: under 0.5 s). Median of several runs.

    .venv/bin/python benchmarks/bench_cli_startup.py
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

RUNS = 7


def main() -> int:
    evalkit = os.path.join(os.path.dirname(sys.executable), "evalkit")
    command = [evalkit, "--help"] if os.path.exists(evalkit) else [sys.executable, "-m", "evalkit", "--help"]
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    python_only = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True, capture_output=True)
        python_only.append(time.perf_counter() - start)
    median = statistics.median(times)
    print(f"`{' '.join(os.path.basename(c) for c in command)}`: median {median:.3f} s over {RUNS} runs "
          f"(bare python start-up {statistics.median(python_only):.3f} s); target < 0.5 s: "
          f"{'met' if median < 0.5 else 'MISSED'}")
    return 0 if median < 0.5 else 1


if __name__ == "__main__":
    sys.exit(main())
