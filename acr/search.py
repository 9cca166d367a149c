"""The outer search over prompt length (the paper's MiniPrompt) and the public entry points.

For one target, in the order used:

1. :func:`check_model` / :func:`encode_target` -- refuse what cannot work, with a clear message.
2. :func:`build_scaffold` -- the fixed tokens around the free prompt: BOS for base models, the rendered
   chat template for chat models. Not counted in |x|; recorded.
3. :func:`search_prompt_length` -- GCG at one length after another: start short, grow by ``grow_step``
   until a prompt works, then shrink one token at a time (warm-started from the best single-token
   deletion of the last solution) until a length fails. The bracket is (longest length that failed,
   shortest that worked).
4. :func:`compute_acr` -- ties it together and returns an :class:`~acr.results.ACRResult`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from acr.config import ACRConfig
from acr.gcg import (
    LengthOutcome,
    Problem,
    allowed_token_mask,
    build_problem,
    optimize_length,
    random_prompt,
)
from acr.kernels import linear_kernels_for, pack_linears
from acr.results import ACRResult, deflate_bytes, search_budget
from acr.screens import screen_copy, screen_for, screen_forward
from acr.verify import verify_generation
from evalkit.errors import UsageError
from evalkit.lm import context_limit

logger = logging.getLogger(__name__)

# Rendered into the chat template's user turn, then split on: the text before and after it is the scaffold.
PLACEHOLDER = "ACRFREEPROMPTPLACEHOLDER"


def check_model(model: Any, tokenizer: Any) -> None:
    """GCG needs gradients through an input-embedding matrix and ``generate`` for the final check."""
    get_embeddings = getattr(model, "get_input_embeddings", None)
    embeddings = get_embeddings() if callable(get_embeddings) else None
    weight = getattr(embeddings, "weight", None)
    if not isinstance(weight, torch.Tensor) or not weight.is_floating_point():
        raise UsageError(
            f"ACR needs a differentiable causal LM (a transformers model with a floating-point input-embedding "
            f"matrix from get_input_embeddings()); got {type(model).__name__}, which has none. "
            "API-only or quantized-integer models cannot be optimized against."
        )
    if not callable(getattr(model, "generate", None)):
        raise UsageError(f"ACR verifies prompts with model.generate(); {type(model).__name__} has no generate()")
    if not callable(tokenizer):
        raise UsageError(f"the tokenizer must be a transformers tokenizer; got {type(tokenizer).__name__}")


def encode_target(tokenizer: Any, target: Any) -> list[int]:
    """The target's token ids as the model must emit them (no special tokens added)."""
    if not isinstance(target, str):
        raise UsageError(f"a target must be a string, got {type(target).__name__}")
    if not target:
        raise UsageError("the target is empty; ACR needs at least one target token")
    ids = tokenizer(target, add_special_tokens=False)["input_ids"]
    if not ids:
        raise UsageError(f"the target {target!r} encodes to no tokens")
    return list(ids)


def build_scaffold(tokenizer: Any, config: ACRConfig) -> tuple[list[int], list[int], dict[str, Any], bool]:
    """``(before_ids, after_ids, scaffold record, bos_added)`` around the free prompt tokens.

    Base model: before is the tokenizer's BOS if it adds one (the model saw it at the start of every
    training document), after is empty. Chat model: the chat template is rendered with a unique
    placeholder as the user turn (after an optional system turn, with the assistant prefix), the text is
    split at the placeholder, and each side is tokenized without adding special tokens -- as
    ``apply_chat_template(tokenize=True)`` does, so a BOS the template writes is kept and none is doubled.
    """
    bos = getattr(tokenizer, "bos_token_id", None)
    if not config.chat_template:
        with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
        plain = tokenizer("a", add_special_tokens=False)["input_ids"]
        bos_added = bos is not None and with_special[:1] == [bos] and plain[:1] != [bos]
        before = [bos] if bos_added else []
        record = {"chat_template": False, "before_ids": before, "after_ids": [],
                  "before_text": tokenizer.decode(before) if before else "", "after_text": "", "counted": False}
        return before, [], record, bos_added
    if not getattr(tokenizer, "chat_template", None):
        raise UsageError("config.chat_template=True but the tokenizer has no chat template")
    messages = [{"role": "user", "content": PLACEHOLDER}]
    if config.system_prompt is not None:
        messages.insert(0, {"role": "system", "content": config.system_prompt})
    try:
        rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as error:  # jinja raises its own types, e.g. for a template without a system role
        raise UsageError(f"could not render the chat template: {error}") from error
    if rendered.count(PLACEHOLDER) != 1:
        raise UsageError("the chat template does not place the user message exactly once; cannot build a scaffold")
    before_text, after_text = rendered.split(PLACEHOLDER)
    before = tokenizer(before_text, add_special_tokens=False)["input_ids"] if before_text else []
    after = tokenizer(after_text, add_special_tokens=False)["input_ids"] if after_text else []
    record = {"chat_template": True, "system_prompt": config.system_prompt, "before_ids": list(before),
              "after_ids": list(after), "before_text": before_text, "after_text": after_text, "counted": False}
    return list(before), list(after), record, bos is not None and before[:1] == [bos]


