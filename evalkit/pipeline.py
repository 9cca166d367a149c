"""One straight data path: check -> load -> generate -> score -> aggregate -> write.

Everything that can be refused is refused before any model loads (options, model spec, metric options,
every dataset record, the output directory). From then on errors are data: a record whose generation
or scoring fails keeps its error and the run goes on; a crash is recorded in results.json
(``outcome.status = "crashed"``) before it is reported, so "the run crashed" and "the run finished with
too many errors" are never confused.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata as md
import json
import math
import platform
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evalkit import __version__
from evalkit.atomic import atomic_write_json, atomic_write_jsonl
from evalkit.dataset import DatasetSpec, LoadedDataset, Sample, load_dataset
from evalkit.errors import EXIT_OK, EXIT_RUNTIME, AllRecordsFailed, EvalkitError, RuntimeFailure, UsageError
from evalkit.generation_cache import CACHE_FILE, GenerationCache, fingerprint, read_cache_header
from evalkit.metrics.base import Metric
from evalkit.prompts import render_prompt, validate_template
from evalkit.results import RECORDS_FILE, REPORT_FILE, RESULTS_FILE, RunResult
from evalkit.runners.base import Runner, RunnerOptions
from evalkit.stats import summarize
from evalkit.tasks import TASKS, Task

VERSIONED_PACKAGES = ("torch", "transformers", "rouge-score", "nltk", "bert-score", "numpy", "datasets", "scipy",
                      "statsmodels")
GENERATION_CHUNK_BATCHES = 4  # batches generated between two checkpoint writes
ERROR_CHARS = 500  # an error message is kept to this many characters

# outcome.status in results.json, with the exit code of each
STATUS_COMPLETE = "complete"
STATUS_ALL_FAILED = "all_records_failed"  # the run finished, but no record could be generated
STATUS_CRASHED = "crashed"  # the run stopped before writing its results


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
    truncate: bool = False  # cut the input of a prompt longer than the model's context, instead of an error
    overwrite: bool = False  # replace a finished run of other settings in output_dir


def evaluate(config: RunConfig) -> RunResult:
    started = time.perf_counter()
    task: Task = TASKS.get(config.task)
    template = validate_template(config.prompt_template or task.prompt_template)
    if config.dataset.output_field is None and not config.model:
        raise UsageError("--model is required unless --output-field names outputs already in the dataset")
    if config.dataset.output_field is not None and config.model:
        raise UsageError("give either --model (generate outputs) or --output-field (score outputs already "
                         "in the dataset), not both")
    if config.model:
        from evalkit.runners.base import check_runner_spec

        check_runner_spec(config.model)
    metric_options = _metric_options(config)
    from evalkit.metrics.base import check_metrics

    check_metrics(task.metrics, metric_options)
    data = load_dataset(config.dataset, skip_invalid=config.skip_invalid, max_samples=config.max_samples,
                        seed=config.seed, progress=config.progress)
    settings = run_settings(config, task, template, data, metric_options)
    generation = generation_settings(config, template) if config.model else None
    output_dir = Path(config.output_dir or default_output_dir(config.task, config.model or "outputs"))
    prepare_output_dir(output_dir, settings, generation, overwrite=config.overwrite)
    try:
        return _run(config, task, template, data, settings, generation, metric_options, output_dir, started)
    except Exception as exc:
        if isinstance(exc, AllRecordsFailed):
            raise  # the run finished and wrote its results: not a crash
        _write_crash(output_dir, settings, exc, started)
        if isinstance(exc, EvalkitError) and exc.exit_code != EXIT_RUNTIME:
            raise  # e.g. a model that cannot be loaded after all: the error says what to do
        what = str(exc) if isinstance(exc, EvalkitError) else f"{type(exc).__name__}: {exc}"
        raise RuntimeFailure(f"the run crashed: {what[:ERROR_CHARS]} (recorded in {output_dir / RESULTS_FILE}; "
                             "finished generations are kept: re-run to resume)") from exc


def _run(config: RunConfig, task: Task, template: str, data: LoadedDataset, settings: dict[str, Any],
         generation: dict[str, Any] | None, metric_options: dict[str, dict[str, Any]], output_dir: Path,
         started: float) -> RunResult:
    from evalkit.metrics.base import build_metrics
    from evalkit.progress import quiet_library_progress

    timings: dict[str, float] = {}
    start = time.perf_counter()
    with quiet_library_progress(not config.progress):
        metrics = build_metrics(task.metrics, metric_options)
    for metric in metrics:
        metric.prepare(data.all_references)
    timings["metrics_load_s"] = round(time.perf_counter() - start, 3)

    prompts = [render_prompt(template, s.model_input) if s.model_input is not None else None
               for s in data.samples]
    runner_info: dict[str, Any] | None = None
    if config.model:
        gen = _generate(config, data.samples, prompts, template, output_dir, generation)
        outputs, errors, sent, truncated, runner_info = gen.outputs, gen.errors, gen.sent, gen.truncated, gen.info
        timings.update(gen.timings)
    else:
        outputs = [s.model_output for s in data.samples]
        errors, sent, truncated = [None] * len(outputs), list(prompts), [None] * len(outputs)

    scores, score_errors, metric_settings, score_timings = _score(config, metrics, data.samples, outputs, errors)
    timings.update(score_timings)
    records = [_record(*row) for row in zip(data.samples, sent, outputs, errors, scores, score_errors, truncated,
                                            strict=True)]
    summaries = {}
    for metric in metrics:
        for column in metric.columns:
            values = [sc.get(column) for sc in scores]
            summary = summarize(values, errors=sum(v is None for v in values)).to_dict()
            summary["range"] = list(metric.value_range(column))
            summaries[column] = summary
    counts = _counts(data, errors, score_errors, truncated)
    outcome = {"status": STATUS_COMPLETE, "exit_code": EXIT_OK, "message": None}
    if errors and all(e is not None for e in errors):
        first = next(e for e in errors if e is not None)
        outcome = {"status": STATUS_ALL_FAILED, "exit_code": EXIT_RUNTIME,
                   "message": f"every generation failed ({len(errors)} of {len(errors)}); first error: {first}"}
    timings["total_s"] = round(time.perf_counter() - started, 3)

    results = {
        "task": task.name,
        "metrics": summaries,
        "model": config.model,
        "output_field": config.dataset.output_field,
        "dataset": data.metadata(),
        "prompt_template": template if config.model else None,
        "metric_settings": metric_settings,
        "runner": runner_info,
        "seed": config.seed,
        "max_samples": config.max_samples,
        "counts": counts,
        "invalid_records": [r.to_dict() for r in data.invalid],
        "outcome": outcome,
        "run_settings": settings,
        "run_fingerprint": fingerprint(settings),
        "timings": timings,
        "versions": _versions(),
        "created_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    atomic_write_jsonl(output_dir / RECORDS_FILE, records)
    atomic_write_json(output_dir / RESULTS_FILE, results)
    if config.write_report:
        from evalkit.report.html import write_report

        write_report(output_dir / REPORT_FILE, results, records)
    if outcome["status"] == STATUS_ALL_FAILED:
        raise AllRecordsFailed(f"{outcome['message']} (results.json and records.jsonl in {output_dir} keep the "
                               "errors; not a crash)")
    return RunResult(output_dir, results, records)


# ------------------------------------------------------------------------------------------------
# what decides a run, and the output directory


def _metric_options(config: RunConfig) -> dict[str, dict[str, Any]]:
    options = {name: dict(opts) for name, opts in config.metric_options.items()}
    options.setdefault("bertscore", {}).setdefault("device", config.runner.device)
    return options


def run_settings(config: RunConfig, task: Task, template: str, data: LoadedDataset,
                 metric_options: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Everything that decides a run's numbers (not how fast or where they are written)."""
    spec = config.dataset
    settings: dict[str, Any] = {
        "task": task.name,
        "dataset": {"sha256": data.sha256, "format": data.format, "input_field": spec.input_field,
                    "target_field": spec.target_field, "output_field": spec.output_field, "id_field": spec.id_field,
                    "target_delimiter": spec.target_delimiter, "split": spec.split},
        "max_samples": config.max_samples,
        "seed": config.seed,
        "skip_invalid": config.skip_invalid,
        "metrics": {name: {k: v for k, v in opts.items() if k not in ("device", "batch_size")}
                    for name, opts in sorted(metric_options.items())},
        "model": config.model,
    }
    if config.model:
        settings["generation"] = generation_settings(config, template)
    return settings


