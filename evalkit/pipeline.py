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
import platform
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from evalkit import __version__
from evalkit.atomic import atomic_write_json, atomic_write_jsonl
from evalkit.data.dataset import DatasetSpec, LoadedDataset, Sample, load_dataset
from evalkit.data.prompts import render_prompt, validate_template
from evalkit.errors import EXIT_OK, EXIT_RUNTIME, AllRecordsFailed, EvalkitError, RuntimeFailure, UsageError
from evalkit.hashing import fingerprint
from evalkit.proctime import process_age
from evalkit.progress import quiet_library_progress
from evalkit.rag.retriever import RetrieverSpec
from evalkit.results import RECORDS_FILE, REPORT_FILE, RESULTS_FILE, RunResult
from evalkit.runners.base import Result, Runner, RunnerOptions
from evalkit.runners.store import run_lock
from evalkit.scoring.base import Item, Metric, build_metrics
from evalkit.statistics.summary import summarize
from evalkit.tasks import TASKS, Task

VERSIONED_PACKAGES = ("torch", "transformers", "rouge-score", "nltk", "bert-score", "numpy", "datasets", "scipy",
                      "statsmodels")
GENERATION_CHUNK_BATCHES = 4  # batches generated between two checkpoint writes
ERROR_CHARS = 500  # an error message is kept to this many characters

# outcome.status in results.json, with the exit code of each
STATUS_COMPLETE = "complete"
STATUS_ALL_FAILED = "all_records_failed"  # the run finished, but no record could be generated
STATUS_CRASHED = "crashed"  # the run stopped before writing its results
STATUS_FAIL_FAST = "stopped_fail_fast"  # --fail-fast stopped the run at a record that still failed


@dataclass
class RunConfig:
    """Everything that decides a run. The CLI and the Python API both build one of these."""

    dataset: DatasetSpec
    task: str = "summarization"
    model: str | Runner | None = None  # a spec, or a runner built already (e.g. a wrapped fmeval ModelRunner)
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
    use_cache: bool = True  # reuse finished calls and scores from the run store (False: again, still store)
    metrics: tuple[str, ...] | None = None  # metric families; None: the task's
    retriever: RetrieverSpec | None = None  # a RAG system: retrieve context for each record, then generate
    outputs: PrecomputedOutputs | None = None  # outputs from another file, matched to the records by id
    ray: Any = None  # RaySettings: generate on a pool of Ray actors (evalkit.runners.ray_pool)


@dataclass(frozen=True)
class PrecomputedOutputs:
    """Outputs made elsewhere, by record id (a compare system with ``outputs:``)."""

    by_id: dict[str, str]
    source: dict[str, Any]  # {"path", "sha256", "output_field", "matched_by"}


def evaluate(config: RunConfig, *, metrics: list[Metric] | None = None) -> RunResult:
    """Load, generate, score, aggregate and write one run. ``metrics``: metrics built (and prepared on this
    dataset) already, shared by several runs (``evalkit compare``); by default the run builds its own."""
    started = time.perf_counter()
    task: Task = TASKS.get(config.task)
    if config.retriever is not None:
        from evalkit.rag.retriever import check_retriever

        if not config.model:
            raise UsageError("a retriever needs a model to generate from the retrieved context")
        check_retriever(config.retriever)
        template = config.retriever.template
    else:
        template = validate_template(config.prompt_template or task.prompt_template)
    if config.dataset.output_field is None and not config.model and config.outputs is None:
        raise UsageError("--model is required unless --output-field names outputs already in the dataset")
    if (config.dataset.output_field is not None or config.outputs is not None) and config.model:
        raise UsageError("give either --model (generate outputs) or --output-field (score outputs already "
                         "in the dataset), not both")
    if isinstance(config.model, str):
        from evalkit.runners.base import check_runner_spec

        check_runner_spec(config.model, config.runner)
    metric_options = _metric_options(config)
    if metrics is None:
        from evalkit.scoring.base import check_metrics

        check_metrics(_families(config, task), metric_options)
    if config.ray is not None:
        from evalkit.raycluster import check_cluster

        check_cluster(config.ray)
    data = load_dataset(config.dataset, skip_invalid=config.skip_invalid, max_samples=config.max_samples,
                        seed=config.seed, progress=config.progress)
    settings = run_settings(config, task, template, data, metric_options)
    output_dir = Path(config.output_dir or default_output_dir(config.task, model_spec(config) or "outputs"))
    prepare_output_dir(output_dir)
    with run_lock(output_dir):
        check_previous_run(output_dir, settings, overwrite=config.overwrite)
        return _run_recorded(config, task, template, data, settings, metric_options, output_dir, started, metrics)


