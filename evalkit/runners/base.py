"""The runner interface: per-record requests in, per-record results out, for local and remote models.

A runner turns :class:`Request` objects into :class:`Result` objects; the executor
(:mod:`evalkit.runners.executor`) owns concurrency, rate limiting, retries, timeouts and the run store.
Two kinds of runner plug into it:

* **batched** runners (local models: ``hf:``) take a list of requests at a time in one worker
  (:meth:`Runner.call_batch`); a batch that raises is split until the failing requests are alone;
* **remote** runners (``bedrock:``, ``sagemaker:``) take one request at a time (:meth:`Runner.call`), many
  in parallel; an exception is classified (:meth:`Runner.classify`) as retryable, timeout, fatal or
  filtered, and the executor retries the first two with backoff.

``predict`` matches fmeval's ``ModelRunner.predict`` (``prompt -> (output, log_probability)``).

Runner specs are ``PREFIX:TARGET`` (``hf:smollm2``). :func:`check_runner_spec` validates one before any
model loads: the prefix must be registered, and the prefix's check (a light module, no torch) must accept
the target -- for ``hf:``, the model must be on this machine.
"""

from __future__ import annotations

from abc import ABC
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from evalkit.errors import RuntimeFailure, UsageError
from evalkit.registry import Registry

# Result.error_kind: what the executor does with a failed call.
RETRYABLE = "retryable"  # throttling, 5xx, model not ready, dropped connections: retried with backoff
TIMEOUT = "timeout"  # the call took longer than the per-request timeout: retried
FATAL = "fatal"  # validation, access, model errors, prompts too long: recorded, not retried
FILTERED = "filtered"  # the backend's content filter or guardrail stopped the answer: recorded, not retried
ERROR_KINDS = (RETRYABLE, TIMEOUT, FATAL, FILTERED)
RETRIED_KINDS = (RETRYABLE, TIMEOUT)


@dataclass(frozen=True)
class RunnerOptions:
    """How a runner generates and how the executor drives it. Flags and ``--model-config`` fill it."""

    batch_size: int = 8
    max_new_tokens: int = 64
    device: str = "auto"  # auto | cpu | cuda (local models)
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16 (local models)
    use_chat_template: bool = True
    seed: int = 0
    progress: bool = True
    truncate: bool = False  # cut the input of a prompt too long for the context instead of an error (local)
    # Remote generation parameters (a local model always decodes greedily).
    temperature: float = 0.0
    top_p: float | None = None
    stop_sequences: tuple[str, ...] = ()
    system_prompt: str | None = None
    # The executor.
    concurrency: int | None = None  # requests in flight; None: the runner's default
    max_rps: float | None = None  # client-side rate limit, requests per second (all workers together)
    timeout_s: float = 120.0  # per request
    max_attempts: int = 8  # per request, retries included (botocore itself is set to one attempt)
    retry_base_delay_s: float = 1.0  # exponential backoff with full jitter: uniform(0, base * 2**retry) ...
    retry_max_delay_s: float = 30.0  # ... capped here
    fail_fast: bool = False  # stop the run at the first record that still fails
    # Backend-specific settings (content templates, output paths, variants ...), from --model-config.
    backend: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["stop_sequences"] = list(self.stop_sequences)
        return out


@dataclass(frozen=True)
class Request:
    """One call: a record id and its prompt (or chat messages), with what a runner needs to fit it."""

    id: str
    prompt: str | None = None
    messages: tuple[dict[str, str], ...] | None = None  # [{"role": "user"|"assistant", "content": ...}]
    system: str | None = None  # system prompt (overrides the runner's default)
    model_input: str | None = None  # the record's input inside the prompt: what --truncate may cut
    template: str | None = None  # the prompt template (with $model_input), to rebuild a cut prompt

    def payload(self) -> dict[str, Any]:
        """What is sent, for the store key: the prompt or the messages, and the system prompt."""
        return {"prompt": self.prompt, "messages": list(self.messages) if self.messages else None,
                "system": self.system}


@dataclass
class Result:
    """One call's outcome: text, or an error with its kind. Serialized into the run store and records."""

    id: str
    text: str | None = None
    error: str | None = None
    error_kind: str | None = None  # one of ERROR_KINDS when error is set
    finish_reason: str | None = None  # "stop", "length", "end_turn", "content_filtered", ... as the backend says
    usage: dict[str, int] | None = None  # {"input_tokens", "output_tokens"} where the backend reports them
    latency_s: float | None = None  # of the last attempt
    attempts: int = 0
    cached: bool = False  # reused from the run store, not called now
    sent_prompt: str | None = None  # the prompt as sent, when the runner changed it (--truncate)
    truncated: dict[str, int] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Result:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