def generation_settings(config: RunConfig, template: str) -> dict[str, Any]:
    """What decides a generation (the generation cache's key, with each record's exact prompt)."""
    options = config.runner
    return {"model": config.model, "template": template, "max_new_tokens": options.max_new_tokens,
            "use_chat_template": options.use_chat_template, "dtype": options.dtype, "device": options.device,
            "decoding": "greedy, fresh GenerationConfig", "truncate": config.truncate}


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            out.extend(_differences(old.get(key), new.get(key), f"{prefix}{key}."))
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]


def prepare_output_dir(output_dir: Path, settings: dict[str, Any], generation: dict[str, Any] | None, *,
                       overwrite: bool = False) -> None:
    """Create ``output_dir`` and check it is writable; refuse to overwrite another run's finished work.

    A finished run of other settings (results.json) and generations made with other settings
    (generations.jsonl) are kept unless ``overwrite``; a crashed run's results.json is not finished work.
    """
    where = f"--output-dir {output_dir}"
    if output_dir.exists() and not output_dir.is_dir():
        raise UsageError(f"{where} exists and is not a directory")
    if not overwrite:
        previous = _read_json(output_dir / RESULTS_FILE)
        if previous is not None:
            status = (previous.get("outcome") or {}).get("status") if isinstance(previous, dict) else None
            old = previous.get("run_settings") if isinstance(previous, dict) else None
            if status != STATUS_CRASHED and previous.get("run_fingerprint") != fingerprint(settings):
                diff = _differences(old, settings) if isinstance(old, dict) else []
                what = "; ".join(diff[:4]) + ("; ..." if len(diff) > 4 else "") if diff else \
                    "it records no settings to compare"
                raise UsageError(f"{where} holds a finished run made with other settings ({what}); pass "
                                 "--overwrite to replace it, or choose another --output-dir")
        header = read_cache_header(output_dir) if generation is not None else None
        if header is not None and header.get("fingerprint") != fingerprint(generation):
            old = header.get("settings")
            diff = _differences(old, generation) if isinstance(old, dict) else []
            raise UsageError(f"{where} holds generations made with other settings ({'; '.join(diff[:4]) or '?'}) "
                             f"in {CACHE_FILE}; pass --overwrite to discard them, or choose another --output-dir")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_dir):
            pass
    except OSError as exc:
        raise UsageError(f"{where} is not writable ({exc.strerror or exc})") from None


