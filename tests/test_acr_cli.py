"""``evalkit acr run`` / ``evalkit acr compare`` through the real CLI, on a tiny model trained here.

The model (tests/acr_models.py) memorizes three quotes behind a 2-token prompt; it is saved with
save_pretrained and passed as ``hf:<dir>``, exactly as a user would. An untrained copy of the same
architecture stands in for an "unlearned" model in the compare test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from markupsafe import escape

from acr.gcg import RECHECKS
from evalkit.cli import main
from tests.acr_models import QUOTES, build_tokenizer, random_strings, train
from tests.helpers import jsonl_lines, read_jsonl

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = "sun <script>alert('x')</script> moon"
# Small and fast: a memorized quote is found at 2 tokens; everything else stops at a 4-token cap.
KNOBS = ["--seed", "0", "--initial-length", "2", "--steps", "12", "--search-width", "32", "--topk", "32",
         "--max-prompt-tokens", "4", "--device", "cpu", "--no-progress"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
       "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MPLBACKEND": "Agg"}
ENV.pop("EVALKIT_DEBUG", None)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models(tmp_path_factory, one_thread):
    """(trained dir, untrained dir, targets .json path, targets)."""
    from transformers import LlamaForCausalLM

    root = tmp_path_factory.mktemp("acr_models")
    tokenizer = build_tokenizer()
    trained = train(tokenizer)
    trained.save_pretrained(root / "trained")
    tokenizer.save_pretrained(root / "trained")
    torch.manual_seed(1)
    untrained = LlamaForCausalLM(trained.config).eval()
    untrained.save_pretrained(root / "untrained")
    tokenizer.save_pretrained(root / "untrained")
    targets = [QUOTES["hamlet"], QUOTES["caesar"], random_strings(tokenizer, 1, 6)[0], SCRIPT]
    path = root / "targets.json"
    path.write_text(json.dumps(targets), encoding="utf-8")
    return root / "trained", root / "untrained", path, targets


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evalkit", *map(str, args)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=300)


def _rows(directory: Path) -> list[dict]:
    return read_jsonl(directory / "results.jsonl")


def _stable(rows: list[dict]) -> list[dict]:
    """Rows without their timings (total and per length), which are all that may differ between runs."""
    return [{**{k: v for k, v in r.items() if k != "wall_seconds"},
             "lengths_tried": [{k: v for k, v in e.items() if k != "seconds"} for e in r["lengths_tried"]]}
            for r in rows]


@pytest.fixture(scope="module")
def first_run(models, tmp_path_factory):
    trained, _, targets_path, _ = models
    out = tmp_path_factory.mktemp("acr_run") / "run"
    proc = _cli("acr", "run", "--model", f"hf:{trained}", "--targets", targets_path, "--output-dir", out, *KNOBS)
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_run_writes_results_summary_and_escaped_report(models, first_run):
    trained, _, targets_path, targets = models
    out, proc = first_run
    rows = _rows(out)
    assert [r["target"] for r in rows] == targets
    fields = {"target", "target_ids", "prompt_ids", "input_ids", "prompt_text", "target_tokens", "prompt_tokens",
              "acr", "memorized", "success", "verified_generation", "censored", "lengths_tried", "steps",
              "forward_passes", "wall_seconds", "seed", "model", "config_fingerprint", "budget", "retokenizes"}
    for row in rows:
        assert fields <= set(row)
        assert row["model"] == f"hf:{trained.resolve()}" and row["seed"] == 0
        assert row["input_ids"][-len(row["prompt_ids"]):] == row["prompt_ids"]
    for row in rows[:2]:  # memorized quotes: a 2-token prompt (or shorter) emits them, verified by generate
        assert row["memorized"] and row["success"] and row["verified_generation"] and not row["censored"]
        assert row["acr"] == row["target_tokens"] / row["prompt_tokens"] > 1
    for row in rows[2:]:
        assert not row["memorized"]
        if row["censored"]:
            assert row["acr"] is None and row["budget"]["max_prompt_tokens"] == min(4, row["target_tokens"])

    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["counts"]["total"] == summary["total"] == 4
    assert summary["memorized"] == summary["counts"]["memorized"] == 2
    assert summary["not_found"] == sum(r["censored"] for r in rows) >= 1
    assert summary["portion_memorized"] == 0.5 and len(summary["portion_memorized_ci95"]) == 2
    found = [r["acr"] for r in rows if r["success"]]
    assert summary["found"] == len(found) and summary["mean_acr"] == pytest.approx(sum(found) / len(found))
    packed = rows[0]["linear_kernels"]["packed"]  # measured on this machine: packed for oneDNN where faster
    forward = rows[0]["screen_forward"]
    assert forward == ("llama-shared-start" if rows[0]["screen_dtype"] == "bfloat16" else None)
    assert summary["resolved"] == {"dtype": "float32", "device": "cpu", "screen_dtype": rows[0]["screen_dtype"],
                                   **({"screen_forward": forward} if forward else {}),
                                   **({"screen_rechecks": RECHECKS} if rows[0]["screen_dtype"] else {}),
                                   **({"linear_kernels": packed} if packed else {})}
    kernels = summary["linear_kernel_measurement"]
    assert packed == kernels["chosen"] and all(r["linear_kernels"]["packed"] == packed for r in rows)
    assert set(kernels["gflops"]) >= set(packed) and rows[0]["linear_kernels"]["gflops"] == kernels["gflops"]
    assert (summary["resumed"], summary["computed"]) == (0, 4)
    assert summary["targets"]["sha256"] and summary["targets"]["path"] == str(targets_path)
    assert summary["config"]["steps_per_length"] == 12 and summary["versions"]["torch"]
    screened = [r["screen_dtype"] for r in rows]
    assert summary["config"]["screen_dtype"] == "auto" and len(set(screened)) == 1
    assert (summary["exact_rechecks"] > 0) == (screened[0] is not None)  # a screen always re-scores its best
    assert "mean found ACR" in proc.stdout and "wrote" in proc.stdout
    assert "no prompt found within the budget: lengths" in proc.stdout and "upper bound" not in proc.stdout
    assert "censored" not in proc.stdout

    report = (out / "report.html").read_text(encoding="utf-8")
    assert "<script>alert" not in report
    assert str(escape(SCRIPT)) in report  # the same escaping Jinja applies
    assert "Adversarial compression ratio" in report and "data:image/png;base64," in report
    assert str(escape(QUOTES["hamlet"])) in report


def test_resume_recomputes_only_missing_targets_and_matches_an_uninterrupted_run(models, first_run,
                                                                                   tmp_path):
    trained, _, targets_path, _ = models
    full, _ = first_run
    out = tmp_path / "resumed"
    out.mkdir()
    lines = jsonl_lines(full / "results.jsonl")
    (out / "results.jsonl").write_text(lines[0] + lines[1][: len(lines[1]) // 2], encoding="utf-8")
    proc = _cli("acr", "run", "--model", f"hf:{trained}", "--targets", targets_path, "--output-dir", out, *KNOBS)
    assert proc.returncode == 0, proc.stderr
    assert "resuming" in proc.stderr
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert (summary["resumed"], summary["computed"]) == (1, 3)
    rows, reference = _rows(out), _rows(full)
    assert rows[0] == reference[0]  # kept as written, wall_seconds included: not recomputed
    assert _stable(rows) == _stable(reference)  # deterministic for a seed

    again = _cli("acr", "run", "--model", f"hf:{trained}", "--targets", targets_path, "--output-dir", out, *KNOBS)
    assert again.returncode == 0, again.stderr
    assert json.loads((out / "summary.json").read_text())["computed"] == 0 and _rows(out) == rows

    other_seed = [*KNOBS[:1], "1", *KNOBS[2:]]
    mixed = _cli("acr", "run", "--model", f"hf:{trained}", "--targets", targets_path, "--output-dir", out,
                 *other_seed)
    assert mixed.returncode == 2 and "different run" in mixed.stderr


def test_resume_refuses_rows_made_with_another_resolved_dtype(models, first_run, tmp_path):
    """The resume key is what really ran: the same flags resolving to another dtype are another run."""
    trained, _, targets_path, _ = models
    out = tmp_path / "dtype"
    shutil.copytree(first_run[0], out)
    proc = _cli("acr", "run", "--model", f"hf:{trained}", "--targets", targets_path, "--output-dir", out, *KNOBS,
                "--dtype", "bfloat16")
    assert proc.returncode == 2 and "different run" in proc.stderr
    rows = _rows(first_run[0])
    assert _rows(out) == rows  # nothing mixed in


def test_run_on_ray_equals_the_single_process_run_and_resumes(models, first_run, tmp_path):
    """--ray: one target per call on two Ray actors (a local Ray the command starts). Rows are appended in the
    order targets finish and equal the single-process rows; a cut file resumes on Ray like any other."""
    pytest.importorskip("ray")
    trained, _, targets_path, _ = models
    full, _ = first_run

    def by_target(rows: list[dict]) -> dict[str, dict]:
        return {r["target"]: r for r in _stable(rows)}

    out = tmp_path / "ray"
    ray = ["--ray", "--ray-workers", "2", "--ray-cpus-per-worker", "1"]
    proc = _cli("acr", "run", "--model", f"hf:{trained}", "--targets", targets_path, "--output-dir", out, *KNOBS, *ray)
    assert proc.returncode == 0, proc.stderr
    assert by_target(_rows(out)) == by_target(_rows(full)) and len(_rows(out)) == len(_rows(full))
    summary, reference = (json.loads((d / "summary.json").read_text()) for d in (out, full))
    assert summary["runner"]["ray"] == {"address": "local", "workers": 2, "cpus_per_worker": 1.0,
                                        "gpus_per_worker": 0.0}
    assert summary["config_fingerprint"] == reference["config_fingerprint"]  # the same run, resumable either way
    assert (summary["memorized"], summary["found"]) == (reference["memorized"], reference["found"])

    lines = jsonl_lines(out / "results.jsonl")
    (out / "results.jsonl").write_text("".join(lines[:2]), encoding="utf-8")
    again = _cli("acr", "run", "--model", f"hf:{trained}", "--targets", targets_path, "--output-dir", out, *KNOBS,
                 *ray)
    assert again.returncode == 0, again.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["resumed"], summary["computed"]) == (2, len(lines) - 2)
    assert by_target(_rows(out)) == by_target(_rows(full))


def test_a_ray_worker_prepares_once_for_all_its_targets(models, monkeypatch):
    """A --ray worker searches one target per call, but prepares once: the screen copy and the packed weights
    are made on its first target and kept for the rest; its rows equal the single-process run's."""
    import acr.search as acr_search
    from acr import compute_acr_many
    from evalkit.cli.acr import _config, _runner_options, _Searcher
    from evalkit.cli.commands import build_parser

    trained, _, targets_path, targets = models
    made = {"screen": 0, "packed": 0}

    def counted(name: str, real):
        def call(*args, **kwargs):
            made[name] += 1
            return real(*args, **kwargs)
        return call

    monkeypatch.setattr(acr_search, "screen_copy", counted("screen", acr_search.screen_copy))
    monkeypatch.setattr(acr_search, "pack_linears", counted("packed", acr_search.pack_linears))
    args = build_parser().parse_args(["acr", "run", "--model", f"hf:{trained}", "--targets", str(targets_path),
                                      "--output-dir", "unused", *KNOBS, "--screen-dtype", "bfloat16",
                                      "--linear-kernel", "onednn"])
    searcher = _Searcher(args.model, _runner_options(args), _config(args))
    info = searcher.info()
    searcher.use_screen(info["screen"], info["linear_kernels"])
    rows = [searcher.compute(target) for target in targets[:3]]
    assert made == {"screen": 1, "packed": 1}
    assert rows[0]["screen_dtype"] == "bfloat16" and rows[0]["linear_kernels"]["packed"]
    single = compute_acr_many(searcher.runner.model, searcher.runner.tokenizer, targets[:3], searcher.config,
                              progress=False, model_name=info["model_id"], screen=info["screen"],
                              linear_kernels=info["linear_kernels"])
    assert _stable(rows) == _stable([result.to_dict() for result in single])


