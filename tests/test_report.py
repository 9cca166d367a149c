"""report.html: self-contained, escaped, and its table controls work in a real browser."""

from __future__ import annotations

import re
import time
from html.parser import HTMLParser

import pytest

from evalkit.reports.html import render_report, write_report
from tests.browser import dump_dom, screenshot

PAYLOADS = [
    "<script>document.title='pwned'</script>",
    '<img src=x onerror="document.title=\'pwned\'">',
    "</script><script>document.title='pwned'</script>",
    "{{ 7*7 }} {% raw %}",
]
METRICS = ["rouge1", "rouge2", "rougeL", "meteor", "bertscore"]


def make_run(n: int = 6):
    records = []
    for i in range(n):
        payload = PAYLOADS[i % len(PAYLOADS)]
        records.append({
            "id": f"r{i}" if i else f"r0 {payload}",
            "model_input": f"Input {i} {payload} Zürich — 東京",
            "prompt": f"Summarize: input {i}",
            "model_output": None if i == 2 else f"Output {i} marker{i} {payload}",
            "target_output": f"Reference {i}" if i % 2 else [f"Reference {i}", "Second ref"],
            "scores": {} if i == 2 else {m: round(0.1 * i + 0.01 * k, 4) for k, m in enumerate(METRICS)},
            "error": "RuntimeError: CUDA out of memory <b>boom</b>" if i == 2 else None,
        })
    metrics = {m: {"mean": 0.3 + 0.01 * k, "std": 0.1, "n": n - 1, "ci95": [0.25 + 0.01 * k, 0.35 + 0.01 * k]}
               for k, m in enumerate(METRICS)}
    results = {"task": "summarization", "model": "hf:smollm2", "created_at": "2026-11-21T10:00:00Z",
               "dataset": {"path": "datasets/x<y>.jsonl", "sha256": "ab" * 32, "n_records": n},
               "prompt_template": "Summarize: $model_input <script>alert(1)</script>", "seed": 0,
               "metrics": metrics, "counts": {"records": n, "scored": n - 1, "errors": 1, "skipped_invalid": 0},
               "timings": {"generation_s": 4.2, "total_s": 9.9}, "versions": {"evalkit": "0.1.0"}}
    return results, records


@pytest.fixture()
def report(tmp_path):
    results, records = make_run()
    path = tmp_path / "report.html"
    write_report(path, results, records)
    return path


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.urls += [v for k, v in attrs if k in {"src", "href", "action", "srcset", "poster"} and v]


def test_self_contained_no_external_resources(report):
    html = report.read_text(encoding="utf-8")
    parser = _Links()
    parser.feed(html)
    assert parser.urls and all(u.startswith(("data:", "#")) for u in parser.urls), parser.urls
    assert "iframe" not in parser.tags and "object" not in parser.tags
    assert not re.search(r"(?i)url\(\s*['\"]?(https?:)?//", html) and "@import" not in html


@pytest.mark.browser
def test_untrusted_text_is_escaped_and_never_runs(report):
    dom = dump_dom(report)
    title = re.search(r"<title>(.*?)</title>", dom, re.S).group(1)
    assert "pwned" not in title
    assert "<img src=\"x\" onerror" not in dom and "<script>document.title" not in dom
    assert "&lt;script&gt;document.title='pwned'&lt;/script&gt;" in dom  # shown as text
    assert "Output 3 marker3 {{ 7*7 }} {% raw %}" in dom  # template syntax in data stays literal text
    assert "Zürich — 東京" in dom
    assert "&lt;b&gt;boom&lt;/b&gt;" in dom  # the error message, escaped


@pytest.mark.browser
def test_summary_and_samples_content(report):
    dom = dump_dom(report)
    for name in METRICS:
        assert name in dom
    assert "0.3000" in dom and "0.2500" in dom and "0.3500" in dom  # rouge1 mean and CI bounds
    assert "6 records" in dom or "Showing 6 of 6 records" in dom
    assert "CUDA out of memory" in dom and "hf:smollm2" in dom


def _visible_ids(dom: str) -> list[str]:
    body = dom.split('id="samples-table"', 1)[1].split("<tbody", 1)[1]
    ids = []
    for attrs, cell in re.findall(r'<tr([^>]*)>\s*<td class="c-id"[^>]*>(.*?)</td>', body, re.S):
        if "hidden" not in attrs:
            ids.append(re.sub(r"<[^>]+>", " ", cell).split()[0])
    return ids


@pytest.mark.browser
def test_filter_and_sort_run_in_the_browser(report):
    # worst first: the record that errored, then by the first metric (rouge1), lowest first
    assert _visible_ids(dump_dom(report)) == ["r2", "r0", "r1", "r3", "r4", "r5"]
    assert _visible_ids(dump_dom(report, "#sort=id&dir=asc")) == ["r0", "r1", "r2", "r3", "r4", "r5"]
    assert _visible_ids(dump_dom(report, "#sort=rouge1&dir=desc")) == ["r5", "r4", "r3", "r1", "r0", "r2"]
    filtered = dump_dom(report, "#filter=MARKER3")
    assert _visible_ids(filtered) == ["r3"] and "Showing 1 of 6 records" in filtered
    assert _visible_ids(dump_dom(report, "#errors=1")) == ["r2"]


def test_missing_optional_fields_still_render():
    html = render_report({"metrics": {"rouge1": {"mean": None, "n": 0}}}, [{"id": "1", "scores": {}}])
    assert "rouge1" in html and "<html" in html


def test_large_run_renders_fast_and_small():
    results, _ = make_run()
    records = [{"id": str(i), "model_input": "word " * 400, "model_output": "out " * 40,
                "target_output": "ref " * 30, "scores": {m: (i % 97) / 97 for m in METRICS}, "error": None}
               for i in range(500)]
    start = time.perf_counter()
    html = render_report(results, records)
    assert time.perf_counter() - start < 5
    assert len(html.encode()) < 3_000_000


@pytest.mark.browser
def test_screenshot_is_a_real_page(report, tmp_path):
    png = screenshot(report, tmp_path / "shot.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def test_a_histogram_drawn_ahead_is_used_only_for_exactly_its_values(monkeypatch):
    """The run draws finished columns' histograms while it waits on a metric process; the report takes such a
    drawing only when the column holds the very same values, and draws anything else itself."""
    import evalkit.reports.html as report

    monkeypatch.setattr(report, "_PRERENDERED", {})  # this test's drawings only, and none left behind
    results, records = make_run(8)
    rouge1 = [r["scores"].get("rouge1") for r in records]
    report.prerender_histograms({"rouge1": rouge1, "meteor": [r["scores"].get("meteor") for r in records]})
    drawn_ahead = dict(report._PRERENDERED)
    assert len(drawn_ahead) == 2
    records[3]["scores"]["meteor"] = 0.99  # meteor changed after it was drawn: drawn again

    calls: list[str] = []
    real = report._histogram_png
    monkeypatch.setattr(report, "_histogram_png", lambda name, values: calls.append(name) or real(name, values))
    hist = {h["name"]: h["png"] for h in report._histograms(["rouge1", "meteor", "bertscore"], records)}
    assert calls == ["meteor", "bertscore"]
    finite = tuple(v for v in rouge1 if v is not None)
    assert hist["rouge1"] == drawn_ahead[("rouge1", finite)] == real("rouge1", finite)  # the same picture
    assert hist["meteor"] not in drawn_ahead.values()
    assert ("rouge1", finite) not in report._PRERENDERED  # used once, then gone
