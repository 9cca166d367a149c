"""One straight data path: load -> generate -> score -> aggregate -> write."""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata as md
import platform
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evalkit import __version__
from evalkit.atomic import atomic_write_json, atomic_write_jsonl
from evalkit.dataset import DatasetSpec, LoadedDataset, Sample, load_dataset
from evalkit.errors import RuntimeFailure, UsageError
from evalkit.generation_cache import GenerationCache
from evalkit.metrics.base import Metric
from evalkit.prompts import render_prompt, validate_template
from evalkit.results import RECORDS_FILE, REPORT_FILE, RESULTS_FILE, RunResult
from evalkit.runners.base import RunnerOptions
from evalkit.stats import summarize
from evalkit.tasks import TASKS, Task

VERSIONED_PACKAGES = ("torch", "transformers", "rouge-score", "nltk", "bert-score", "numpy", "datasets")
GENERATION_CHUNK_BATCHES = 4  # batches generated between two checkpoint writes


@dataclass
class RunConfig:
    """Everything that decides a run. The CLI and the Python API both build one of these."""

    dataset: DatasetSpec
    task: str = "summarization"
    model: str | None = None
    prompt_template: str | None = None
    max_samples: int | None = None
    seed: int = 0
    output_dir: str | None = None
    skip_invalid: bool = False
    runner: RunnerOptions = field(default_factory=RunnerOptions)
    metric_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    progress: bool = True
    write_report: bool = True


def evaluate(config: RunConfig) -> RunResult:
    started = time.perf_counter()
    task: Task = TASKS.get(config.task)
    template = validate_template(config.prompt_template or task.prompt_template)
    if config.dataset.output_field is None and not config.model:
        raise UsageError("--model is required unless --output-field names outputs already in the dataset")
    if config.dataset.output_field is not None and config.model:
        raise UsageError("give either --model (generate outputs) or --output-field (score outputs already "
                         "in the dataset), not both")

    data = load_dataset(config.dataset, skip_invalid=config.skip_invalid,
                        max_samples=config.max_samples, seed=config.seed)
    metrics = _build_metrics(config, task)  # before generation: a bad metric option must not cost a long run
    output_dir = Path(config.output_dir or default_output_dir(config.task, config.model or "outputs"))
    output_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    prompts = [render_prompt(template, s.model_input) if s.model_input is not None else None
               for s in data.samples]
    runner_info: dict[str, Any] | None = None
    if config.model:
        outputs, errors, runner_info, timings = _generate(config, data.samples, prompts, template, output_dir)
    else:
        outputs = [s.model_output for s in data.samples]
        errors = [None] * len(outputs)

    scores, metric_settings, score_timings = _score(config, metrics, data.samples, outputs, errors)
    timings.update(score_timings)
    records = [_record(s, p, o, e, sc) for s, p, o, e, sc in
               zip(data.samples, prompts, outputs, errors, scores, strict=True)]
    columns = _columns(scores)
    metrics = {c: summarize([sc.get(c) for sc, e in zip(scores, errors, strict=True) if e is None],
                            seed=config.seed).to_dict() for c in columns}
    timings["total_s"] = round(time.perf_counter() - started, 3)

    results = {
        "task": task.name,
        "metrics": metrics,
        "model": config.model,
        "output_field": config.dataset.output_field,
        "dataset": data.metadata(),
        "prompt_template": template if config.model else None,
        "metric_settings": metric_settings,
        "runner": runner_info,
        "seed": config.seed,
        "max_samples": config.max_samples,
        "counts": _counts(data, errors),
        "invalid_records": [r.to_dict() for r in data.invalid],
        "timings": timings,
        "versions": _versions(),
        "created_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    atomic_write_jsonl(output_dir / RECORDS_FILE, records)
    atomic_write_json(output_dir / RESULTS_FILE, results)
    if config.write_report:
        from evalkit.report.html import write_report

        write_report(output_dir / REPORT_FILE, results, records)
    return RunResult(output_dir, results, records)


def default_output_dir(task: str, model: str) -> Path:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model.split(":", 1)[-1].rstrip("/").split("/")[-1])[:60]
    return Path("reports") / f"{stamp}-{task}-{slug or 'model'}"


Generated = tuple[list[str | None], list[str | None], dict[str, Any], dict[str, float]]