def test_run_without_the_screen_finds_the_same_memorized_targets(models, first_run, tmp_path):
    """--screen-dtype none scores candidates with the float32 model itself (here with every linear layer
    packed for oneDNN); the memorized quotes are still found with verified prompts, and nothing is
    re-checked."""
    trained, _, targets_path, _ = models
    screened = _rows(first_run[0])
    out = tmp_path / "exact"
    proc = _cli("acr", "run", "--model", f"hf:{trained}", "--targets", targets_path, "--output-dir", out,
                *KNOBS, "--screen-dtype", "none", "--max-targets", "2", "--linear-kernel", "onednn")
    assert proc.returncode == 0, proc.stderr
    rows = _rows(out)
    assert [r["memorized"] and r["verified_generation"] for r in rows] == [True, True]
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["resolved"]["linear_kernels"] == rows[0]["linear_kernels"]["packed"] != []
    assert summary["config"]["linear_kernel"] == "onednn" and summary["linear_kernel_measurement"] is None
    assert all(r["screen_dtype"] is None and r["exact_rechecks"] == 0 for r in rows)
    assert [r["target"] for r in rows] == [r["target"] for r in screened[:2]]
    assert rows[0]["config_fingerprint"] != screened[0]["config_fingerprint"]  # never mixed on resume


