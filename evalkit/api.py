"""The Python API for notebooks: the same options as ``evalkit run``, returning a ``RunResult``
(``.metrics``, ``.to_pandas()``, ``.metrics_frame()``, ``.output_dir``)."""

from __future__ import annotations

from typing import Any

from evalkit.data.dataset import DatasetSpec
from evalkit.pipeline import RunConfig, evaluate
from evalkit.results import RunResult
from evalkit.runners.base import Runner, RunnerOptions
from evalkit.tasks import TASKS


def evaluate_summarization(dataset: str, model: str | Runner | None = None, **options: Any) -> RunResult:
    """Summarization accuracy (ROUGE-1/2/L, METEOR, BERTScore) of ``model`` on ``dataset``; see
    :func:`evaluate_task` for the options."""
    return evaluate_task("summarization", dataset, model, **options)


def evaluate_qa(dataset: str, model: str | Runner | None = None, **options: Any) -> RunResult:
    """Question answering (semantic similarity, ROUGE, METEOR, BERTScore, refusal rate) of ``model`` on
    ``dataset`` (fields ``question`` and ``answer`` by default); see :func:`evaluate_task` for the options."""
    return evaluate_task("qa", dataset, model, **options)


def evaluate_task(
    task_name: str,
    dataset: str,
    model: str | Runner | None = None,
    *,
    input_field: str | None = None,
    target_field: str | None = None,
    output_field: str | None = None,
    id_field: str = "id",
    target_delimiter: str | None = None,
    split: str | None = None,
    prompt_template: str | None = None,
    max_samples: int | None = None,
    seed: int = 0,
    output_dir: str | None = None,
    skip_invalid: bool = False,
    batch_size: int | None = None,
    max_new_tokens: int | None = None,
    device: str | None = None,
    dtype: str | None = None,
    use_chat_template: bool | None = None,
    model_config: str | None = None,
    runner_options: RunnerOptions | None = None,
    bertscore_model: str | None = None,
    bertscore_layer: int | None = None,
    bertscore_idf: bool = False,
    bertscore_rescale: bool = False,
    bertscore_baseline_path: str | None = None,
    progress: bool = True,
    write_report: bool = True,
    truncate: bool = False,
    overwrite: bool = False,
    use_cache: bool = True,
    metrics: tuple[str, ...] | list[str] | None = None,
    metric_options: dict[str, dict[str, Any]] | None = None,
    ray: Any = None,
    **call_options: Any,
) -> RunResult:
    """Evaluate ``model`` on ``dataset`` for the task ``task_name`` (``summarization`` or ``qa``).

    Pass ``output_field`` instead of ``model`` to score outputs already in the dataset. ``truncate`` cuts
    the input of a prompt too long for the model's context (else that record is an error); ``overwrite``
    replaces a finished run of other settings in ``output_dir`` (else it is refused); ``use_cache=False``
    calls the model and scores again for records the run store holds. ``metric_options`` gives options per metric
    family, e.g. ``{"judge": {"model": "hf:smollm2"}, "semantic_similarity": {"model": "path/to/embedder"}}``.

    Runner options come from ``runner_options`` (a ready :class:`RunnerOptions`), or are built from
    ``model_config`` (a YAML file, see :mod:`evalkit.runners.config`), the arguments above and
    ``call_options`` -- any other :class:`RunnerOptions` field, e.g. ``concurrency=8, max_rps=5,
    temperature=0.2, backend={"content_template": ...}``.

    ``ray``: an :class:`evalkit.raycluster.RaySettings` (address, workers, CPUs and GPUs per worker) runs
    generation and scoring on a Ray cluster, with the same records (``evalkit run --ray``).
    """
    task = TASKS.get(task_name)
    if runner_options is None:
        from evalkit.runners.config import build_runner_options

        spec, runner_options = build_runner_options(
            model_config, batch_size=batch_size, max_new_tokens=max_new_tokens, device=device, dtype=dtype,
            use_chat_template=use_chat_template, seed=seed, progress=progress, truncate=truncate or None,
            **call_options)
        model = model or spec
    config = RunConfig(
        task=task.name,
        model=model,
        dataset=DatasetSpec(path=str(dataset), input_field=input_field or task.input_field,
                            target_field=target_field or task.target_field, output_field=output_field,
                            id_field=id_field, target_delimiter=target_delimiter, split=split),
        prompt_template=prompt_template,
        max_samples=max_samples,
        seed=seed,
        output_dir=output_dir,
        skip_invalid=skip_invalid,
        runner=runner_options,
        metric_options={"bertscore": {"model": bertscore_model, "num_layers": bertscore_layer,
                                      "idf": bertscore_idf, "rescale_with_baseline": bertscore_rescale,
                                      "baseline_path": bertscore_baseline_path, "batch_size": 64},
                        **(metric_options or {})},
        progress=progress,
        write_report=write_report,
        truncate=truncate or runner_options.truncate,
        overwrite=overwrite,
        use_cache=use_cache,
        metrics=tuple(metrics) if metrics else None,
        ray=ray,
    )
    return evaluate(config)