def _run_recorded(config: RunConfig, task: Task, template: str, data: LoadedDataset, settings: dict[str, Any],
                  metric_options: dict[str, dict[str, Any]], output_dir: Path, started: float,
                  metrics: list[Metric] | None) -> RunResult:
    """:func:`_run`, with a crash written down in results.json before it is reported."""
    from evalkit.runners.executor import FailFast

    try:
        return _run(config, task, template, data, settings, metric_options, output_dir, started, metrics)
    except Exception as exc:
        if isinstance(exc, AllRecordsFailed):
            raise  # the run finished and wrote its results: not a crash
        if isinstance(exc, EvalkitError) and exc.exit_code != EXIT_RUNTIME:
            raise  # e.g. a model that cannot be loaded after all: the error says what to do
        if isinstance(exc, FailFast):
            _write_crash(output_dir, settings, exc, started, status=STATUS_FAIL_FAST)
            raise RuntimeFailure(f"{exc} (the run stopped; finished calls are kept in the run store: re-run to "
                                 "resume)") from None
        _write_crash(output_dir, settings, exc, started)
        what = str(exc) if isinstance(exc, EvalkitError) else f"{type(exc).__name__}: {exc}"
        raise RuntimeFailure(f"the run crashed: {what[:ERROR_CHARS]} (recorded in {output_dir / RESULTS_FILE}; "
                             "finished generations are kept: re-run to resume)") from exc


def _run(config: RunConfig, task: Task, template: str, data: LoadedDataset, settings: dict[str, Any],
         metric_options: dict[str, dict[str, Any]], output_dir: Path, started: float,
         metrics: list[Metric] | None) -> RunResult:
    with contextlib.ExitStack() as cleanup:  # metric processes end with the run, however it ends
        return _run_stages(config, task, template, data, settings, metric_options, output_dir, started, metrics,
                           cleanup)


def _metrics_to_score(config: RunConfig, task: Task, data: LoadedDataset, metric_options: dict[str, dict[str, Any]],
                      timings: dict[str, float], cleanup: contextlib.ExitStack) -> list[Metric | MetricToBuild]:
    """The run's metrics, in order. A run that generates builds them all now, so a model that will not load is
    found before the hour of generation. A run over outputs already there builds each when its turn comes (the
    lexical ones score within seconds of start), and starts every model metric at once in a process of its own
    (:mod:`evalkit.scoring.child_process`), so torch, transformers and the model load on the other core
    meanwhile; with ``--ray`` the workers hold the models instead."""
    from evalkit.scoring.base import METRICS, DatasetView

    to_score: list[Metric | MetricToBuild] = []
    for name in _families(config, task):
        options = metric_options.get(name, {})
        if not config.model and config.ray is None and METRICS.get(name).loads_model:
            from evalkit.scoring.child_process import MetricProcess

            try:
                child = MetricProcess(name, options, DatasetView(data.all_references, data.all_inputs))
            except OSError:  # no process could be started here: build it in this one when its turn comes
                to_score.append(MetricToBuild(name, options, data, config.progress))
                continue
            cleanup.callback(child.close)
            to_score.append(child)
        else:
            to_score.append(MetricToBuild(name, options, data, config.progress))
    if config.model:
        to_score = [m.build(timings) if isinstance(m, MetricToBuild) else m for m in to_score]
    return to_score