def _read_json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # unreadable: treated as a run whose settings cannot be compared


def default_output_dir(task: str, model: str) -> Path:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model.split(":", 1)[-1].rstrip("/").split("/")[-1])[:60]
    return Path("reports") / f"{stamp}-{task}-{slug or 'model'}"


def _write_crash(output_dir: Path, settings: dict[str, Any], exc: BaseException, started: float) -> None:
    """results.json of a run that stopped: what crashed, with which settings (best effort)."""
    code = exc.exit_code if isinstance(exc, EvalkitError) else EXIT_RUNTIME
    results = {"metrics": {}, "outcome": {"status": STATUS_CRASHED, "exit_code": code,
                                          "message": f"{type(exc).__name__}: {str(exc)[:ERROR_CHARS]}"},
               "run_settings": settings, "run_fingerprint": fingerprint(settings),
               "timings": {"total_s": round(time.perf_counter() - started, 3)}, "versions": _versions(),
               "created_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    with contextlib.suppress(OSError, ValueError):
        atomic_write_json(output_dir / RESULTS_FILE, results)


# ------------------------------------------------------------------------------------------------
# generate


@dataclass
class Generated:
    outputs: list[str | None]
    errors: list[str | None]
    sent: list[str | None]  # the prompt each record's model saw (its truncated form when cut)
    truncated: list[dict[str, int] | None]
    info: dict[str, Any]
    timings: dict[str, float]


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:ERROR_CHARS]


def generate_isolated(runner: Runner, prompts: Sequence[str]) -> list[tuple[str | None, str | None]]:
    """``(output, error)`` per prompt. A failing batch is split in halves until the failing prompts are alone,
    so one bad record never costs its neighbours their outputs. A runner that returns the wrong number of
    outputs is a bug in the runner: a clear :class:`RuntimeFailure`, not a misaligned run."""
    try:
        outputs = runner.generate(list(prompts))
    except Exception as exc:
        if len(prompts) == 1:
            return [(None, _error_text(exc))]
        middle = len(prompts) // 2
        return generate_isolated(runner, prompts[:middle]) + generate_isolated(runner, prompts[middle:])
    if not isinstance(outputs, list) or len(outputs) != len(prompts):
        got = len(outputs) if isinstance(outputs, (list, tuple)) else type(outputs).__name__
        raise RuntimeFailure(f"runner {getattr(runner, 'spec', type(runner).__name__)} returned {got} outputs "
                             f"for {len(prompts)} prompts")
    bad = next((o for o in outputs if not isinstance(o, str)), None)
    if bad is not None:
        raise RuntimeFailure(f"runner {getattr(runner, 'spec', type(runner).__name__)} returned a "
                             f"{type(bad).__name__} where a completion (str) was expected")
    return [(o, None) for o in outputs]


