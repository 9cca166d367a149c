"""fmeval interop, both ways, and fmeval's summarization metrics offline.

* :class:`EvalkitModelRunner` is a real subclass of fmeval's ``ModelRunner``: any evalkit runner (``hf:``,
  ``bedrock:``, ``sagemaker:`` ...) drives fmeval's evaluations. ``predict(prompt) -> (output, None)`` goes
  through evalkit's executor (retries, timeouts). It pickles as its spec and options, without the loaded model
  or client, because fmeval ships model runners to Ray actors; each actor builds its own runner on first use.
* :class:`FmevalRunner` wraps any fmeval ``ModelRunner`` as an evalkit runner, for the Python API:
  ``evaluate_summarization(data, model=FmevalRunner(my_fmeval_runner, name="my-endpoint"))``.
* :func:`use_offline_metrics` lets fmeval's summarization accuracy run with no hub: importing
  ``fmeval.eval_algorithms.summarization_accuracy`` calls ``evaluate.load("rouge")`` and
  ``evaluate.load("bertscore")``, which fetch metric scripts from the Hugging Face hub, and its METEOR calls
  ``nltk.download``. The patch answers ``evaluate.load`` with rouge-score and bert-score themselves (the
  libraries those scripts wrap, same computation: ``RougeScorer(types, use_stemmer)`` F-measure of the one
  pair fmeval passes; bert-score F1) and uses evalkit's NLTK data. fmeval's BERTScore allow-list takes only hub
  ids; offline, the patched BERTScore scores with the packaged all-MiniLM-L6-v2 (layer 6) whatever id it is
  given -- the same model evalkit's default BERTScore uses. For ``evaluate()``, which runs on Ray, pass
  :func:`ray_runtime_env` to ``ray.init`` so every worker applies the patch before it imports fmeval.

Install: ``pip install 'evalkit[fmeval]'`` then ``pip install --no-deps fmeval==1.2.3`` (fmeval's own pins,
``pandas==2.2.3``, ``ray==2.44.0`` and numpy<2 through older sagemaker, cannot live with this project's).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from evalkit.errors import ResourceMissingError, RuntimeFailure
from evalkit.runners.base import Request, Result, Runner, RunnerOptions, create_runner

INSTALL_HINT = "pip install 'evalkit[fmeval]' && pip install --no-deps fmeval==1.2.3"

try:
    from fmeval.model_runners.model_runner import ModelRunner
except ImportError:  # fmeval is optional: the module still imports, the classes say what to install
    ModelRunner = object  # type: ignore[misc,assignment]
    _FMEVAL = False
else:
    _FMEVAL = True

logger = logging.getLogger(__name__)


def _require_fmeval() -> None:
    if not _FMEVAL:
        raise ResourceMissingError(f"fmeval interop needs fmeval: {INSTALL_HINT}")


class EvalkitModelRunner(ModelRunner):  # type: ignore[misc,valid-type]
    """An evalkit runner as an fmeval ``ModelRunner``."""

    def __init__(self, spec: str, options: RunnerOptions | None = None, runner: Runner | None = None):
        _require_fmeval()
        # fmeval's ModelRunner.__init__ builds a JSON content composer and extractor for its own endpoint
        # runners; an evalkit runner formats and parses requests itself, so they are not needed.
        self.spec = spec
        self.options = options or RunnerOptions(progress=False)
        self._runner = runner

    @classmethod
    def from_runner(cls, runner: Runner) -> EvalkitModelRunner:
        return cls(runner.spec, runner.options, runner)

    @property
    def runner(self) -> Runner:
        if self._runner is None:
            self._runner = create_runner(self.spec, self.options)
        return self._runner

    def predict(self, prompt: str) -> tuple[str | None, float | None]:
        from evalkit.runners.executor import execute

        result = execute(self.runner, [Request(id="fmeval", prompt=prompt)], progress=False)[0]
        if result.error is not None:
            raise RuntimeFailure(f"{self.spec}: {result.error}")
        return result.text, None

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as spec and options: a Ray actor builds its own model or client."""
        return self.__class__, (self.spec, self.options)