def _run_stages(config: RunConfig, task: Task, template: str, data: LoadedDataset, settings: dict[str, Any],
                metric_options: dict[str, dict[str, Any]], output_dir: Path, started: float,
                metrics: list[Metric] | None, cleanup: contextlib.ExitStack) -> RunResult:
    timings: dict[str, float] = {}
    if (age := process_age()) is not None:
        timings["startup_s"] = age  # interpreter start, imports and the checks, up to now
    to_score: list[Metric | MetricToBuild] = list(metrics) if metrics is not None else \
        _metrics_to_score(config, task, data, metric_options, timings, cleanup)

    retrieved, retrieval_info = _retrieve(config, data.samples, timings)
    prompts = _prompts(template, data.samples, retrieved)
    runner_info: dict[str, Any] | None = None
    if config.model:
        gen = _generate(config, data.samples, prompts, template, output_dir)
        calls: list[Result | None] = list(gen.results)
        runner_info = gen.info
        timings.update(gen.timings)
        outputs = [r.text if r.error is None else None for r in gen.results]
        errors = [r.error for r in gen.results]
    else:
        calls = [None] * len(data.samples)
        if config.outputs is not None:
            outputs = [config.outputs.by_id.get(s.id) for s in data.samples]
            errors = [None if o is not None else f"no precomputed output for record '{s.id}'"
                      for s, o in zip(data.samples, outputs, strict=True)]
        else:
            outputs = [s.model_output for s in data.samples]
            errors = [None] * len(outputs)

    elsewhere = None
    if config.ray is not None:
        from evalkit.scoring.base import DatasetView
        from evalkit.scoring.on_ray import RayScoring

        elsewhere = RayScoring(config.ray, metric_options, DatasetView(data.all_references, data.all_inputs))
    ahead: list[Any] = []  # the thread working ahead (imports, histograms), started when this process waits
    scored = score_records(to_score, data.samples, outputs, errors, config.progress, output_dir=output_dir,
                           retrieved=retrieved, elsewhere=elsewhere, reuse=config.use_cache, timings=timings,
                           while_waiting=lambda done: ahead.append(_work_ahead(config.write_report, done)))
    for thread in ahead:  # done by now, as a rule; joined so no import ever runs on two threads at once
        thread.join()
    metrics = scored.metrics
    children = [m for m in metrics if getattr(m, "runs_elsewhere", False)]  # evalkit.scoring.child_process
    for child in children:  # its load ran alongside; scoring_* includes any wait for it
        timings[f"load_{child.name}_s"] = child.built_s()
    scores, score_errors = scored.scores, scored.errors
    records = [_record(*row) for row in zip(data.samples, prompts, outputs, errors, scores, score_errors, calls,
                                            scored.explanations, retrieved or [None] * len(data.samples),
                                            strict=True)]
    truncated = [c.truncated if c is not None else None for c in calls]
    summaries = {}
    for metric in metrics:
        for column in metric.columns:
            values = [sc.get(column) for sc in scores]
            # a declared proportion column gets Wilson's interval when its values are 0/1 (retrieval recall
            # with one gold passage per record); other values, Student's t clipped to the metric's range
            proportion = column in metric.proportions and all(v in (0.0, 1.0) for v in values if v is not None)
            bounds = metric.value_range(column)
            summary = summarize(values, errors=sum(v is None for v in values), proportion=proportion,
                                bounds=bounds).to_dict()
            summary["range"] = list(bounds)
            summary["higher_is_better"] = metric.higher_is_better(column)
            if proportion:
                summary["ci_method"] = "wilson"
            summaries[column] = summary
    for child in children:  # everything they answer is in hand: they exit while the files are written
        child.stop()
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
        "model": model_spec(config),
        "output_field": config.dataset.output_field,
        "dataset": data.metadata(),
        "prompt_template": template if config.model else None,
        "metric_settings": scored.settings,
        "scoring_calls": scored.calls or None,
        "scoring_store": scored.stored or None,
        "runner": runner_info,
        "outputs": config.outputs.source if config.outputs is not None else None,
        "retriever": retrieval_info,
        "judge_agreement": _judge_agreement(data.samples, scores),
        "seed": config.seed,
        "max_samples": config.max_samples,
        "counts": counts,
        "invalid_records": [r.to_dict() for r in data.invalid],
        "outcome": outcome,
        "run_settings": settings,
        "run_fingerprint": fingerprint(settings, length=16),
        "timings": timings,
        "versions": _versions(),
        "created_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if runner_info is not None:
        results["generation"] = {**runner_info["generation"], "identity_changed": runner_info["identity_changed"]}
    start = time.perf_counter()
    atomic_write_jsonl(output_dir / RECORDS_FILE, records)
    timings["writing_s"] = round(time.perf_counter() - start, 3)  # records.jsonl; results.json follows at once
    atomic_write_json(output_dir / RESULTS_FILE, results)
    if config.write_report:  # after the results files: a report that fails or is slow never holds them back
        from evalkit.reports.html import write_report

        write_report(output_dir / REPORT_FILE, results, records)
    if outcome["status"] == STATUS_ALL_FAILED:
        raise AllRecordsFailed(f"{outcome['message']} (results.json and records.jsonl in {output_dir} keep the "
                               "errors; not a crash)")
    return RunResult(output_dir, results, records)