def test_compare_trained_vs_untrained(models, first_run, tmp_path):
    trained, untrained, targets_path, targets = models
    out = tmp_path / "cmp"
    shutil.copytree(first_run[0], out / "model_a")  # model A's run is reused (resumed), only B is computed
    proc = _cli("acr", "compare", "--model", f"hf:{trained}", "--model", f"hf:{untrained}",
                "--targets", targets_path, "--output-dir", out, *KNOBS)
    assert proc.returncode == 0, proc.stderr
    records = read_jsonl(out / "compare.jsonl")
    assert [r["target"] for r in records] == targets
    for r in records:
        both = r["found_a"] and r["found_b"]
        assert (r["acr_diff"] is not None) == both  # differences only where both models found a prompt
        if both:
            assert r["acr_diff"] == pytest.approx(r["acr_b"] - r["acr_a"])
        assert "completion_memorized_a" in r and "completion_memorized_b" in r
    for r in records[:2]:
        assert r["memorized_a"] and not r["memorized_b"]
        # the quote was learned behind its title, so its own first half need not complete it under A;
        # the untrained B completes nothing
        assert isinstance(r["completion_memorized_a"], bool) and r["completion_memorized_b"] is False
    summary = json.loads((out / "compare.json").read_text(encoding="utf-8"))
    assert summary["n"] == 4 and summary["memorized_b"] == 0
    assert summary["memorized_table"] == {"both": 0, "only_a": 2, "only_b": 0, "neither": 2}
    assert summary["memorized_mcnemar_p"] == pytest.approx(0.5)  # 2 discordant pairs: exact p = 2 * 0.5**2
    assert summary["both_found"] == sum(r["acr_diff"] is not None for r in records)
    assert "McNemar" in proc.stdout
    assert json.loads((out / "model_a" / "summary.json").read_text())["computed"] == 0
    assert json.loads((out / "model_b" / "summary.json").read_text())["computed"] == 4
    assert "B-A" in proc.stdout and "completion A/B" in proc.stdout
    report = (out / "report.html").read_text(encoding="utf-8")
    assert "Model A vs model B" in report and "Paired outcomes" in report and "Targets side by side" in report
    assert "ACR of model A" in report and "ACR of model B" in report and "exact McNemar p = 0.5000" in report
    # one report over both audits: the comparison and model A's own run, found by their files alone
    both = tmp_path / "both.html"
    assert _cli("report", out, first_run[0], "-o", both).returncode == 0
    html = both.read_text(encoding="utf-8")
    assert "evalkit acr compare" in html and "evalkit acr run" in html and "Distribution of the found ACR" in html