class FmevalRunner(Runner):
    """An fmeval ``ModelRunner`` as an evalkit runner (one call at a time: fmeval runners need not be
    thread-safe). Its identity is its class, the name given and its simple attributes (endpoint, model id ...),
    so give distinct names to runners that differ in what they do not show."""

    batched = False
    default_concurrency = 1

    def __init__(self, model_runner: Any, name: str | None = None, options: RunnerOptions | None = None):
        _require_fmeval()
        if not callable(getattr(model_runner, "predict", None)):
            raise TypeError(f"expected an fmeval ModelRunner, got {type(model_runner).__name__}")
        self.model_runner = model_runner
        self.name = name or type(model_runner).__name__
        self.spec = f"fmeval:{self.name}"
        self.options = options or RunnerOptions()

    def identity(self) -> dict[str, Any]:
        simple = {k: v for k, v in vars(self.model_runner).items()
                  if not k.startswith("_") and isinstance(v, (str, int, float, bool, type(None)))}
        cls = type(self.model_runner)
        return {"runner": "fmeval", "class": f"{cls.__module__}.{cls.__qualname__}", "name": self.name,
                "attributes": simple}

    def params(self) -> dict[str, Any]:
        return {}

    def call(self, request: Request) -> Result:
        output, log_probability = self.model_runner.predict(request.prompt or "")
        if output is None:
            return Result(id=request.id, error="the fmeval model runner returned no output", error_kind="fatal")
        return Result(id=request.id, text=str(output))


# ------------------------------------------------------------------------------------------------
# fmeval's summarization metrics offline


class _OfflineRouge:
    """``evaluate.load("rouge")``'s compute for what fmeval asks: one prediction and reference, no aggregation
    difference (the aggregate of one pair is that pair's F-measure)."""

    def compute(self, predictions: list[str], references: list[str], use_stemmer: bool = False,
                rouge_types: Sequence[str] = ("rouge1", "rouge2", "rougeL", "rougeLsum"), **_: Any) -> dict[str, float]:
        from rouge_score import rouge_scorer

        scorer = rouge_scorer.RougeScorer(list(rouge_types), use_stemmer=use_stemmer)
        scores = [scorer.score(ref, pred) for pred, ref in zip(predictions, references, strict=True)]
        return {t: sum(s[t].fmeasure for s in scores) / len(scores) for t in rouge_types}


class _OfflineBertScore:
    """``evaluate.load("bertscore")``'s compute with bert-score and the packaged all-MiniLM-L6-v2 (layer 6)."""

    _scorer: Any = None

    def compute(self, predictions: list[str], references: list[str], model_type: str | None = None,
                **_: Any) -> dict[str, list[float]]:
        if _OfflineBertScore._scorer is None:
            from bert_score import BERTScorer

            from evalkit.resources.models import minilm_model_dir

            _OfflineBertScore._scorer = BERTScorer(model_type=str(minilm_model_dir()), num_layers=6)
        precision, recall, f1 = _OfflineBertScore._scorer.score(predictions, references)
        return {"precision": precision.tolist(), "recall": recall.tolist(), "f1": f1.tolist()}


def use_offline_metrics() -> None:
    """Patch ``evaluate.load`` (rouge, bertscore) and fmeval's METEOR data download for offline use. Call it
    before importing fmeval's evaluation algorithms; idempotent."""
    import evaluate

    if getattr(evaluate.load, "_evalkit_offline", False):
        return
    original = evaluate.load
    offline = {"rouge": _OfflineRouge, "bertscore": _OfflineBertScore}

    def load(path: str, *args: Any, **kwargs: Any) -> Any:
        if path in offline:
            return offline[path]()
        return original(path, *args, **kwargs)

    load._evalkit_offline = True  # type: ignore[attr-defined]
    evaluate.load = load
    from evalkit.resources.nltk_data import use_installed_data

    use_installed_data()  # evalkit's NLTK data on NLTK's path (cheap: nothing is loaded here)
    try:
        from fmeval.transforms.summarization_accuracy_metrics import MeteorScore
    except ImportError:
        return
    MeteorScore._load_modules = staticmethod(lambda: None)  # the data is installed; never nltk.download


def ray_runtime_env() -> dict[str, Any]:
    """``ray.init(runtime_env=...)`` so that every Ray worker patches before it imports fmeval."""
    return {"worker_process_setup_hook": "evalkit.runners.fmeval.use_offline_metrics"}