# ------------------------------------------------------------------------------------------------
# what decides a run, and the output directory


@dataclass
class MetricToBuild:
    """A metric built (and prepared on the dataset) only when it is its turn to score, so a run over outputs
    already there has its first scores (ROUGE's) while the metrics that load models have not loaded yet."""

    name: str
    options: dict[str, Any]
    data: LoadedDataset
    progress: bool = False

    def build(self, timings: dict[str, float]) -> Metric:
        from evalkit.scoring.base import METRICS, RUNNER

        start = time.perf_counter()
        kind = METRICS.get(self.name)
        loads = kind.loads_model or RUNNER in kind.needs  # lexical metrics import no model library to silence
        with quiet_library_progress(not self.progress and loads):
            (metric,) = build_metrics([self.name], {self.name: self.options})
        prepare_metrics([metric], self.data)
        spent = round(time.perf_counter() - start, 3)
        timings[f"load_{self.name}_s"] = spent
        timings["metrics_load_s"] = round(timings.get("metrics_load_s", 0.0) + spent, 3)
        return metric


def prepare_metrics(metrics: Sequence[Metric], data: LoadedDataset) -> None:
    """Each metric's once-per-dataset state, from every valid record (before --max-samples)."""
    from evalkit.scoring.base import DatasetView

    view = DatasetView(references=data.all_references, inputs=data.all_inputs)
    for metric in metrics:
        metric.prepare(view)


def _retrieve(config: RunConfig, samples: list[Sample],
              timings: dict[str, float]) -> tuple[list[list[Any]] | None, dict[str, Any] | None]:
    """Each record's retrieved chunks (RAG systems), and what the retriever was."""
    if config.retriever is None:
        return None, None
    from evalkit.rag.retriever import Retriever

    start = time.perf_counter()
    with quiet_library_progress(not config.progress):
        retriever = Retriever(config.retriever, device=config.runner.device or "auto", progress=config.progress)
    timings["index_s"] = round(time.perf_counter() - start, 3)
    start = time.perf_counter()
    retrieved = retriever.search([s.model_input or "" for s in samples])
    timings["retrieval_s"] = round(time.perf_counter() - start, 3)
    return retrieved, {**retriever.describe(), "index_built_s": retriever.built_s,
                       "index_reused": retriever.built_s is None}


def _prompts(template: str, samples: list[Sample], retrieved: list[list[Any]] | None) -> list[str | None]:
    if retrieved is None:
        return [render_prompt(template, s.model_input) if s.model_input is not None else None for s in samples]
    from evalkit.data.prompts import render_fields
    from evalkit.rag.retriever import render_context

    return [render_fields(template, {"context": render_context(chunks), "question": s.model_input or "",
                                     "model_input": s.model_input or ""})
            for s, chunks in zip(samples, retrieved, strict=True)]