def fit_prompt(runner: Runner, template: str, model_input: str, budget: int) -> tuple[str, dict[str, int]] | None:
    """The longest prefix of ``model_input`` (in whole tokens) whose prompt fits ``budget`` tokens, with what
    was kept; None when even the template alone does not fit."""
    if runner.count_prompt_tokens(render_prompt(template, "")) > budget:
        return None
    _, n_input = runner.text_token_prefix(model_input, 0)
    low, high = 0, n_input  # invariant: a prefix of `low` tokens fits; find the largest
    while low < high:
        mid = (low + high + 1) // 2
        text, _ = runner.text_token_prefix(model_input, mid)
        if runner.count_prompt_tokens(render_prompt(template, text)) <= budget:
            low = mid
        else:
            high = mid - 1
    text, _ = runner.text_token_prefix(model_input, low)
    prompt = render_prompt(template, text)
    return prompt, {"input_tokens": n_input, "kept_input_tokens": low, "kept_input_chars": len(text),
                    "prompt_tokens": runner.count_prompt_tokens(prompt)}


def _context_check(runner: Runner, config: RunConfig, template: str, sample: Sample, prompt: str,
                   budget: int) -> tuple[str, dict[str, int] | None, str | None]:
    """``(prompt to send, truncation record, error)`` for one record against the context window."""
    n = runner.count_prompt_tokens(prompt)
    if n is None or n <= budget:
        return prompt, None, None
    limit = budget + config.runner.max_new_tokens
    too_long = (f"context length: the prompt has {n} tokens; the model's context of {limit} tokens leaves "
                f"{budget} for a prompt after --max-new-tokens {config.runner.max_new_tokens}")
    if not config.truncate:
        return prompt, None, too_long + "; pass --truncate to cut the input to fit"
    fitted = fit_prompt(runner, template, sample.model_input or "", budget)
    if fitted is None:
        return prompt, None, too_long + "; the prompt template alone does not fit"
    text, info = fitted
    return text, {"prompt_tokens_before": n, **info}, None


def _generate(config: RunConfig, samples: list[Sample], prompts: list[str | None], template: str,
              output_dir: Path, settings: dict[str, Any]) -> Generated:
    from evalkit.progress import progress_counter
    from evalkit.runners.base import create_runner

    cache = GenerationCache(output_dir, settings)
    n = len(samples)
    outputs: list[str | None] = [None] * n
    errors: list[str | None] = [None] * n
    sent: list[str | None] = list(prompts)
    truncated: list[dict[str, int] | None] = [None] * n
    todo = []
    for i, (sample, prompt) in enumerate(zip(samples, prompts, strict=True)):
        hit = cache.lookup(sample.id, prompt)
        if hit is not None:
            outputs[i], truncated[i] = hit["model_output"], hit.get("truncated")
            sent[i] = hit.get("sent_prompt") or prompt
        else:
            todo.append(i)
    timings: dict[str, float] = {"generation_s": 0.0}
    if not todo:
        return Generated(outputs, errors, sent, truncated, {"spec": config.model, "resumed_records": n}, timings)

    start = time.perf_counter()
    runner = create_runner(config.model, RunnerOptions(**{**asdict(config.runner), "progress": False,
                                                           "seed": config.seed}))
    timings["model_load_s"] = round(time.perf_counter() - start, 3)
    start = time.perf_counter()
    budget = runner.prompt_token_budget()
    ready = []
    for i in todo:
        if budget is not None:
            sent[i], truncated[i], errors[i] = _context_check(runner, config, template, samples[i], prompts[i],
                                                              budget)
        if errors[i] is None:
            ready.append(i)
    refused = [_cache_entry(samples[i], prompts[i], sent[i], None, errors[i], None) for i in todo if errors[i]]
    if refused:
        cache.save(refused)
    chunk = max(1, config.runner.batch_size * GENERATION_CHUNK_BATCHES)
    bar = progress_counter(len(todo), desc="Generating", enabled=config.progress)
    bar.update(len(refused))
    for offset in range(0, len(ready), chunk):
        batch = ready[offset:offset + chunk]
        results = generate_isolated(runner, [sent[i] for i in batch])
        for i, (output, error) in zip(batch, results, strict=True):
            outputs[i], errors[i] = output, error
        cache.save([_cache_entry(samples[i], prompts[i], sent[i], outputs[i], errors[i], truncated[i])
                    for i in batch])
        bar.update(len(batch))
    bar.close()
    timings["generation_s"] = round(time.perf_counter() - start, 3)
    info = runner.describe()
    info["resumed_records"] = n - len(todo)
    return Generated(outputs, errors, sent, truncated, info, timings)