def end_of_turn_ids(tokenizer: Any, config: ACRConfig) -> list[int]:
    """The token(s) that must follow the target in chat mode: the target is the assistant's whole reply, so the
    model must end its turn right after it. Empty outside chat mode or when ``require_end_of_turn`` is off.

    Read off the chat template itself: an assistant turn holding a placeholder is rendered, and the first
    token after the placeholder is the end-of-turn marker (``<|im_end|>``, ``<|eot_id|>``, ...).
    """
    if not config.chat_template or not config.require_end_of_turn:
        return []
    messages = [{"role": "user", "content": "x"}, {"role": "assistant", "content": PLACEHOLDER}]
    try:
        rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception as error:
        raise UsageError(f"could not render an assistant turn with the chat template: {error}") from error
    after = rendered.split(PLACEHOLDER, 1)[1] if PLACEHOLDER in rendered else ""
    ids = tokenizer(after, add_special_tokens=False)["input_ids"] if after.strip() else []
    if ids:
        return [int(ids[0])]
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise UsageError("the chat template ends an assistant turn with nothing and the tokenizer has no EOS "
                         "token; pass require_end_of_turn=False (--no-require-end-of-turn) to allow any continuation")
    return [int(eos)]


@dataclass
class SearchOutcome:
    """Result of the length search for one target."""

    prompt_ids: torch.Tensor  # shortest working prompt; on failure, the lowest-loss prompt at the last length
    success: bool
    lengths_tried: list[dict[str, Any]] = field(default_factory=list)
    longest_failed: int | None = None
    shortest_success: int | None = None
    steps: int = 0
    false_matches: int = 0


def _deletions(prompt_ids: torch.Tensor) -> torch.Tensor:
    """Every prompt one token shorter: the warm starts for the next, shorter length (scored together)."""
    n = prompt_ids.shape[0]
    keep = ~torch.eye(n, dtype=torch.bool)
    return prompt_ids.repeat(n, 1)[keep].reshape(n, n - 1)


