"""The runner interface and registry.

A runner turns prompts into completions. ``predict`` matches fmeval's ``ModelRunner.predict``
(``prompt -> (output, log_probability)``) so a runner can be handed to fmeval as is.
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
        """Completions for ``prompts``, in order."""

    def predict(self, prompt: str) -> tuple[str | None, float | None]:
        """fmeval ``ModelRunner`` compatible single-prompt call."""
        return self.generate([prompt])[0], None

    def describe(self) -> dict[str, Any]:
        """Metadata recorded in results.json (model id/path, device, dtype, generation settings)."""
        return {"spec": self.spec}


# spec prefix -> factory(target: str, options: RunnerOptions) -> Runner
RUNNERS: Registry = Registry("model runner", lazy={"hf": "evalkit.runners.hf"})


def create_runner(spec: str, options: RunnerOptions | None = None) -> Runner:
    prefix, sep, target = spec.partition(":")
    if not sep or not target:
        raise UsageError(
            f"model spec '{spec}' must look like PREFIX:TARGET, e.g. hf:smollm2 or hf:/path/to/model "
            f"(prefixes: {', '.join(RUNNERS.names())})"
        )
    factory = RUNNERS.get(prefix)
    return factory(target, options or RunnerOptions())