def _cache_entry(sample: Sample, prompt: str | None, sent: str | None, output: str | None, error: str | None,
                 truncated: dict[str, int] | None) -> dict[str, Any]:
    entry = {"id": sample.id, "prompt": prompt, "model_output": output, "error": error}
    if truncated is not None:
        entry.update(sent_prompt=sent, truncated=truncated)
    return entry


# ------------------------------------------------------------------------------------------------
# score


def _finite_or_error(value: Any) -> tuple[float | None, str | None]:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None, f"the metric returned {value!r}, not a finite number"
    return float(value), None


def score_isolated(metric: Metric, outputs: list[str], references: list[Sequence[str]],
                   progress: bool) -> tuple[dict[str, list[float | None]], list[str | None]]:
    """Every column of ``metric`` per record, and each record's scoring error. A batch that raises is
    scored record by record, so one record the metric cannot handle never costs the others their scores."""
    n = len(outputs)
    columns: dict[str, list[float | None]] = {c: [None] * n for c in metric.columns}
    errors: list[str | None] = [None] * n
    try:
        batches = [(list(range(n)), metric.score(outputs, references, progress=progress))]
    except Exception:
        batches = []
        for i in range(n):
            try:
                batches.append(([i], metric.score([outputs[i]], [references[i]], progress=False)))
            except Exception as exc:
                errors[i] = _error_text(exc)
    for indexes, result in batches:
        for column in metric.columns:
            values = result.get(column)
            if not isinstance(values, list) or len(values) != len(indexes):
                raise RuntimeFailure(f"metric {metric.name} returned {column} for "
                                     f"{len(values) if isinstance(values, list) else 'no'} of {len(indexes)} records")
            for i, value in zip(indexes, values, strict=True):
                columns[column][i], problem = _finite_or_error(value)
                errors[i] = errors[i] or problem
    for i, error in enumerate(errors):
        if error is not None:
            for column in metric.columns:
                columns[column][i] = None
    return columns, errors


def _score(config: RunConfig, metrics: list[Metric], samples: list[Sample], outputs: list[str | None],
           errors: list[str | None]) -> tuple[list[dict[str, float]], list[dict[str, str]], dict[str, Any],
                                              dict[str, float]]:
    ok = [i for i, e in enumerate(errors) if e is None]
    scores: list[dict[str, float]] = [{} for _ in samples]
    score_errors: list[dict[str, str]] = [{} for _ in samples]
    timings: dict[str, float] = {}
    for metric in metrics:
        start = time.perf_counter()
        columns, problems = score_isolated(metric, [outputs[i] for i in ok], [samples[i].references for i in ok],
                                           config.progress)
        for position, i in enumerate(ok):
            if problems[position] is not None:
                score_errors[i].update({column: problems[position] for column in metric.columns})
                continue
            for column, values in columns.items():
                scores[i][column] = values[position]
        timings[f"scoring_{metric.name}_s"] = round(time.perf_counter() - start, 3)
    timings["scoring_s"] = round(sum(timings.values()), 3)
    return scores, score_errors, {m.name: m.settings() for m in metrics}, timings


# ------------------------------------------------------------------------------------------------
# aggregate and write


def _record(sample: Sample, prompt: str | None, output: str | None, error: str | None, scores: dict[str, float],
            score_errors: dict[str, str], truncated: dict[str, int] | None) -> dict[str, Any]:
    refs = sample.references
    return {"id": sample.id, "model_input": sample.model_input, "prompt": prompt, "model_output": output,
            "target_output": refs[0] if len(refs) == 1 else list(refs), "scores": scores, "error": error,
            "score_errors": score_errors, "truncated": truncated}


def _counts(data: LoadedDataset, errors: list[str | None], score_errors: list[dict[str, str]],
            truncated: list[dict[str, int] | None]) -> dict[str, int]:
    generation_errors = sum(e is not None for e in errors)
    scoring_errors = sum(bool(s) for s in score_errors)
    failed = sum(e is not None or bool(s) for e, s in zip(errors, score_errors, strict=True))
    return {"rows": data.n_rows, "records": len(data.samples), "scored": len(errors) - failed,
            "errors": generation_errors, "scoring_errors": scoring_errors, "failed_records": failed,
            "truncated": sum(t is not None for t in truncated), "skipped_invalid": len(data.invalid)}


def _versions() -> dict[str, str]:
    versions = {"evalkit": __version__, "python": sys.version.split()[0], "platform": platform.platform()}
    for name in VERSIONED_PACKAGES:
        with contextlib.suppress(md.PackageNotFoundError):
            versions[name] = md.version(name)
    return versions