def search_prompt_length(problem: Problem, cap: int, config: ACRConfig, generator: torch.Generator,
                         verify: Callable[[list[int]], bool],
                         optimizer: Callable[..., LengthOutcome] = optimize_length) -> SearchOutcome:
    """MiniPrompt: find the shortest prompt length at which GCG makes the model emit the target.

    Grows from ``config.initial_length`` by ``config.grow_step`` (the failed prompt is kept as the suffix,
    closest to the target, and new random tokens are put in front) until a length works or ``cap`` fails.
    After a success it shrinks one token at a time; every single-token deletion of the working prompt is
    scored at once and the best one starts the shorter length (it often works outright, at zero steps).
    A length fails after ``steps_per_length`` steps and ``restarts`` fresh random restarts; the search
    stops at the first failure after a success, or when the next length already failed. Failures are
    budget-bound, so the bracket is what this budget found, not a proof.

    ``optimizer`` is the GCG run at one length, called like :func:`~acr.gcg.optimize_length`; the
    benchmark passes another implementation through here so both drive this same search.
    """
    out = SearchOutcome(prompt_ids=torch.empty(0, dtype=torch.long), success=False)
    length = min(max(1, config.initial_length), cap)
    starts = random_prompt(problem.allowed, length, generator)

    def attempt(init: torch.Tensor, restart: int) -> LengthOutcome:
        scored, started = problem.forward_passes, time.perf_counter()
        result = optimizer(problem, init, steps=config.steps_per_length, search_width=config.search_width,
                           topk=config.topk, n_replace=config.n_replace, generator=generator, verify=verify)
        out.steps += result.steps
        out.false_matches += result.false_matches
        out.lengths_tried.append({"length": length, "success": result.success, "steps": result.steps,
                                  "best_loss": result.loss, "restart": restart,
                                  "candidates": problem.forward_passes - scored,
                                  "seconds": time.perf_counter() - started})
        return result

    while True:
        result = attempt(starts, 0)
        for restart in range(1, config.restarts + 1):
            if result.success:
                break
            again = attempt(random_prompt(problem.allowed, length, generator), restart)
            if again.success or again.loss < result.loss:
                result = again
        if result.success:
            out.success, out.prompt_ids, out.shortest_success = True, result.prompt_ids, length
            if length == 1 or (out.longest_failed is not None and length - 1 <= out.longest_failed):
                return out
            length -= 1
            starts = _deletions(result.prompt_ids)
            continue
        out.longest_failed = max(length, out.longest_failed or 0)
        if out.success or length >= cap:
            if not out.success:
                out.prompt_ids = result.prompt_ids
            return out
        grown = min(cap, length + config.grow_step)
        starts = torch.cat([random_prompt(problem.allowed, grown - length, generator), result.prompt_ids])
        length = grown


@dataclass
class _Prepared:
    """What is shared by every target of one model/tokenizer/config: computed once per batch of targets."""

    model: Any
    tokenizer: Any
    config: ACRConfig
    before: list[int]
    after: list[int]
    scaffold: dict[str, Any]
    bos_added: bool
    allowed: torch.Tensor
    limit: int | None
    model_name: str | None
    end_of_turn: list[int] = field(default_factory=list)  # must follow the target (chat mode)
    screen_dtype: str | None = None  # the screen that will score candidates first (acr.screens), or None
    screen_measurement: dict[str, Any] | None = None  # how "auto" chose it: candidates/s of each, cached or not
    linear_kernels: list[str] = field(default_factory=list)  # weight shapes packed for oneDNN (acr.kernels)
    linear_measurement: dict[str, Any] | None = None  # how "auto" chose them: GFLOP/s of each kernel per shape
    _screen_model: Any = None
    _packed: Any = None

    def typed_ids(self, prompt_ids: list[int]) -> list[int]:
        """The ids a user gets by typing the prompt's text: the rendered chat tokenized as
        ``apply_chat_template`` does, or the text tokenized with the tokenizer's own special tokens."""
        text = self.tokenizer.decode(prompt_ids)
        if self.scaffold.get("chat_template"):
            rendered = self.scaffold["before_text"] + text + self.scaffold["after_text"]
            return list(self.tokenizer(rendered, add_special_tokens=False)["input_ids"])
        return list(self.tokenizer(text, add_special_tokens=self.bos_added)["input_ids"])

    def retokenizes(self, prompt_ids: list[int]) -> bool:
        """Typing the prompt's text feeds the model exactly the ids that were searched (scaffold included)."""
        return self.typed_ids(prompt_ids) == self.before + list(prompt_ids) + self.after

    def retokenize_filter(self, rows: torch.Tensor) -> torch.Tensor:
        """A bool per candidate prompt (row): :meth:`retokenizes`."""
        return torch.tensor([self.retokenizes(row) for row in rows.tolist()], dtype=torch.bool)

    def screen_model(self) -> Any:
        """The screen copy, made on first use (so invalid targets are refused before a model is copied),
        then shared by every target of this run. None when there is no screen or the copy failed."""
        if self.screen_dtype is not None and self._screen_model is None:
            try:
                self._screen_model = screen_copy(self.model, self.screen_dtype)
            except Exception as error:  # e.g. a model deepcopy cannot copy: search with the model itself
                logger.warning("no %s screen copy of the model (%s); scoring candidates with the model itself",
                               self.screen_dtype, error)
                self.screen_dtype = None
        return self._screen_model

    def packed_linears(self) -> Any:
        """The model's packed linear layers, made on first use and shared by every target; None when none."""
        if self.linear_kernels and self._packed is None:
            rows = self.config.search_width * typical_sequence(self.tokenizer, self.config)
            self._packed = pack_linears(self.model, self.linear_kernels, rows)
        return self._packed


