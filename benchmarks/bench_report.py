"""A 5,000-question comparison of 3 systems as one HTML report: file size, Chromium render time, filter time.

Three `evalkit run qa` directories (precomputed answers of different quality to the same 5,000 questions, scored
with ROUGE and METEOR) are reported together with `evalkit report A B C -o report.html`. Then headless Chromium
(Debian's) renders the file to a screenshot, timed end to end (browser start included), and applies a filter
through the page's own script (its time is read back from the page, measured with performance.now()).

Targets (issue 12): the file under 15 MB; a screenshot in under 3 s; a filter applied in under 200 ms.

    .venv/bin/python benchmarks/bench_report.py [--questions 5000]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import cpu_description, news_records  # noqa: E402

EVALKIT = str(Path(sys.executable).with_name("evalkit"))
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def build_runs(work: Path, n: int) -> list[Path]:
    """Three runs over the same n questions: references from the news summaries, answers that copy them,
    cut them short, or answer with another record's summary."""
    records = news_records()
    rows = []
    for i in range(n):
        r = records[i % len(records)]
        rows.append({"id": f"q{i}", "question": f"Question {i}: what happened? " + r["document"][:160],
                     "answer": r["summary"]})
    runs = []
    answers = {"copy": lambda i, r: r["answer"], "short": lambda i, r: " ".join(r["answer"].split()[:6]),
               "other": lambda i, r: rows[(i * 7 + 3) % n]["answer"]}
    for name, answer in answers.items():
        dataset = work / f"{name}.jsonl"
        dataset.write_text("".join(json.dumps({**r, "output": answer(i, r)}) + "\n" for i, r in enumerate(rows)))
        out = work / name
        subprocess.run([EVALKIT, "run", "qa", "--dataset", str(dataset), "--output-field", "output", "--metrics",
                        "rouge,meteor", "--output-dir", str(out), "--no-progress", "--no-report"], check=True,
                       capture_output=True)
        runs.append(out)
    return runs


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        sys.exit("headless Chromium is needed: apt-get install -y chromium")
    return path


def browser(url: str, *extra: str) -> tuple[float, str]:
    with tempfile.TemporaryDirectory() as profile:
        start = time.perf_counter()
        proc = subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", *extra, url], capture_output=True,
                              text=True, timeout=300, check=True)
        return time.perf_counter() - start, proc.stdout


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--questions", type=int, default=5000)
    parser.add_argument("--keep", type=Path, help="build in this directory and keep it (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        runs = build_runs(work, args.questions)
        report = work / "report.html"
        start = time.perf_counter()
        subprocess.run([EVALKIT, "report", *map(str, runs), "-o", str(report)], check=True, capture_output=True)
        build_s = time.perf_counter() - start
        size_mb = report.stat().st_size / 1e6
        url = report.resolve().as_uri()
        browser("about:blank", "--screenshot=" + str(work / "warm.png"))  # browser binaries into the page cache
        shot_s, _ = browser(url, f"--screenshot={work / 'shot.png'}", "--window-size=1280,1600")
        filters = {}
        for term in ("q4999", "river", "the"):  # one record, some, nearly all
            _, dom = browser(url + f"#filter={term}", "--dump-dom", "--virtual-time-budget=10000")
            match = re.search(r'id="samples-count"[^>]*data-ms="([\d.]+)"', dom) or \
                re.search(r'data-ms="([\d.]+)"[^>]*id="samples-count"', dom)
            shown = re.search(r"Showing (\d+) of (\d+) records", dom)
            filters[term] = (float(match.group(1)) if match else None, shown.group(0) if shown else "?")
    print(f"CPU: {cpu_description()}")
    print(f"3 systems x {args.questions} questions (rouge1, rouge2, rougeL, meteor): evalkit report built it in "
          f"{build_s:.1f} s")
    print(f"  file size:                  {size_mb:6.2f} MB  (target < 15 MB)")
    print(f"  Chromium to a screenshot:   {shot_s:6.2f} s   (target < 3 s; browser start included)")
    for term, (ms, shown) in filters.items():
        text = f"{ms:6.1f} ms" if ms is not None else "   n/a   "
        print(f"  filter '{term}' in the page: {text}  (target < 200 ms; {shown})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