def _judge_agreement(samples: list[Sample], scores: list[dict[str, float]]) -> dict[str, Any] | None:
    """The judge's agreement with the dataset's human scores, when both are there."""
    if not any(s.human_score is not None for s in samples) or not any("judge" in sc for sc in scores):
        return None
    from evalkit.statistics.agreement import agreement

    return agreement([sc.get("judge") for sc in scores], [s.human_score for s in samples]).to_dict()


def model_spec(config: RunConfig) -> str | None:
    """The model as text: the spec given, or the spec of the runner given."""
    return config.model.spec if isinstance(config.model, Runner) else config.model


def _families(config: RunConfig, task: Task) -> tuple[str, ...]:
    return config.metrics or task.metrics


def _metric_options(config: RunConfig) -> dict[str, dict[str, Any]]:
    """Options of the metric families this run uses (BERTScore on the runner's device unless told)."""
    families = _families(config, TASKS.get(config.task))
    options = {name: dict(opts) for name, opts in config.metric_options.items() if name in families}
    if "bertscore" in families:
        options.setdefault("bertscore", {}).setdefault("device", config.runner.device or "auto")
    return options


def run_settings(config: RunConfig, task: Task, template: str, data: LoadedDataset,
                 metric_options: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Everything that decides a run's numbers (not how fast or where they are written)."""
    spec = config.dataset
    settings: dict[str, Any] = {
        "task": task.name,
        "dataset": {"sha256": data.sha256, "format": data.format, "input_field": spec.input_field,
                    "target_field": spec.target_field, "output_field": spec.output_field, "id_field": spec.id_field,
                    "target_delimiter": spec.target_delimiter, "split": spec.split,
                    "gold_field": spec.gold_field, "human_score_field": spec.human_score_field},
        "max_samples": config.max_samples,
        "seed": config.seed,
        "skip_invalid": config.skip_invalid,
        "metric_families": list(_families(config, task)),
        "metrics": {name: {k: v for k, v in opts.items() if k not in ("device", "batch_size")}
                    for name, opts in sorted(metric_options.items())},
        "model": model_spec(config),
    }
    if config.model:
        settings["generation"] = generation_settings(config, template)
    if config.outputs is not None:
        settings["outputs"] = config.outputs.source
    if config.retriever is not None:
        from evalkit.data.dataset import dataset_sha256

        settings["retriever"] = {**config.retriever.to_dict(), "documents": None,
                                 "documents_sha256": dataset_sha256(Path(config.retriever.documents))}
    return settings


def generation_settings(config: RunConfig, template: str) -> dict[str, Any]:
    """The generation options that decide outputs (not how fast they come: concurrency, retries, timeouts)."""
    options = config.runner
    return {"model": model_spec(config), "template": template, "max_new_tokens": options.max_new_tokens,
            "use_chat_template": options.use_chat_template, "dtype": options.dtype, "device": options.device,
            "truncate": config.truncate, "temperature": options.temperature, "top_p": options.top_p,
            "stop_sequences": list(options.stop_sequences), "system_prompt": options.system_prompt,
            "backend": options.backend}


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            out.extend(_differences(old.get(key), new.get(key), f"{prefix}{key}."))
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]


def prepare_output_dir(output_dir: Path) -> None:
    """Create ``output_dir`` and check it is a writable directory (exit 2 otherwise)."""
    where = f"--output-dir {output_dir}"
    if output_dir.exists() and not output_dir.is_dir():
        raise UsageError(f"{where} exists and is not a directory")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_dir):
            pass
    except OSError as exc:
        raise UsageError(f"{where} is not writable ({exc.strerror or exc})") from None