def _prepare(model: Any, tokenizer: Any, config: ACRConfig | None, model_name: str | None,
             screen: tuple[str | None, dict[str, Any] | None] | None = None,
             linear_kernels: tuple[list[str], dict[str, Any] | None] | None = None) -> _Prepared:
    config = config or ACRConfig()
    check_model(model, tokenizer)
    before, after, scaffold, bos_added = build_scaffold(tokenizer, config)
    vocab = model.get_input_embeddings().weight.shape[0]
    try:
        allowed = allowed_token_mask(tokenizer, vocab, allow_special_tokens=config.allow_special_tokens,
                                     allow_non_ascii=config.allow_non_ascii)
    except ValueError as error:
        raise UsageError(str(error)) from error
    name = model_name or getattr(getattr(model, "config", None), "_name_or_path", None) or type(model).__name__
    eot = end_of_turn_ids(tokenizer, config)
    screen, measurement = screen if screen is not None else resolve_screen(model, tokenizer, config)
    packed, packed_measurement = linear_kernels if linear_kernels is not None \
        else resolve_linear_kernels(model, tokenizer, config)
    return _Prepared(model, tokenizer, config, before, after, scaffold, bos_added, allowed,
                     context_limit(model, tokenizer), name, eot, screen, measurement, list(packed),
                     packed_measurement)


TYPICAL_TARGET_TOKENS = 32  # the shape "auto" measures at (a famous quote is 15-40 tokens)


def typical_sequence(tokenizer: Any, config: ACRConfig) -> int:
    """Tokens of a typical candidate sequence for this config: scaffold, the first prompt length, a typical
    target. What "auto" measures screens and linear kernels at, and what packed weights are laid out for."""
    before, after, _, _ = build_scaffold(tokenizer, config)
    return len(before) + config.initial_length + len(after) + TYPICAL_TARGET_TOKENS


def resolve_screen(model: Any, tokenizer: Any, config: ACRConfig) -> tuple[str | None, dict[str, Any] | None]:
    """The screen this config runs with on this model and machine (``"auto"``: measured once per machine,
    see :func:`acr.screens.choose_screen`), and the measurement behind an ``"auto"`` choice."""
    return _as_usage_error(screen_for, model, config.screen_dtype, rows=config.search_width,
                           seq_len=typical_sequence(tokenizer, config), target_len=TYPICAL_TARGET_TOKENS)


def resolve_linear_kernels(model: Any, tokenizer: Any,
                           config: ACRConfig) -> tuple[list[str], dict[str, Any] | None]:
    """The weight shapes whose linear layers this config packs for oneDNN on this model and machine
    (``"auto"``: measured once per machine at a candidate chunk's rows, see :mod:`acr.kernels`), and the
    measurement behind an ``"auto"`` choice."""
    return _as_usage_error(linear_kernels_for, model, config.linear_kernel, rows=config.search_width,
                           seq_len=typical_sequence(tokenizer, config), target_len=TYPICAL_TARGET_TOKENS)


