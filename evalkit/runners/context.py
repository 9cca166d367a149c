"""Prompts against a model's context window, for runners that know their tokenizer.

A prompt longer than the context (prompt tokens + new tokens above the model's position limit) is never
sent silently: it becomes a per-record error naming both numbers, or, with ``truncate``, the record's
input is cut at a token boundary until the prompt fits, and what was kept is recorded.
"""

from __future__ import annotations

from evalkit.data.prompts import render_prompt
from evalkit.runners.base import FATAL, Request, Result, Runner


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


def fit_request(runner: Runner, request: Request, budget: int | None) -> tuple[str, Result | None]:
    """``(prompt to send, None)``, or ``(prompt, error or truncation result)``: a Result with ``error`` when the
    prompt cannot be sent, or one carrying ``sent_prompt``/``truncated`` (and no text yet) when it was cut."""
    prompt = request.prompt or ""
    n = runner.count_prompt_tokens(prompt) if budget is not None else None
    if n is None or n <= budget:
        return prompt, None
    max_new = runner.options.max_new_tokens
    too_long = (f"context length: the prompt has {n} tokens; the model's context of {budget + max_new} tokens "
                f"leaves {budget} for a prompt after --max-new-tokens {max_new}")
    if not runner.options.truncate:
        return prompt, Result(id=request.id, error=too_long + "; pass --truncate to cut the input to fit",
                              error_kind=FATAL)
    if request.template is None or request.model_input is None:
        return prompt, Result(id=request.id, error=too_long + "; this request has no input to cut", error_kind=FATAL)
    fitted = fit_prompt(runner, request.template, request.model_input, budget)
    if fitted is None:
        return prompt, Result(id=request.id, error=too_long + "; the prompt template alone does not fit",
                              error_kind=FATAL)
    text, info = fitted
    return text, Result(id=request.id, sent_prompt=text, truncated={"prompt_tokens_before": n, **info})
