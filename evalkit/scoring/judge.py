"""LLM-as-judge: a model grades each answer from 0 to 5 against the reference, reasoning first.

Any runner can judge (``hf:...``, ``bedrock:...``, ``sagemaker:...``). The prompt gives the question, the
reference answer(s) and the answer, and asks for the reasoning in ``<reasoning>`` tags, then the score in
``<score>`` tags. Judgements go through the executor and the output directory's run store, like generations:
a re-run reuses every finished judgement of the same judge model, settings and prompt.

The raw judgement is kept as the record's explanation. A judgement without a readable score in 0..5 is a
scoring error for that record (counted, never a silent 0); so is a failed call. Parsing accepts, in this
order: ``<score>4</score>`` (the last one), ``Score: 4`` / ``score = 4.5`` / ``4/5`` (the last one).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from evalkit.scoring.base import INPUTS, METRICS, REFERENCES, RUNNER, Item, Metric, Score

DEFAULT_JUDGE_PROMPT = """You are grading an answer to a question against a reference answer.

Question: $question
Reference answer: $reference
Answer to grade: $answer

First explain your reasoning inside <reasoning></reasoning> tags: is the answer correct and complete, and does \
it agree with the reference? Then give a score inside <score></score> tags, from 0 (wrong, or no answer) to 5 \
(correct and complete)."""
JUDGE_FIELDS = ("question", "reference", "answer")
SCORE_MIN, SCORE_MAX = 0.0, 5.0
DEFAULT_JUDGE_TOKENS = 256

_NUMBER = r"(\d+(?:\.\d+)?)"
_TAGGED = re.compile(rf"<score>\s*{_NUMBER}\s*(?:/\s*5\s*)?</score>", re.IGNORECASE)
_LABELLED = re.compile(rf"\bscore\s*(?:is|of)?\s*[:=]?\s*\**\s*{_NUMBER}\b", re.IGNORECASE)
_OUT_OF_FIVE = re.compile(rf"\b{_NUMBER}\s*/\s*5\b")
_REASONING = re.compile(r"<reasoning>(.*?)(?:</reasoning>|<score>|$)", re.IGNORECASE | re.DOTALL)


class UnparseableJudgement(ValueError):
    pass


def parse_judgement(text: str) -> tuple[float, str | None]:
    """(score, reasoning) from a judge's reply; UnparseableJudgement when no score in 0..5 can be read."""
    for pattern in (_TAGGED, _LABELLED, _OUT_OF_FIVE):
        found = pattern.findall(text or "")
        if found:
            value = float(found[-1])
            if not SCORE_MIN <= value <= SCORE_MAX:
                raise UnparseableJudgement(f"score {found[-1]} is outside {SCORE_MIN:g}..{SCORE_MAX:g}")
            reasoning = _REASONING.search(text)
            return value, (reasoning.group(1).strip() if reasoning else None) or None
    raise UnparseableJudgement("no score found (expected <score>N</score> with N in 0..5)")


@METRICS.register("judge")
class Judge(Metric):
    name = "judge"
    columns = ("judge",)
    needs = frozenset({REFERENCES, INPUTS, RUNNER})

    def __init__(self, model: str | None = None, prompt_template: str | None = None,
                 max_new_tokens: int = DEFAULT_JUDGE_TOKENS, model_config: str | None = None,
                 concurrency: int | None = None):
        from evalkit.runners.base import create_runner

        spec, options = self._options(model, prompt_template, max_new_tokens, model_config, concurrency)
        self.spec, self.prompt_template = spec, prompt_template or DEFAULT_JUDGE_PROMPT
        self.runner = create_runner(spec, options)
        self._store: Any = None
        self.stats: dict[str, int] = {}

    @staticmethod
    def _options(model: str | None, prompt_template: str | None, max_new_tokens: int, model_config: str | None,
                 concurrency: int | None) -> tuple[str, Any]:
        from evalkit.data.prompts import require_fields
        from evalkit.errors import UsageError
        from evalkit.runners.config import build_runner_options

        named, options = build_runner_options(model_config, max_new_tokens=max_new_tokens, concurrency=concurrency,
                                              progress=False)
        spec = model or named
        if not spec:
            raise UsageError("the judge metric needs a judge model: judge: {model: hf:smollm2} (any runner spec)")
        if max_new_tokens < 16:
            raise UsageError(f"judge max_new_tokens {max_new_tokens}: too few for reasoning and a score (>= 16)")
        if prompt_template is not None:
            require_fields(prompt_template, JUDGE_FIELDS, "the judge prompt_template")
        return spec, options

    @classmethod
    def check_options(cls, model: str | None = None, prompt_template: str | None = None,
                      max_new_tokens: int = DEFAULT_JUDGE_TOKENS, model_config: str | None = None,
                      concurrency: int | None = None) -> None:
        from evalkit.runners.base import check_runner_spec

        spec, options = cls._options(model, prompt_template, max_new_tokens, model_config, concurrency)
        check_runner_spec(spec, options)

    def use_store(self, store: Any) -> None:
        self._store = store

    def value_range(self, column: str) -> tuple[float, float]:
        return (SCORE_MIN, SCORE_MAX)

    def prompt(self, item: Item) -> str:
        from evalkit.data.prompts import render_fields

        reference = item.references[0] if len(item.references) == 1 else \
            " OR ".join(f'"{r}"' for r in item.references)
        return render_fields(self.prompt_template, {"question": item.input or "", "reference": reference,
                                                    "answer": item.output})

    def score_items(self, items: Sequence[Item], progress: bool = False) -> dict[str, list[Score]]:
        from evalkit.runners.base import Request
        from evalkit.runners.executor import ExecutionStats, execute

        requests = [Request(id=f"judge-{i}", prompt=self.prompt(item)) for i, item in enumerate(items)]
        stats = ExecutionStats()
        results = execute(self.runner, requests, store=self._store, progress=progress, stats=stats)
        for key, value in stats.to_dict().items():
            self.stats[key] = self.stats.get(key, 0) + value
        if self._store is not None:
            from evalkit.hashing import fingerprint

            self._store.remember_runner(self.runner.spec, fingerprint(self.runner.identity()),
                                        self.runner.identity(), self.runner.describe())
        scores = []
        for result in results:
            if result.error is not None:
                scores.append(Score(error=f"judge call failed ({result.error_kind}): {result.error}"))
                continue
            try:
                value, _ = parse_judgement(result.text or "")
            except UnparseableJudgement as exc:
                scores.append(Score(explanation=result.text, error=f"unparseable judgement: {exc}"))
                continue
            scores.append(Score(value, result.text))
        return {"judge": scores}

    def call_stats(self) -> dict[str, int] | None:
        return dict(self.stats)

    def settings(self) -> dict[str, Any]:
        from evalkit.hashing import fingerprint

        identity = self.runner.identity()
        return {"model": self.spec, "identity": identity, "identity_fingerprint": fingerprint(identity),
                "params": self.runner.params(), "prompt_template": self.prompt_template,
                "scale": f"{SCORE_MIN:g}..{SCORE_MAX:g}",
                "parsing": "last <score>N</score>, else 'Score: N', else 'N/5'; anything else is an error"}