def _as_usage_error(resolve: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``resolve(*args, **kwargs)``, its ValueError (an option this model or machine cannot run) a UsageError."""
    try:
        return resolve(*args, **kwargs)
    except ValueError as error:
        raise UsageError(str(error)) from error


def _prompt_cap(prep: _Prepared, target_ids: list[int]) -> int:
    """The longest prompt tried: the configured cap, never above |y| (a prompt as long as the target cannot
    show memorization at tau >= 1, a longer one even less), and within the model's context."""
    cap = min(prep.config.max_prompt_tokens or len(target_ids), len(target_ids))
    if prep.limit is not None:
        room = prep.limit - len(prep.before) - len(prep.after) - len(target_ids) - len(prep.end_of_turn)
        if room < 1:
            raise UsageError(
                f"the target has {len(target_ids)} tokens; with {len(prep.before) + len(prep.after)} scaffold "
                f"tokens and at least one prompt token it exceeds the model's context of {prep.limit} tokens"
            )
        cap = min(cap, room)
    return cap


def _run_target(prep: _Prepared, target: str, target_ids: list[int],
                optimizer: Callable[..., LengthOutcome] = optimize_length) -> ACRResult:
    config, model, tokenizer = prep.config, prep.model, prep.tokenizer
    start = time.perf_counter()
    cap = _prompt_cap(prep, target_ids)
    generator = torch.Generator().manual_seed(config.seed)
    emitted = list(target_ids) + prep.end_of_turn  # what the model must emit: the target, then (chat) its turn end
    problem = build_problem(model, prep.before, prep.after, emitted, prep.allowed,
                            search_width=config.search_width, batch_size=config.batch_size,
                            screen_model=prep.screen_model(), screen_margin=config.screen_margin,
                            screen_rerank=config.screen_rerank, screen_rerank_slack=config.screen_rerank_slack,
                            keep=prep.retokenize_filter if config.require_retokenize else None,
                            packed=prep.packed_linears())

    checked: dict[tuple[int, ...], bool] = {}  # greedy generation is deterministic: run it once per input

    def verify(input_ids: list[int]) -> bool:
        key = tuple(input_ids)
        if key not in checked:
            checked[key] = verify_generation(model, input_ids, emitted)
        return checked[key]

    found = search_prompt_length(problem, cap, config, generator, verify, optimizer)
    prompt_ids = found.prompt_ids.tolist()
    input_ids = problem.input_ids(found.prompt_ids)
    verified = found.success and verify(input_ids)  # the reported prompt's own generation (kept from the search)
    success = found.success and verified
    n_prompt = len(prompt_ids)
    acr = len(target_ids) / n_prompt if success else None  # a lower bound on the true ACR; none when not found
    prompt_text = tokenizer.decode(prompt_ids)
    compressed = deflate_bytes(target)
    beats_deflate = success and len(prompt_text.encode("utf-8")) < compressed
    memorized = success and acr > config.threshold and (not config.beat_deflate or beats_deflate)
    budget = search_budget(config.to_dict(), cap, [entry["length"] for entry in found.lengths_tried])
    return ACRResult(
        target=target, target_ids=list(target_ids), prompt_ids=prompt_ids, input_ids=input_ids,
        prompt_text=prompt_text, target_tokens=len(target_ids), prompt_tokens=n_prompt,
        acr=acr, memorized=memorized, success=success, verified_generation=verified,
        retokenizes=prep.retokenizes(prompt_ids), censored=not success, lengths_tried=found.lengths_tried,
        bracket={"longest_failed": found.longest_failed, "shortest_success": found.shortest_success},
        steps=found.steps, forward_passes=problem.forward_passes, exact_rechecks=problem.exact_rechecks,
        pruned=problem.pruned,
        screen_dtype=prep.screen_dtype, screen_forward=screen_forward(prep.model, prep.screen_dtype),
        screen_speeds=(prep.screen_measurement or {}).get("candidates_per_second"),
        screen_fidelity=(prep.screen_measurement or {}).get("fidelity"),
        linear_kernels={"packed": list(prep.linear_kernels),
                        "gflops": (prep.linear_measurement or {}).get("gflops")},
        wall_seconds=time.perf_counter() - start, seed=config.seed, model=prep.model_name,
        scaffold=prep.scaffold, bos_added=prep.bos_added, budget=budget, end_of_turn_ids=list(prep.end_of_turn),
        target_bytes=len(target.encode("utf-8")), prompt_bytes=len(prompt_text.encode("utf-8")),
        deflate_bytes=compressed, beats_deflate=beats_deflate, threshold=config.threshold,
        false_matches=found.false_matches, config=config.to_dict(),
    )


class _EvalMode:
    """Eval mode (no dropout) for the run, restoring the caller's mode afterwards; also leaves any
    ``torch.inference_mode`` the caller is in, since GCG needs gradients."""

    def __init__(self, model: Any):
        self.model, self.was_training = model, bool(getattr(model, "training", False))
        self.grad_mode = torch.inference_mode(False)

    def __enter__(self) -> None:
        self.grad_mode.__enter__()
        if hasattr(self.model, "eval"):
            self.model.eval()

    def __exit__(self, *exc: object) -> None:
        if self.was_training:
            self.model.train(True)
        self.grad_mode.__exit__(*exc)


def compute_acr(model: Any, tokenizer: Any, target: str, config: ACRConfig | None = None,
                model_name: str | None = None) -> ACRResult:
    """Adversarial Compression Ratio of ``target`` under ``model``: |y| / |x*| for the shortest prompt found.

    Raises :class:`evalkit.errors.UsageError` for an empty target, one that does not fit the model's
    context, or a model that cannot be optimized against.
    """
    prep = _prepare(model, tokenizer, config, model_name)
    target_ids = encode_target(tokenizer, target)
    _prompt_cap(prep, target_ids)
    with _EvalMode(model):
        return _run_target(prep, target, target_ids)


class ACRSearch:
    """One model, tokenizer and config prepared once (scaffold, allowed tokens, the screen copy, packed linear
    layers), then any number of targets searched with it: what :func:`compute_acr_many` runs, and what a
    long-lived worker keeps so that each call does not remake the model copies.

    ``screen``: ``(kind, measurement)`` from :func:`resolve_screen` already made (so a run resolves "auto" once,
    and every worker of a run searches with the screen its resume fingerprint names); by default it is
    resolved here. ``linear_kernels``: ``(shapes, measurement)`` from :func:`resolve_linear_kernels`, likewise.
    """

    def __init__(self, model: Any, tokenizer: Any, config: ACRConfig | None = None, model_name: str | None = None,
                 screen: tuple[str | None, dict[str, Any] | None] | None = None,
                 linear_kernels: tuple[list[str], dict[str, Any] | None] | None = None) -> None:
        self.prepared = _prepare(model, tokenizer, config, model_name, screen, linear_kernels)

    def encode(self, targets: list[str]) -> list[list[int]]:
        """Each target's token ids; a UsageError naming the first target that is empty or does not fit."""
        encoded = []
        for index, target in enumerate(targets):
            try:
                encoded.append(encode_target(self.prepared.tokenizer, target))
                _prompt_cap(self.prepared, encoded[-1])
            except UsageError as error:
                raise UsageError(f"target {index}: {error}") from error
        return encoded

    def run(self, targets: Iterable[str], progress: bool = True,
            on_result: Callable[[ACRResult], None] | None = None) -> list[ACRResult]:
        """Every target validated first, then searched in order; ``on_result`` as each one finishes."""
        from evalkit.progress import progress_bar

        targets = list(targets)
        encoded = self.encode(targets)
        results = []
        with _EvalMode(self.prepared.model):
            for target, target_ids in progress_bar(zip(targets, encoded, strict=True), total=len(targets),
                                                   desc="ACR", enabled=progress):
                result = _run_target(self.prepared, target, target_ids)
                results.append(result)
                if on_result is not None:
                    on_result(result)
        return results


def compute_acr_many(model: Any, tokenizer: Any, targets: Iterable[str], config: ACRConfig | None = None,
                     progress: bool = True, on_result: Callable[[ACRResult], None] | None = None,
                     model_name: str | None = None,
                     screen: tuple[str | None, dict[str, Any] | None] | None = None,
                     linear_kernels: tuple[list[str], dict[str, Any] | None] | None = None) -> list[ACRResult]:
    """:func:`compute_acr` for each target, in order; every target is validated before any compute is spent.

    ``on_result(result)`` is called as each target finishes (e.g. to append a JSONL line), so a long run
    keeps what it has done. Each target's generator is seeded with ``config.seed`` alone, so a target's
    result does not depend on its position in the list. ``screen`` and ``linear_kernels``: as
    :class:`ACRSearch` takes them.
    """
    search = ACRSearch(model, tokenizer, config, model_name, screen, linear_kernels)
    return search.run(targets, progress=progress, on_result=on_result)