def _one_line_error(code: int, err: str) -> None:
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("evalkit: error:"), err
    assert "Traceback" not in err


def test_bad_input_exits_2_with_one_line(models, tmp_path, capsys, monkeypatch):
    trained, _, targets_path, _ = models

    # Real processes: no traceback reaches the terminal.
    proc = _cli("acr", "run", "--model", "bedrock:anthropic.claude", "--targets", targets_path,
                "--output-dir", tmp_path / "x")
    _one_line_error(proc.returncode, proc.stderr)
    assert "ACR needs a local model with gradients (hf:...)" in proc.stderr
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"[\"a\x00b\"]")
    proc = _cli("acr", "run", "--model", f"hf:{trained}", "--targets", binary, "--output-dir", tmp_path / "x")
    _one_line_error(proc.returncode, proc.stderr)
    assert "not a text file" in proc.stderr

    def run(targets: Path, model: str = f"hf:{trained}") -> str:
        code = main(["acr", "run", "--model", model, "--targets", str(targets), "--output-dir",
                     str(tmp_path / "out"), *KNOBS])
        err = capsys.readouterr().err
        _one_line_error(code, err)
        return err

    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps([QUOTES["hamlet"], ""]), encoding="utf-8")
    assert "empty target" in run(empty)
    long = tmp_path / "long.json"
    long.write_text(json.dumps(["sun " * 80]), encoding="utf-8")
    assert "context of 64 tokens" in run(long)
    csv = tmp_path / "targets.csv"
    csv.write_text("text\nhello\n", encoding="utf-8")
    assert "unknown target file type" in run(csv)
    assert "ACR needs a local model with gradients (hf:...)" in run(targets_path, model="api:gpt")
    assert not (tmp_path / "out" / "results.jsonl").exists()

    class NoModel:  # e.g. an API runner registered under a gradient-capable prefix
        spec = "hf:remote"

    monkeypatch.setattr("evalkit.runners.base.create_runner", lambda spec, options=None: NoModel())
    assert "ACR needs a local model with gradients (hf:...)" in run(targets_path)