class Runner(ABC):
    """Turns requests into results. Subclasses implement :meth:`call_batch` (batched) or :meth:`call`
    (remote), or, for the simplest plug-ins, just :meth:`generate`."""

    spec: str
    batched: bool = True  # False: one request per call, many calls in parallel
    default_concurrency: int = 1
    options: RunnerOptions = RunnerOptions()

    # -- what decides the output ------------------------------------------------------------------

    def identity(self) -> dict[str, Any]:
        """The resolved model: what decides the output besides the parameters and the prompt (weights
        fingerprint, model id and region, endpoint and variant, ...). Part of every store key."""
        return {"spec": self.spec}

    def params(self) -> dict[str, Any]:
        """The generation parameters that decide the output. Part of every store key."""
        return {"max_new_tokens": self.options.max_new_tokens}

    def describe(self) -> dict[str, Any]:
        """Metadata recorded in results.json (identity, model details, generation settings)."""
        return {"spec": self.spec, "identity": self.identity()}

    # -- calls ------------------------------------------------------------------------------------

    def generate(self, prompts: Sequence[str]) -> list[str]:
        """Completions for ``prompts``, in order; raises when a call fails. Runs through the executor
        (concurrency, retries) without a store."""
        from evalkit.runners.executor import execute

        results = execute(self, [Request(id=str(i), prompt=p) for i, p in enumerate(prompts)], progress=False)
        failed = next((r for r in results if r.error is not None), None)
        if failed is not None:
            raise RuntimeFailure(f"{self.spec}: {failed.error}")
        return [r.text or "" for r in results]

    def call_batch(self, requests: Sequence[Request]) -> list[Result]:
        """Results for a list of requests (batched runners). The default runs :meth:`generate` on their
        prompts, for plug-ins that only implement that, else :meth:`call` on each."""
        if type(self).generate is Runner.generate:
            return [self.call(r) for r in requests]
        outputs = self.generate([r.prompt or "" for r in requests])
        if not isinstance(outputs, list) or len(outputs) != len(requests):
            got = len(outputs) if isinstance(outputs, (list, tuple)) else type(outputs).__name__
            raise RuntimeFailure(f"runner {self.spec} returned {got} outputs for {len(requests)} prompts")
        bad = next((o for o in outputs if not isinstance(o, str)), None)
        if bad is not None:
            raise RuntimeFailure(f"runner {self.spec} returned a {type(bad).__name__} where a completion (str) "
                                 "was expected")
        return [Result(id=r.id, text=o) for r, o in zip(requests, outputs, strict=True)]

    def call(self, request: Request) -> Result:
        """One request (remote runners). Raise to let the executor classify and retry."""
        if type(self).call_batch is Runner.call_batch and type(self).generate is Runner.generate:
            raise NotImplementedError(f"{type(self).__name__} implements none of call, call_batch and generate")
        return self.call_batch([request])[0]

    def classify(self, error: BaseException) -> tuple[str, str]:
        """``(error kind, message)`` for an exception a call raised."""
        message = f"{type(error).__name__}: {error}"
        if isinstance(error, TimeoutError):
            return TIMEOUT, message
        if isinstance(error, ConnectionError):
            return RETRYABLE, message
        return FATAL, message

    def predict(self, prompt: str) -> tuple[str | None, float | None]:
        """fmeval ``ModelRunner`` compatible single-prompt call."""
        return self.generate([prompt])[0], None

    # -- context window ---------------------------------------------------------------------------
    # Runners that know their tokenizer say how long a prompt may be, so an over-long prompt becomes a
    # clear per-record error (or is cut on request) instead of a silent over-context generation.

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
RUNNERS: Registry = Registry("model runner", lazy={
    "hf": "evalkit.runners.hf", "bedrock": "evalkit.runners.bedrock", "bedrock-invoke": "evalkit.runners.bedrock",
    "sagemaker": "evalkit.runners.sagemaker"})
# spec prefix -> check(target: str, options: RunnerOptions) -> None; raises when the target cannot be used.
# Light modules only (no torch, no boto3 client).
RUNNER_CHECKS: Registry = Registry("model runner check", lazy={
    "hf": "evalkit.runners.hf_source", "bedrock": "evalkit.runners.aws_checks",
    "bedrock-invoke": "evalkit.runners.aws_checks", "sagemaker": "evalkit.runners.aws_checks"})


def parse_runner_spec(spec: str) -> tuple[str, str]:
    """``"hf:smollm2"`` -> ``("hf", "smollm2")``; a malformed spec or unknown prefix is a UsageError."""
    prefix, sep, target = (spec or "").partition(":")
    if not sep or not target.strip():
        raise UsageError(
            f"model spec '{spec}' must look like PREFIX:TARGET, e.g. hf:smollm2, bedrock:<model id> or "
            f"sagemaker:<endpoint> (prefixes: {', '.join(RUNNERS.names())})"
        )
    if prefix not in RUNNERS.names():
        raise UsageError(f"unknown model runner '{prefix}' in --model {spec!r}; known: "
                         f"{', '.join(p + ':' for p in RUNNERS.names())}")
    return prefix, target


def check_runner_spec(spec: str, options: RunnerOptions | None = None) -> None:
    """Everything about ``spec`` that can be checked before a model loads (exit 2 when it fails)."""
    prefix, target = parse_runner_spec(spec)
    if prefix in RUNNER_CHECKS.names():
        RUNNER_CHECKS.get(prefix)(prefix, target, options or RunnerOptions())


def create_runner(spec: str, options: RunnerOptions | None = None) -> Runner:
    prefix, target = parse_runner_spec(spec)
    factory = RUNNERS.get(prefix)
    options = options or RunnerOptions()
    runner = factory(target, options)
    if runner.options is Runner.options:  # a plug-in that did not keep its options: the executor reads them
        runner.options = options
    return runner
