"""``evalkit compare``: run every system on one question set, score them the same way, compare them.

The data path: check everything (config, dataset, runners, retrievers, precomputed outputs, metrics, rules)
before any model loads -> build the metrics once and prepare them once on the dataset (reference embeddings,
BERTScore idf) -> run each system through the same pipeline as ``evalkit run`` into ``OUTPUT_DIR/systems/<name>/``
(runners of the same model and settings are loaded once and shared) -> pair the systems' records by id ->
per-system summaries, all pairwise comparisons (Holm across pairs and metrics), the ``require`` rules ->
``comparison.json``, ``report.html``, and optionally JUnit XML and a Markdown summary.

Resumable: each system's run directory keeps its run store (generations and judgements), so a re-run after an
interruption, or with one system changed, calls models only for what has not been produced with the same
model, settings and prompt.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalkit.compare.config import CompareConfig, SystemSpec
from evalkit.compare.pairwise import (
    FAIL,
    RuleResult,
    SystemRun,
    check_rules,
    compare_all,
    parse_rule,
    system_summary,
    verdict_line,
    win_rates,
)
from evalkit.errors import EXIT_GATE_FAILED, EXIT_OK, AllRecordsFailed, UsageError

COMPARISON_FILE = "comparison.json"
SYSTEMS_DIR = "systems"
RETRIEVAL_FAMILY = "retrieval"


@dataclass
class PreparedSystem:
    spec: SystemSpec
    runner_spec: str | None = None
    options: Any = None  # RunnerOptions
    outputs: Any = None  # PrecomputedOutputs
    families: list[str] = field(default_factory=list)


@dataclass
class CompareResult:
    output_dir: Path
    comparison: dict[str, Any]
    rules: list[RuleResult]
    verdicts: list[str]

    @property
    def exit_code(self) -> int:
        return EXIT_GATE_FAILED if any(r.verdict == FAIL for r in self.rules) else EXIT_OK

    def systems_frame(self) -> Any:
        """pandas DataFrame: one row per system and metric (mean, ci95_low, ci95_high, n, errors)."""
        import pandas as pd

        rows = [{"system": name, "metric": metric, "mean": s.get("mean"),
                 "ci95_low": (s.get("ci95") or [None, None])[0], "ci95_high": (s.get("ci95") or [None, None])[1],
                 "n": s.get("n"), "errors": s.get("errors")}
                for name, summaries in self.comparison["systems"].items() for metric, s in summaries.items()]
        return pd.DataFrame(rows)

    def pairs_frame(self) -> Any:
        """pandas DataFrame: one row per pair of systems and metric (delta, CI, p, Holm p, wins/ties/losses)."""
        import pandas as pd

        rows = []
        for p in self.comparison["pairs"]:
            ci = p.get("ci95") or [None, None]
            rows.append({**{k: v for k, v in p.items() if k != "ci95"}, "ci95_low": ci[0], "ci95_high": ci[1]})
        return pd.DataFrame(rows)


def compare_systems(config: str | Path, *, output_dir: str | None = None, progress: bool = True) -> CompareResult:
    """``evalkit compare --config`` from Python: returns the comparison (``.comparison``, ``.systems_frame()``,
    ``.pairs_frame()``, ``.verdicts``, ``.rules``)."""
    from evalkit.compare.config import load_compare_config

    return run_compare(load_compare_config(config), output_dir=output_dir, progress=progress)


def metric_options(config: CompareConfig) -> dict[str, dict[str, Any]]:
    options: dict[str, dict[str, Any]] = {}
    if config.embedding_model:
        options["semantic_similarity"] = {"model": config.embedding_model}
        options["refusal"] = {"model": config.embedding_model}
    if config.bertscore:
        options["bertscore"] = dict(config.bertscore)
    if config.judge:
        options["judge"] = dict(config.judge)
    device = config.generation.get("device")
    if device:
        for name in ("semantic_similarity", "refusal", "bertscore"):
            options.setdefault(name, {})["device"] = device
    return options


def check_compare(config: CompareConfig, *, output_dir: str | None = None) -> tuple[Any, list[PreparedSystem],
                                                                                   list[str], list[str]]:
    """Everything that can fail before a model loads: (dataset, systems, metric families, report columns)."""
    from evalkit.data.dataset import load_dataset
    from evalkit.data.outputs import load_precomputed_outputs
    from evalkit.pipeline import PrecomputedOutputs
    from evalkit.rag.retriever import check_retriever
    from evalkit.runners.base import check_runner_spec
    from evalkit.runners.config import build_runner_options
    from evalkit.scoring.base import check_metrics, metric_columns

    if not (output_dir or config.output_dir):
        raise UsageError(f"{config.path}: no output_dir in the config; give one there or with --output-dir")
    for i, name in enumerate(config.metrics):
        try:
            metric_columns([name])
        except KeyError as exc:
            raise config.error(str(exc.args[0]), "metrics", i) from None
    families, columns = metric_columns(config.metrics)
    if "judge" in families and not (config.judge or {}).get("model"):
        raise config.error("metrics include judge: add judge: {model: <runner spec>} (e.g. hf:smollm2)",
                           "judge" if config.judge else "metrics")
    if config.judge and "judge" not in families:
        raise config.error("a judge is configured but 'judge' is not in metrics", "judge")
    options = metric_options(config)
    try:
        check_metrics(families, options)
    except UsageError as exc:
        raise UsageError(f"{config.path}: {exc}") from None
    data = load_dataset(config.dataset, max_samples=config.max_samples, seed=config.seed, progress=False)
    has_gold = config.dataset.gold_field is not None
    if has_gold and any(s.retriever for s in config.systems):
        columns += [c for c in ("retrieval_recall", "retrieval_mrr") if c not in columns]
    prepared = []
    for i, system in enumerate(config.systems):
        p = PreparedSystem(system, families=[f for f in families if f != RETRIEVAL_FAMILY])
        if system.retriever is not None and has_gold and RETRIEVAL_FAMILY not in p.families:
            p.families.append(RETRIEVAL_FAMILY)
        if system.model is not None:
            values = {**config.generation, **system.generation}
            _, p.options = build_runner_options(system.model_config, **values, seed=config.seed, progress=False)
            p.runner_spec = system.model
            try:
                check_runner_spec(system.model, p.options)
                if system.retriever is not None:
                    check_retriever(system.retriever)
                if system.prompt_template is not None and system.retriever is None:
                    from evalkit.data.prompts import validate_template

                    validate_template(system.prompt_template)
            except UsageError as exc:
                raise config.error(f"system '{system.name}': {exc}", "systems", i) from None
        else:
            by_id, source = load_precomputed_outputs(system.outputs, data.all_ids, output_field=system.output_field,
                                                     id_field=system.id_field)
            p.outputs = PrecomputedOutputs(by_id, source)
        prepared.append(p)
    names = {s.name for s in config.systems}
    for i, text in enumerate(config.require):
        try:
            rule = parse_rule(text)
        except UsageError as exc:
            raise config.error(str(exc), "require", i) from None
        for system in (rule.better, rule.worse):
            if system not in names:
                raise config.error(f"require rule {text!r}: no system named '{system}' (systems: "
                                   f"{', '.join(sorted(names))})", "require", i)
        if rule.metric not in columns:
            raise config.error(f"require rule {text!r}: '{rule.metric}' is not a compared metric (compared: "
                               f"{', '.join(columns)})", "require", i)
    return data, prepared, families, columns


def run_compare(config: CompareConfig, *, output_dir: str | None = None, progress: bool = True,
                ray: Any = None) -> CompareResult:
    """Run, score and compare every system; ``ray`` (RaySettings) generates and scores on Ray, with the same
    records as without it."""
    from evalkit.atomic import atomic_write_json
    from evalkit.pipeline import prepare_metrics, prepare_output_dir
    from evalkit.progress import quiet_library_progress
    from evalkit.runners.store import run_lock
    from evalkit.scoring.base import build_metrics

    started = time.perf_counter()
    data, prepared, families, columns = check_compare(config, output_dir=output_dir)
    if ray is not None:
        from evalkit.raycluster import check_cluster

        check_cluster(ray)
    out = Path(output_dir or config.output_dir)  # type: ignore[arg-type]
    prepare_output_dir(out)
    timings: dict[str, float] = {}
    with run_lock(out):
        start = time.perf_counter()
        all_families = list(dict.fromkeys([f for p in prepared for f in p.families]))
        with quiet_library_progress(not progress):
            metrics = dict(zip(all_families, build_metrics(all_families, metric_options(config)), strict=True))
        prepare_metrics(list(metrics.values()), data)
        timings["metrics_load_s"] = round(time.perf_counter() - start, 3)
        runs: list[SystemRun] = []
        system_results: dict[str, dict[str, Any]] = {}
        runners: dict[tuple[str, str], Any] = {}
        for p in prepared:
            start = time.perf_counter()
            result = _run_system(config, p, out, [metrics[f] for f in p.families], runners, progress, ray)
            timings[f"system_{p.spec.name}_s"] = round(time.perf_counter() - start, 3)
            runs.append(SystemRun(p.spec.name, {str(r["id"]): r for r in result.records}, result.results["metrics"]))
            system_results[p.spec.name] = result.results
        start = time.perf_counter()
        pairs = compare_all(runs, columns, on_error=config.on_error, seed=config.seed)
        rules = check_rules([parse_rule(t) for t in config.require], {r.name: r for r in runs}, alpha=config.alpha,
                            on_error=config.on_error, seed=config.seed)
        timings["statistics_s"] = round(time.perf_counter() - start, 3)
        verdicts = [verdict_line(p, config.alpha) for p in pairs]
        timings["total_s"] = round(time.perf_counter() - started, 3)
        comparison = _comparison(config, data, prepared, runs, system_results, columns, pairs, rules, verdicts,
                                 timings, out)
        atomic_write_json(out / COMPARISON_FILE, comparison)
        from evalkit.reports.compare_html import write_compare_report

        write_compare_report(out / "report.html", comparison, {r.name: list(r.records.values()) for r in runs})
    return CompareResult(out, comparison, rules, verdicts)


def _run_system(config: CompareConfig, p: PreparedSystem, out: Path, metrics: list[Any],
                runners: dict[tuple[str, str], Any], progress: bool, ray: Any = None):
    """One system through the pipeline of ``evalkit run``; runners of equal spec and options are shared."""
    from evalkit.pipeline import RunConfig, evaluate
    from evalkit.results import load_run
    from evalkit.runners.base import RunnerOptions, create_runner

    runner = None
    if p.runner_spec is not None:
        from evalkit.hashing import fingerprint

        key = (p.runner_spec, fingerprint(p.options.to_dict()))
        if key not in runners:
            from evalkit.progress import quiet_library_progress

            if ray is not None:
                from evalkit.runners.ray_pool import RayPool

                runners[key] = RayPool(p.runner_spec, p.options, ray)
            else:
                with quiet_library_progress(not progress):
                    runners[key] = create_runner(p.runner_spec, p.options)
        runner = runners[key]
    run_dir = out / SYSTEMS_DIR / p.spec.name
    run_config = RunConfig(
        dataset=config.dataset, task=config.task, model=runner, prompt_template=p.spec.prompt_template,
        max_samples=config.max_samples, seed=config.seed, output_dir=str(run_dir),
        runner=p.options if p.options is not None else RunnerOptions(progress=progress),
        metric_options=metric_options(config), progress=progress, write_report=True,
        truncate=bool(p.options.truncate) if p.options is not None else False, overwrite=True,
        metrics=tuple(p.families), retriever=p.spec.retriever, outputs=p.outputs, ray=ray)
    if progress:
        print(f"[{p.spec.name}] {p.spec.kind}: {p.runner_spec or p.spec.outputs}", flush=True)
    try:
        return evaluate(run_config, metrics=metrics)
    except AllRecordsFailed:
        return load_run(run_dir)  # every generation failed: its records (all errors) still count


def _comparison(config: CompareConfig, data: Any, prepared: list[PreparedSystem], runs: list[SystemRun],
                system_results: dict[str, dict[str, Any]], columns: list[str], pairs: list[Any],
                rules: list[RuleResult], verdicts: list[str], timings: dict[str, float], out: Path) -> dict[str, Any]:
    from evalkit import __version__

    systems: dict[str, dict[str, Any]] = {}
    details: dict[str, dict[str, Any]] = {}
    for p, run in zip(prepared, runs, strict=True):
        results = system_results[run.name]
        systems[run.name] = {c: system_summary(run, c, config.on_error) for c in columns if c in run.metrics}
        if "judge" in systems[run.name] and results.get("judge_agreement"):
            systems[run.name]["judge"]["agreement"] = results["judge_agreement"]
        details[run.name] = {
            "kind": p.spec.kind, "model": p.runner_spec, "outputs": p.spec.outputs,
            "run_dir": str(Path(SYSTEMS_DIR) / run.name), "identity": (results.get("runner") or {}).get("identity"),
            "retriever": results.get("retriever"), "counts": results.get("counts"),
            "generation": results.get("generation"), "outcome": results.get("outcome"),
        }
    return {
        "systems": systems,
        "pairs": [p.to_dict() for p in pairs],
        "require": [r.to_dict() for r in rules],
        "passed": all(r.verdict != FAIL for r in rules),
        "verdicts": verdicts,
        "win_rates": win_rates(pairs),
        "task": config.task,
        "metrics": columns,
        "dataset": data.metadata(),
        "system_details": details,
        "alpha": config.alpha,
        "on_error": config.on_error,
        "seed": config.seed,
        "max_samples": config.max_samples,
        "statistics": ("pairs: mean paired difference a - b with Student-t 95% CI; two-sided sign-flip permutation "
                       "test below 100 pairs (exact up to 13), paired t-test from 100, exact McNemar for 0/1 "
                       "metrics; Holm across all pairs and metrics. require: one-sided tests, Holm across rules."),
        "config": str(config.path),
        "timings": timings,
        "evalkit_version": __version__,
        "created_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def rules_as_gate(result: CompareResult):
    """The require rules as a GateResult, for the terminal table, JUnit XML and the Markdown summary."""
    from evalkit.gate.checks import GateCheck, GateResult

    checks = []
    for r in result.rules:
        checks.append(GateCheck(
            r.rule.text, "require", r.rule.metric, r.rule.text, r.rule.shift, r.verdict, r.message,
            baseline=r.worse_mean, candidate=r.better_mean, delta=r.delta, ci95=r.ci95, p_value=r.p, n=r.n,
            p_adjusted=r.p_holm, method=r.test, errors=r.errors))
    comparison = result.comparison
    about = (f"{len(comparison['systems'])} systems ({', '.join(comparison['systems'])}) on "
             f"{comparison['dataset'].get('n_records')} records of {comparison['dataset'].get('path')}; alpha "
             f"{comparison['alpha']:g}, Holm across require rules; errored records: {comparison['on_error']}")
    return GateResult(checks, alpha=comparison["alpha"], seed=comparison["seed"], on_error=comparison["on_error"],
                      title="compare", about=about, candidate=str(result.output_dir))