def check_previous_run(output_dir: Path, settings: dict[str, Any], *, overwrite: bool = False) -> None:
    """Refuse to overwrite a finished run made with other settings (naming what differs) unless ``overwrite``.
    A crashed run's results.json is not finished work. Generations of other settings or models are never at
    risk: the run store keys every call on what decided it."""
    previous = _read_json(output_dir / RESULTS_FILE)
    if overwrite or previous is None:
        return
    status = (previous.get("outcome") or {}).get("status") if isinstance(previous, dict) else None
    old = previous.get("run_settings") if isinstance(previous, dict) else None
    unfinished = status in (STATUS_CRASHED, STATUS_FAIL_FAST)
    if not unfinished and previous.get("run_fingerprint") != fingerprint(settings, length=16):
        diff = _differences(old, settings) if isinstance(old, dict) else []
        what = "; ".join(diff[:4]) + ("; ..." if len(diff) > 4 else "") if diff else \
            "it records no settings to compare"
        raise UsageError(f"--output-dir {output_dir} holds a finished run made with other settings ({what}); pass "
                         "--overwrite to replace it, or choose another --output-dir")


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


def _write_crash(output_dir: Path, settings: dict[str, Any], exc: BaseException, started: float,
                 status: str = STATUS_CRASHED) -> None:
    """results.json of a run that stopped: what crashed, with which settings (best effort)."""
    code = exc.exit_code if isinstance(exc, EvalkitError) else EXIT_RUNTIME
    results = {"metrics": {}, "outcome": {"status": status, "exit_code": code,
                                          "message": f"{type(exc).__name__}: {str(exc)[:ERROR_CHARS]}"},
               "run_settings": settings, "run_fingerprint": fingerprint(settings, length=16),
               "timings": {"total_s": round(time.perf_counter() - started, 3)}, "versions": _versions(),
               "created_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    with contextlib.suppress(OSError, ValueError):
        atomic_write_json(output_dir / RESULTS_FILE, results)


# ------------------------------------------------------------------------------------------------
# generate


@dataclass
class Generated:
    results: list[Result]
    info: dict[str, Any]  # the runner's metadata, with what was reused and generated
    timings: dict[str, float]


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:ERROR_CHARS]


def _generate(config: RunConfig, samples: list[Sample], prompts: list[str | None], template: str,
              output_dir: Path) -> Generated:
    """Every record through the executor and the run store: finished calls of the same runner identity,
    parameters and prompt are reused; the rest are generated, each stored as it returns."""
    from evalkit.hashing import fingerprint
    from evalkit.runners.base import Request, create_runner
    from evalkit.runners.executor import ExecutionStats, execute
    from evalkit.runners.store import RunStore

    timings: dict[str, float] = {}
    start = time.perf_counter()
    options = replace(config.runner, progress=False, seed=config.seed, truncate=config.truncate)
    if config.ray is not None:
        from evalkit.runners.ray_pool import RayPool
    if isinstance(config.model, Runner):
        runner = config.model
    elif config.ray is not None:
        runner = RayPool(config.model, options, config.ray)
    else:
        with quiet_library_progress(not config.progress):
            runner = create_runner(config.model, options)
    timings["model_load_s"] = round(time.perf_counter() - start, 3)
    identity = runner.identity()
    identity_fp = fingerprint(identity)
    requests = [Request(id=s.id, prompt=p, model_input=s.model_input, template=template)
                for s, p in zip(samples, prompts, strict=True)]
    stats = ExecutionStats()
    start = time.perf_counter()
    try:
        with RunStore(output_dir) as store:
            earlier = store.other_identities(runner.spec, identity_fp)
            results = execute(runner, requests, store=store, use_cache=config.use_cache, progress=config.progress,
                              stats=stats)
            describe = runner.describe()
            store.remember_runner(runner.spec, identity_fp, identity, describe)
    finally:
        if config.ray is not None and isinstance(runner, RayPool):
            runner.close()  # the actors (and their models) go as soon as generation ends: scoring needs the CPUs
    timings["generation_s"] = round(time.perf_counter() - start, 3)
    changed = None
    if earlier:
        changed = (f"{runner.spec} now resolves to another model than the one that made {len(earlier)} earlier "
                   f"set(s) of generations in this directory (identity {identity_fp[:12]} vs "
                   f"{earlier[0]['fingerprint'][:12]}): its records were generated again, the earlier ones kept")
    info = {**describe, "identity_fingerprint": identity_fp, "identity_changed": changed,
            "resumed_records": stats.reused, "generation": stats.to_dict(), "store": "calls.sqlite"}
    return Generated(results, info, timings)