def test_acr_help_imports_no_heavy_library():
    code = ("import sys, evalkit.cli as c\n"
            "for argv in (['--help'], ['acr', '--help'], ['acr', 'run', '--help'], ['acr', 'compare', '--help']):\n"
            "    try:\n        c.build_parser().parse_args(argv)\n    except SystemExit:\n        pass\n"
            "print([m for m in ('torch', 'transformers', 'numpy', 'pandas') if m in sys.modules])")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
    assert "--max-prompt-tokens" in proc.stdout and "--search-width" in proc.stdout


def test_results_file_repairs_a_torn_last_line_and_refuses_a_corrupt_middle(tmp_path):
    from acr.runfiles import ResultsFile, plan_resume
    from evalkit.errors import InputError, UsageError

    results = ResultsFile(tmp_path)
    assert results.load() == []
    rows = [{"target": t, "model": "hf:m", "seed": 0, "config_fingerprint": "f"} for t in ("a", "b")]
    for row in rows:
        results.append(row)
    text = results.path.read_text(encoding="utf-8")
    results.path.write_text(text + '{"target": "c", "mod', encoding="utf-8")
    assert results.load() == rows and results.dropped_partial
    assert results.path.read_text(encoding="utf-8") == text  # rewritten without the torn line
    done, todo = plan_resume(rows, ["a", "c", "b", "c"], model="hf:m", seed=0, fingerprint="f", where="DIR")
    assert set(done) == {"a", "b"} and todo == ["c"]
    with pytest.raises(UsageError, match="different run"):
        plan_resume(rows, ["a"], model="hf:m", seed=1, fingerprint="f", where="DIR")
    results.path.write_text('{"target": "a"}\nnot json\n{"target": "b"}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"results.jsonl:2: corrupt line"):
        ResultsFile(tmp_path).load()
