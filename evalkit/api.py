"""The Python API for notebooks: the same options as ``evalkit run``, returning a ``RunResult``
(``.metrics``, ``.to_pandas()``, ``.metrics_frame()``, ``.output_dir``)."""

from __future__ import annotations

from evalkit.dataset import DatasetSpec
from evalkit.pipeline import RunConfig, evaluate
from evalkit.results import RunResult
from evalkit.runners.base import RunnerOptions
from evalkit.tasks import TASKS


def evaluate_summarization(
    dataset: str,
    model: str | None = None,
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
    batch_size: int = 8,
    max_new_tokens: int = 64,
    device: str = "auto",
    dtype: str = "auto",
    use_chat_template: bool = True,
    bertscore_model: str | None = None,
    bertscore_layer: int | None = None,
    bertscore_idf: bool = False,
    bertscore_rescale: bool = False,
    bertscore_baseline_path: str | None = None,
    progress: bool = True,
    write_report: bool = True,
    truncate: bool = False,
    overwrite: bool = False,
) -> RunResult:
    """Summarization accuracy (ROUGE-1/2/L, METEOR, BERTScore) of ``model`` on ``dataset``.

    Pass ``output_field`` instead of ``model`` to score outputs already in the dataset. ``truncate`` cuts
    the input of a prompt too long for the model's context (else that record is an error); ``overwrite``
    replaces a finished run of other settings in ``output_dir`` (else it is refused).
    """
    task = TASKS.get("summarization")
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
        runner=RunnerOptions(batch_size=batch_size, max_new_tokens=max_new_tokens, device=device,
                             dtype=dtype, use_chat_template=use_chat_template, seed=seed, progress=progress),
        metric_options={"bertscore": {"model": bertscore_model, "num_layers": bertscore_layer,
                                      "idf": bertscore_idf, "rescale_with_baseline": bertscore_rescale,
                                      "baseline_path": bertscore_baseline_path, "batch_size": 64}},
        progress=progress,
        write_report=write_report,
        truncate=truncate,
        overwrite=overwrite,
    )
    return evaluate(config)