# ------------------------------------------------------------------------------------------------
# score


def metric_items(samples: Sequence[Sample], outputs: Sequence[str],
                 retrieved: Sequence[Sequence[Any] | None] | None = None) -> list[Item]:
    """What metrics may read about each record (``retrieved``: each record's chunks, for RAG systems)."""
    retrieved = retrieved if retrieved is not None else [None] * len(samples)
    return [Item(output, s.references, s.model_input,
                 tuple(r.chunk.text for r in chunks) if chunks is not None else None,
                 tuple(r.chunk.id for r in chunks) if chunks is not None else None, s.gold)
            for s, output, chunks in zip(samples, outputs, retrieved, strict=True)]


@dataclass
class Scored:
    """Per record: column -> value, column -> error, column -> explanation; and what the metrics were."""

    scores: list[dict[str, float]]
    errors: list[dict[str, str]]
    explanations: list[dict[str, str]]
    settings: dict[str, Any]
    timings: dict[str, float]
    calls: dict[str, dict[str, int]] = field(default_factory=dict)  # model calls of metrics that make them
    stored: dict[str, dict[str, int]] = field(default_factory=dict)  # per metric: scores reused, records scored
    metrics: list[Metric] = field(default_factory=list)  # the metrics that scored, built


def score_records(metrics: Sequence[Metric | MetricToBuild], samples: Sequence[Sample],
                  outputs: Sequence[str | None], errors: Sequence[str | None], progress: bool,
                  retrieved: Sequence[Sequence[Any] | None] | None = None, output_dir: Path | None = None,
                  elsewhere: Any = None, reuse: bool = True, timings: dict[str, float] | None = None,
                  while_waiting: Callable[[Scored], None] | None = None) -> Scored:
    """Score every record whose generation succeeded, with every metric, chunk by chunk
    (:mod:`evalkit.scoring.chunks`); a :class:`MetricToBuild` is built when its turn comes. With ``output_dir``
    every chunk's scores and every call of a metric that calls a model (a judge) are kept in its run store, so
    a re-run reuses them. ``elsewhere`` scores the chunks on Ray (:class:`~evalkit.scoring.on_ray.RayScoring`);
    ``reuse=False`` scores stored records again. ``timings`` gets each metric's load and scoring seconds, and
    ``first_score_s``: the process's age when the first scores were in. ``while_waiting`` is called once, with
    the scores so far, when every metric left scores in a process of its own: this one only waits from then on."""
    from evalkit.runners.store import RunStore

    timings = timings if timings is not None else {}
    ok = [i for i, e in enumerate(errors) if e is None]
    retrieved = retrieved if retrieved is not None else [None] * len(samples)
    items = metric_items([samples[i] for i in ok], [outputs[i] or "" for i in ok], [retrieved[i] for i in ok])
    ids = [samples[i].id for i in ok]
    scored = Scored([{} for _ in samples], [{} for _ in samples], [{} for _ in samples], {}, timings)
    with RunStore(output_dir) if output_dir is not None else contextlib.nullcontext() as store:
        for position, entry in enumerate(metrics):
            if while_waiting is not None and all(getattr(m, "runs_elsewhere", False) for m in metrics[position:]):
                while_waiting(scored)  # from here on this process only waits on metric processes
                while_waiting = None
            metric = entry.build(timings) if isinstance(entry, MetricToBuild) else entry
            scored.metrics.append(metric)
            metric.use_store(store)
            _score_metric(metric, items, ids, ok, scored, progress, store, elsewhere, reuse)
    timings["scoring_s"] = round(sum(v for k, v in timings.items() if k.startswith("scoring_")
                                     and k != "scoring_s"), 3)
    metrics = scored.metrics
    scored.settings = {m.name: m.settings() for m in metrics}
    scored.calls = {m.name: stats for m in metrics if (stats := m.call_stats()) is not None}
    return scored


