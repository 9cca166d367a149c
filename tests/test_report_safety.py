"""Untrusted text in every kind of report: a run, a comparison, an ACR audit and a multi-directory report carry
script tags, event handlers, javascript: links, </textarea></script> breakouts, SVG and template syntax in
questions, answers, references, ids, retrieved context and ACR targets. Rendered in headless Chromium, none runs
and every one shows as literal text. Each report is also screenshotted and checked non-blank, with its key
sections present."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from evalkit.cli import main
from tests.browser import dump_dom, screenshot
from tests.helpers import write_jsonl

PAYLOADS = [
    "<script>document.title='pwned'</script>",
    "<img src=x onerror=\"document.title='pwned'\">",
    "<a href=\"javascript:document.title='pwned'\">click me</a>",
    "</textarea></script><script>document.title='pwned'</script>",
    "<svg onload=\"document.title='pwned'\"></svg>",
    "{{ 7*7 }} {% if true %}jinja{% endif %} ${document.title}",
]


# an element with an event handler or a javascript: link, or any <textarea> (the report has none)
INJECTED = re.compile(r"<(?:img|svg|a|textarea)\b[^>]*(?:\bon\w+=|javascript:)|<textarea", re.I)


def _assert_inert(dom: str) -> None:
    title = re.search(r"<title>(.*?)</title>", dom, re.S).group(1)
    assert "pwned" not in title
    assert not INJECTED.search(dom)  # no element the payloads would have created
    assert dom.count("<script") == 1  # the report's own script, nothing injected
    assert "&lt;script&gt;document.title='pwned'&lt;/script&gt;" in dom
    assert "&lt;/textarea&gt;&lt;/script&gt;" in dom and "{{ 7*7 }}" in dom and "{% if true %}" in dom


def _assert_real_page(png: Path) -> None:
    from PIL import Image

    image = Image.open(png).convert("L")
    low, high = image.getextrema()
    assert png.stat().st_size > 20_000 and high - low > 100  # text and figures, not a blank page


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict[str, Path]:
    """A run, a comparison and an ACR audit, all carrying the payloads."""
    tmp = tmp_path_factory.mktemp("hostile")
    rows = [{"id": f"q{i} {p}" if i == 2 else f"q{i}", "question": f"Question {i}: {p}",
             "answer": f"Reference {i}: {p}", "output": f"Answer {i}: {p}"}
            for i, p in enumerate(PAYLOADS)]
    dataset = write_jsonl(tmp / "questions.jsonl", rows)
    assert main(["run", "qa", "--dataset", str(dataset), "--output-field", "output", "--metrics", "rouge",
                 "--output-dir", str(tmp / "run"), "--no-progress", "--threshold", "rougeL>=0.99"]) == 1
    write_jsonl(tmp / "other.jsonl", [{"id": r["id"], "output": f"Other: {r['answer']}"} for r in rows])
    write_jsonl(tmp / "same.jsonl", [{"id": r["id"], "output": r["output"]} for r in rows])
    (tmp / "compare.yaml").write_text(
        "task: qa\ndataset: {path: questions.jsonl}\nsystems:\n  - {name: same, outputs: same.jsonl}\n"
        "  - {name: other, outputs: other.jsonl}\nmetrics: [rougeL]\nrequire: ['same > other on rougeL']\n"
        "output_dir: compare\n")
    assert main(["compare", "--config", str(tmp / "compare.yaml"), "--no-progress"]) in (0, 1)
    acr = tmp / "acr"
    acr.mkdir()
    from acr.analysis import summarize_results

    targets = [{"target": f"Target {i}: {p}", "prompt_text": f"prompt {p}", "target_tokens": 20 + i,
                "prompt_tokens": 4, "acr": 5.0 + i, "memorized": i % 2 == 0, "success": True, "censored": False,
                "verified_generation": True, "retokenizes": True, "budget": {"steps_per_length": 30},
                "threshold": 1.0} for i, p in enumerate(PAYLOADS)]
    summary = {**summarize_results(targets), "model": "hf:tiny", "targets": {"path": "quotes <b>.json",
                                                                              "n_targets": len(targets)}}
    (acr / "summary.json").write_text(json.dumps(summary))
    write_jsonl(acr / "results.jsonl", targets)
    return {"run": tmp / "run", "compare": tmp / "compare", "acr": acr}


@pytest.mark.browser
@pytest.mark.parametrize("kind, sections", [
    ("run", ["CI gate", "What was evaluated", "Metrics", "Score distributions", "Samples"]),
    ("compare", ["Requirements", "Verdicts", "Systems", "Pairwise", "Win rates", "Questions"]),
    ("acr", ["Adversarial compression ratio", "Targets", "Distribution of the found ACR"]),
])
def test_each_report_kind_is_inert_and_a_real_page(hostile, tmp_path, kind, sections):
    out = tmp_path / f"{kind}.html"
    assert main(["report", str(hostile[kind]), "-o", str(out)]) == 0
    dom = dump_dom(out)
    if kind != "acr":
        _assert_inert(dom)
    else:  # ACR text: targets and prompts
        assert "pwned" not in re.search(r"<title>(.*?)</title>", dom, re.S).group(1)
        assert not INJECTED.search(dom) and dom.count("<script") == 1
        assert "Target 0: &lt;script&gt;document.title='pwned'&lt;/script&gt;" in dom and "{{ 7*7 }}" in dom
    for title in sections:
        assert title in dom, title
    _assert_real_page(screenshot(out, tmp_path / f"{kind}.png", size="1280,1600"))


@pytest.mark.browser
def test_the_multi_directory_report_is_inert_and_shows_every_run(hostile, tmp_path):
    out = tmp_path / "all.html"
    assert main(["report", str(hostile["run"]), str(hostile["compare"]), str(hostile["acr"]), "-o", str(out)]) == 0
    dom = dump_dom(out)
    _assert_inert(dom)
    for label in ("run", "compare/same", "compare/other", "ACR: acr"):
        assert label in dom, label
    assert "run vs compare/same" in dom and "compare/same vs compare/other" in dom  # the pairwise table
    _assert_real_page(screenshot(out, tmp_path / "all.png", size="1280,1600"))
