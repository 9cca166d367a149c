"""Shared bits for the benchmarks: the sample data and a timer."""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path

from evalkit.jsonl import split_lines

ROOT = Path(__file__).resolve().parents[1]
NEWS = ROOT / "datasets" / "news_summaries.jsonl"


def news_records() -> list[dict]:
    return [json.loads(line) for _, line in split_lines(NEWS.read_text(encoding="utf-8")) if line.strip()]


def byo_pairs(n: int) -> list[tuple[str, str]]:
    """n (output, reference) pairs: sentences of other articles' documents against reference summaries."""
    records = news_records()
    sentences = [s.strip() + "." for r in records for s in r["document"].split(". ") if s.strip()]
    return [(sentences[(i * 7) % len(sentences)] + " " + sentences[(i * 13 + 5) % len(sentences)],
             records[i % len(records)]["summary"]) for i in range(n)]


@contextmanager
def timed(into: dict, key: str):
    start = time.perf_counter()
    yield
    into[key] = time.perf_counter() - start


def cpu_description() -> str:
    """The CPU that measured a number: name, family/model and the vector features that decide torch's speed."""
    from acr.measured import cpu_features

    cpu = cpu_features()
    return (f"{cpu['name']} (family {cpu.get('family', '?')}, model {cpu.get('model', '?')}; "
            f"{', '.join(cpu['features']) or 'no AVX2'}), {cpu['cores']} cores")