def _score_metric(metric: Metric, items: list[Item], ids: list[str], ok: list[int], scored: Scored, progress: bool,
                  store: Any, elsewhere: Any, reuse: bool) -> None:
    from evalkit.scoring.chunks import score_metric

    start = time.perf_counter()
    counts = scored.stored.setdefault(metric.name, {"reused": 0, "scored": 0})

    def first_scores_in() -> None:
        if "first_score_s" not in scored.timings and (age := process_age()) is not None:
            scored.timings["first_score_s"] = age

    for column, column_scores in score_metric(metric, items, ids, store=store, progress=progress,
                                              elsewhere=elsewhere, counts=counts, reuse=reuse,
                                              on_chunk=first_scores_in).items():
        for position, i in enumerate(ok):
            score = column_scores[position]
            if score.error is not None:
                scored.errors[i][column] = score.error
            else:
                scored.scores[i][column] = score.value
            if score.explanation is not None:
                scored.explanations[i][column] = score.explanation
    scored.timings[f"scoring_{metric.name}_s"] = round(time.perf_counter() - start, 3)


def _work_ahead(report: bool, done: Scored) -> Any:
    """Do what the run needs once every score is in, as far as it can be done now, on a background thread
    (returned, started) while this process waits on a metric process (blocked in a pipe read, which releases
    the GIL): import scipy.stats for the summaries, and for the report jinja2 and matplotlib, then draw the
    histograms of the columns already scored (``done``'s, copied here, before the thread starts). Measured: the
    imports about 0.5 s less from the last score to the exit (4 runs each way); the drawing, on a 2-core AVX2
    EPYC, no gain when BERTScore scores afresh (the drawing then shares the cores with its forward), 1.2 s less
    (medians of 5 runs each way) when its scores come from the run store and the wait is its process's start-up.
    An import or drawing that fails here is done again, with its message, where it is needed."""
    import threading

    columns: dict[str, list[Any]] = {}
    if report:
        for name in dict.fromkeys(column for row in done.scores for column in row):
            columns[name] = [row.get(name) for row in done.scores]

    def work() -> None:
        with contextlib.suppress(Exception):
            import scipy.stats  # noqa: F401
            if report:
                import jinja2  # noqa: F401
                import matplotlib.backends.backend_agg  # noqa: F401
                import matplotlib.figure  # noqa: F401

                from evalkit.reports.html import prerender_histograms

                prerender_histograms(columns)

    thread = threading.Thread(target=work, name="evalkit-work-ahead", daemon=True)
    thread.start()
    return thread


# ------------------------------------------------------------------------------------------------
# aggregate and write


def _record(sample: Sample, prompt: str | None, output: str | None, error: str | None, scores: dict[str, float],
            score_errors: dict[str, str], call: Result | None, explanations: dict[str, str],
            retrieved: list[Any] | None) -> dict[str, Any]:
    refs = sample.references
    record = {"id": sample.id, "model_input": sample.model_input,
              "prompt": (call.sent_prompt if call is not None and call.sent_prompt else prompt),
              "model_output": output, "target_output": refs[0] if len(refs) == 1 else list(refs), "scores": scores,
              "error": error, "score_errors": score_errors, "truncated": call.truncated if call is not None else None}
    if explanations:
        record["explanations"] = explanations
    if retrieved is not None:
        record["retrieved"] = [r.to_dict() for r in retrieved]
    if sample.gold is not None:
        record["gold"] = list(sample.gold)
    if sample.human_score is not None:
        record["human_score"] = sample.human_score
    if call is not None:
        record["generation"] = {"error_kind": call.error_kind, "finish_reason": call.finish_reason,
                                "usage": call.usage, "latency_s": call.latency_s, "attempts": call.attempts,
                                "cached": call.cached}
    return record


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
