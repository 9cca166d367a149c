"""Three systems on one question set: ``evalkit compare`` vs three separate ``evalkit run`` commands.

Both sides score the same precomputed answers (so generation, the same for both, is out of the timing) with
semantic_similarity, bertscore, rougeL, meteor and refusal, each as a fresh CLI process, the way a user runs them.
compare loads every model once, embeds the references once and computes BERTScore idf once for all systems;
the separate runs pay all of it per system. The per-record scores of the two must be identical.

The questions are examples/domain-qa's, repeated with new ids up to --questions; the three systems answer
with the reference's first sentence, with the gold page's first paragraph, and with a refusal every third
question.

    .venv/bin/python benchmarks/bench_compare.py [--questions 180]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import ROOT, cpu_description  # noqa: E402
from evalkit.jsonl import split_lines  # noqa: E402

EXAMPLE = ROOT / "examples" / "domain-qa"
METRICS = ["semantic_similarity", "bertscore", "rougeL", "meteor", "refusal"]
EVALKIT = str(Path(sys.executable).with_name("evalkit"))


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _first_paragraph(page: Path) -> str:
    paragraphs = [p.strip() for p in page.read_text(encoding="utf-8").split("\n\n")]
    return next(p for p in paragraphs if p and not p.startswith("#"))


def build(workdir: Path, n: int) -> dict[str, Path]:
    """questions.jsonl, a precomputed output file per system, the compare config, and per-system run datasets."""
    base = [json.loads(line) for _, line in split_lines((EXAMPLE / "questions.jsonl").read_text(encoding="utf-8"))
            if line.strip()]
    rows = [{**base[i % len(base)], "id": f"q{i}"} for i in range(n)]
    _write_jsonl(workdir / "questions.jsonl", rows)
    answers = {
        "terse": [r["answer"].split("<OR>")[0].split(". ")[0] for r in rows],
        "pasted": [_first_paragraph(EXAMPLE / "kb" / r["gold"]) for r in rows],
        "shy": ["I'm sorry, I don't have that information." if i % 3 == 0 else r["answer"].split("<OR>")[0]
                for i, r in enumerate(rows)],
    }
    files = {}
    for name, outputs in answers.items():
        pairs = list(zip(rows, outputs, strict=True))
        _write_jsonl(workdir / f"{name}.jsonl", [{"id": r["id"], "output": o} for r, o in pairs])
        files[name] = workdir / f"{name}-dataset.jsonl"
        _write_jsonl(files[name], [{**r, "output": o} for r, o in pairs])
    systems = "\n".join(f"  - {{name: {name}, outputs: {name}.jsonl}}" for name in answers)
    (workdir / "compare.yaml").write_text(
        "task: qa\n"
        "dataset: {path: questions.jsonl, input_field: question, target_field: answer, target_delimiter: '<OR>'}\n"
        f"systems:\n{systems}\nmetrics: [{', '.join(METRICS)}]\noutput_dir: compared\n", encoding="utf-8")
    return files


def _run(argv: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if proc.returncode not in (0, 1):
        sys.exit(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def _scores(run_dir: Path) -> list[dict]:
    return [json.loads(line)["scores"] for _, line in split_lines((run_dir / "records.jsonl").read_text("utf-8"))]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--questions", type=int, default=180)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        datasets = build(work, args.questions)
        # Warm the file cache and the RAG/embedding caches for both sides alike (not timed).
        _run([EVALKIT, "compare", "--config", str(work / "compare.yaml"), "--no-progress",
              "--output-dir", str(work / "warm")])
        compare_s = _run([EVALKIT, "compare", "--config", str(work / "compare.yaml"), "--no-progress"])
        separate_s = 0.0
        for name, dataset in datasets.items():
            separate_s += _run([EVALKIT, "run", "qa", "--dataset", str(dataset), "--input-field", "question",
                                "--target-field", "answer", "--target-delimiter", "<OR>", "--output-field",
                                "output", "--metrics", ",".join(METRICS), "--output-dir", str(work / name),
                                "--no-progress", "--no-report"])
        for name in datasets:
            assert _scores(work / name) == _scores(work / "compared" / "systems" / name), name
    print(f"CPU: {cpu_description()}")
    print(f"{len(datasets)} systems x {args.questions} questions, metrics {', '.join(METRICS)}")
    print(f"  evalkit compare (one process):      {compare_s:7.1f} s (incl. comparison.json and report.html)")
    print(f"  3 x evalkit run (one per system):  {separate_s:7.1f} s (no reports)")
    print(f"  ratio separate / compare: {separate_s / compare_s:.2f}x; per-record scores identical")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