def _generate(config: RunConfig, samples: list[Sample], prompts: list[str | None], template: str,
              output_dir: Path) -> Generated:
    from evalkit.progress import progress_counter
    from evalkit.runners.base import create_runner

    options = config.runner
    settings = {"model": config.model, "template": template, "max_new_tokens": options.max_new_tokens,
                "use_chat_template": options.use_chat_template, "dtype": options.dtype}
    cache = GenerationCache(output_dir, settings)
    outputs: list[str | None] = [None] * len(samples)
    errors: list[str | None] = [None] * len(samples)
    todo = []
    for i, (sample, prompt) in enumerate(zip(samples, prompts, strict=True)):
        hit = cache.lookup(sample.id, prompt)
        if hit is not None:
            outputs[i] = hit["model_output"]
        else:
            todo.append(i)
    timings: dict[str, float] = {"generation_s": 0.0}
    if not todo:
        return outputs, errors, {"spec": config.model, "resumed_records": len(samples)}, timings

    start = time.perf_counter()
    runner = create_runner(config.model, RunnerOptions(**{**asdict(options), "progress": False}))
    timings["model_load_s"] = round(time.perf_counter() - start, 3)
    chunk = max(1, options.batch_size * GENERATION_CHUNK_BATCHES)
    start = time.perf_counter()
    bar = progress_counter(len(todo), desc="Generating", enabled=config.progress)
    for offset in range(0, len(todo), chunk):
        batch = todo[offset:offset + chunk]
        try:
            batch_outputs = runner.generate([prompts[i] for i in batch])
        except Exception as exc:  # a failed batch is recorded per record; the run goes on
            message = f"{type(exc).__name__}: {exc}"[:500]
            batch_outputs = None
        saved = []
        for j, i in enumerate(batch):
            if batch_outputs is None:
                errors[i] = message
            else:
                outputs[i] = batch_outputs[j]
            saved.append({"id": samples[i].id, "prompt": prompts[i], "model_output": outputs[i],
                          "error": errors[i]})
        cache.save(saved)
        bar.update(len(batch))
    bar.close()
    timings["generation_s"] = round(time.perf_counter() - start, 3)
    if all(e is not None for e in errors):
        raise RuntimeFailure(f"every generation failed; first error: {errors[0]}")
    info = runner.describe()
    info["resumed_records"] = len(samples) - len(todo)
    return outputs, errors, info, timings


def _build_metrics(config: RunConfig, task: Task) -> list[Metric]:
    from evalkit.metrics.base import build_metrics

    options = {name: dict(opts) for name, opts in config.metric_options.items()}
    options.setdefault("bertscore", {}).setdefault("device", config.runner.device)
    return build_metrics(task.metrics, options)


def _score(config: RunConfig, metrics: list[Metric], samples: list[Sample], outputs: list[str | None],
           errors: list[str | None]) -> tuple[list[dict[str, float]], dict[str, Any], dict[str, float]]:
    ok = [i for i, e in enumerate(errors) if e is None]
    scores: list[dict[str, float]] = [{} for _ in samples]
    timings: dict[str, float] = {}
    for metric in metrics:
        start = time.perf_counter()
        columns = metric.score([outputs[i] for i in ok], [samples[i].references for i in ok],
                               progress=config.progress)
        for column, values in columns.items():
            for i, value in zip(ok, values, strict=True):
                scores[i][column] = value
        timings[f"scoring_{metric.name}_s"] = round(time.perf_counter() - start, 3)
    timings["scoring_s"] = round(sum(timings.values()), 3)
    return scores, {m.name: m.settings() for m in metrics}, timings


def _record(sample: Sample, prompt: str | None, output: str | None, error: str | None,
            scores: dict[str, float]) -> dict[str, Any]:
    refs = sample.references
    return {"id": sample.id, "model_input": sample.model_input, "prompt": prompt, "model_output": output,
            "target_output": refs[0] if len(refs) == 1 else list(refs), "scores": scores, "error": error}


def _columns(scores: list[dict[str, float]]) -> list[str]:
    seen: dict[str, None] = {}
    for row in scores:
        seen.update(dict.fromkeys(row))
    return list(seen)


def _counts(data: LoadedDataset, errors: list[str | None]) -> dict[str, int]:
    n_errors = sum(e is not None for e in errors)
    return {"rows": data.n_rows, "records": len(data.samples), "scored": len(errors) - n_errors,
            "errors": n_errors, "skipped_invalid": len(data.invalid)}


def _versions() -> dict[str, str]:
    versions = {"evalkit": __version__, "python": sys.version.split()[0], "platform": platform.platform()}
    for name in VERSIONED_PACKAGES:
        with contextlib.suppress(md.PackageNotFoundError):
            versions[name] = md.version(name)
    return versions
