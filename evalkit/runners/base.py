"""The runner interface and registry.

A runner turns prompts into completions. ``predict`` matches fmeval's ``ModelRunner.predict``
(``prompt -> (output, log_probability)``) so a runner can be handed to fmeval as is.

Runner specs are ``PREFIX:TARGET`` (``hf:smollm2``). :func:`check_runner_spec` validates one before any
model loads: the prefix must be registered, and the prefix's check (a light module, no torch) must
accept the target -- for ``hf:``, the model must be on this machine.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from evalkit.errors import UsageError
from evalkit.registry import Registry


@dataclass(frozen=True)
class RunnerOptions:
    batch_size: int = 8
    max_new_tokens: int = 64
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    use_chat_template: bool = True
    seed: int = 0
    progress: bool = True


class Runner(ABC):
    """Generates one completion per prompt, greedily and deterministically where the backend allows."""

    spec: str

    @abstractmethod
    def generate(self, prompts: Sequence[str]) -> list[str]:
        """Completions for ``prompts``, in order (exactly one per prompt)."""

    def predict(self, prompt: str) -> tuple[str | None, float | None]:
        """fmeval ``ModelRunner`` compatible single-prompt call."""
        return self.generate([prompt])[0], None

    def describe(self) -> dict[str, Any]:
        """Metadata recorded in results.json (model id/path, device, dtype, generation settings)."""
        return {"spec": self.spec}

    # Context window. Runners that know their tokenizer say how long a prompt may be, so an over-long
    # prompt becomes a clear per-record error (or is truncated on request) instead of a silent
    # over-context generation. Runners that cannot tell return None and the backend decides.

    def prompt_token_budget(self) -> int | None:
        """Most tokens a prompt may have, leaving room for the new tokens; None when unknown."""
        return None

    def count_prompt_tokens(self, prompt: str) -> int | None:
        """Tokens the model is fed for ``prompt`` (chat template included); None when unknown."""
        return None

    def text_token_prefix(self, text: str, n_tokens: int) -> tuple[str, int]:
        """The text of ``text``'s first ``n_tokens`` tokens, and how many tokens ``text`` has."""
        raise NotImplementedError(f"{type(self).__name__} cannot truncate text")


# spec prefix -> factory(target: str, options: RunnerOptions) -> Runner
RUNNERS: Registry = Registry("model runner", lazy={"hf": "evalkit.runners.hf"})
# spec prefix -> check(target: str) -> None; raises when the target cannot be used. Light modules only.
RUNNER_CHECKS: Registry = Registry("model runner check", lazy={"hf": "evalkit.runners.hf_source"})


def parse_runner_spec(spec: str) -> tuple[str, str]:
    """``"hf:smollm2"`` -> ``("hf", "smollm2")``; a malformed spec or unknown prefix is a UsageError."""
    prefix, sep, target = (spec or "").partition(":")
    if not sep or not target.strip():
        raise UsageError(
            f"model spec '{spec}' must look like PREFIX:TARGET, e.g. hf:smollm2 or hf:/path/to/model "
            f"(prefixes: {', '.join(RUNNERS.names())})"
        )
    if prefix not in RUNNERS.names():
        raise UsageError(f"unknown model runner '{prefix}' in --model {spec!r}; known: "
                         f"{', '.join(p + ':' for p in RUNNERS.names())}")
    return prefix, target


def check_runner_spec(spec: str) -> None:
    """Everything about ``spec`` that can be checked before a model loads (exit 2 when it fails)."""
    prefix, target = parse_runner_spec(spec)
    if prefix in RUNNER_CHECKS.names():
        RUNNER_CHECKS.get(prefix)(target)


def create_runner(spec: str, options: RunnerOptions | None = None) -> Runner:
    prefix, target = parse_runner_spec(spec)
    factory = RUNNERS.get(prefix)
    return factory(target, options or RunnerOptions())
