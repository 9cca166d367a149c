"""The inner optimizer: Greedy Coordinate Gradient (Zou et al., 2023) at one fixed prompt length.

One GCG step, in the order the functions below are used:

1. :func:`token_gradient` -- gradient of the target loss w.r.t. a one-hot encoding of the free tokens
   (one forward + backward on a single sequence; the shared prefix comes from its KV cache).
2. :func:`sample_candidates` -- ``search_width`` prompts, each with ``n_replace`` positions swapped for
   one of the ``topk`` tokens whose gradient most decreases the loss.
3. :func:`score_candidates` -- every candidate, teacher forced, in memory-sized chunks under
   ``torch.inference_mode``: the loss *and* whether greedy decoding would emit the target exactly
   (argmax at every target position equals the target token), so a match is seen on any candidate,
   not only on the one GCG keeps.
4. :func:`optimize_length` -- the loop: stop as soon as a candidate matches and real generation confirms
   it; otherwise keep the lowest-loss prompt (never a worse one) and step again.

The target, its fixed context and the prefix KV cache live in a :class:`Problem` built once per target
by :func:`build_problem`.

Screening precision. A float32 model can be searched with a cheaper copy of itself (a :class:`Screen`: 16-bit
or int8, the fastest measured on this machine, see :mod:`acr.screens`): the copy scores every candidate, and
the model itself does everything that steers or ends the search. It computes
the gradient; it re-scores the ``Screen.rerank`` candidates the copy ranks best (those of them whose screened
loss could, within the copy's errors seen, be below the current prompt's), and GCG moves only to one of
those, by its exact loss; and it re-scores every candidate whose screened margin (target logit
minus the best other logit, at the worst target position) is within ``Screen.reach`` of a match, and
only that exact check -- then real generation -- can end a length. On SmolLM2 (one target at 5 prompt
tokens, eight seeds) this took exactly the float32 search's steps and losses at about half its time
per step; with the gradient and the ranking also taken from the copy, it needed more steps.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

# Candidate chunks are sized so their peak memory (mostly the target logits) stays under this on CPU.
CPU_CHUNK_BUDGET_BYTES = 1 << 30


@dataclass
class Screen:
    """A lower-precision copy of the model that scores candidates first.

    ``prefix_cache`` is the copy's own cache of the prefix. The ``rerank`` candidates with the lowest
    screened loss (those of them less than ``rerank_reach`` above the current prompt's loss), and every
    candidate whose screened margin is above ``-reach``, are re-scored by the model itself.

    Measured on SmolLM2 (bfloat16 screen, three targets, two seeds, every candidate within 4 logits
    re-scored: 10,090), all 20 exact matches had a screened margin of -0.25 or more, and near a match
    (screened margin above -1) bfloat16 moved margins by at most 0.57 logits; hence the default margin of
    0.5, widened as errors are seen. With the best four always re-scored, the copy overestimated a re-scored
    loss by at most 0.14 nats (the benchmark's quote, seeds 1 and 2; 0.009 on its counting target, seed 1).
    With a ``rerank_slack`` of 0.1, widened the same way, the benchmark's six searches (both targets, seeds
    0-2) took the same steps to the same losses and prompts with 508 re-scored candidates instead of 818.
    """

    model: Any
    prefix_cache: tuple | None
    margin: float
    rerank: int = 4
    rerank_slack: float = 0.1
    largest_error: float = 0.0  # largest |model margin - screened margin| seen on re-checked candidates
    largest_overestimate: float = 0.0  # largest screened loss - model loss seen on re-checked candidates

    @property
    def reach(self) -> float:
        """How far below a match a screened candidate is still re-checked: ``margin``, widened to 1.5 times
        the largest screening error measured so far on this target's re-checked candidates, so a model
        whose 16-bit copy is less faithful than expected is re-checked more widely rather than having
        matches missed."""
        return max(self.margin, 1.5 * self.largest_error)

    @property
    def rerank_reach(self) -> float:
        """How far above the current prompt's loss a best-ranked candidate's screened loss may be and still be
        re-scored to choose GCG's move: ``rerank_slack``, widened to 1.5 times the most the screen has
        overestimated a re-scored loss on this target. A candidate further above cannot, within the errors
        seen, be lower than the current prompt, and GCG never moves to a higher loss."""
        return max(self.rerank_slack, 1.5 * self.largest_overestimate)


@dataclass
class Problem:
    """One target with its fixed context: ``prefix + [free tokens] + suffix + target``.

    ``prefix`` is what precedes the free tokens (BOS, chat scaffold before the user turn); its KV cache is
    computed once here and expanded (a view, no copy) to every candidate batch. ``suffix`` follows the free
    tokens (end of the user turn, assistant header). Everything is on the model's device.
    """

    model: Any
    prefix_ids: Tensor  # (1, P)
    suffix_ids: Tensor  # (1, S)
    target_ids: Tensor  # (1, T)
    allowed: Tensor  # (V,) bool on CPU: tokens the free prompt may use
    prefix_cache: tuple | None  # legacy ((k, v), ...) per layer, batch 1; None when there is no prefix
    logits_kwarg: str | None  # "num_logits_to_keep" / "logits_to_keep" when the model can skip unused logits
    chunk_size: int  # candidates per forward; halved for good on an out-of-memory error
    screen: Screen | None = None  # None: the model itself scores every candidate
    keep: Callable[[Tensor], Tensor] | None = None  # which candidate prompts may be tried (e.g. re-tokenizing ones)
    packed: Any = None  # acr.kernels.PackedLinears: the model's packed linears, active only while it scores candidates
    forward_passes: int = 0  # candidate sequences scored so far (by the screen when there is one)
    exact_rechecks: int = 0  # screened candidates the model itself scored again (best-ranked and near-matches)
    pruned: int = 0  # scored candidates dropped before the target's end: they could not match or move GCG

    @property
    def device(self) -> torch.device:
        return self.target_ids.device

    def input_ids(self, prompt_ids: Tensor) -> list[int]:
        """Exactly what the model is fed for ``prompt_ids``: prefix + free tokens + suffix."""
        return torch.cat([self.prefix_ids[0].cpu(), prompt_ids.cpu(), self.suffix_ids[0].cpu()]).tolist()


def allowed_token_mask(tokenizer: Any, vocab_size: int, *, allow_special_tokens: bool = False,
                       allow_non_ascii: bool = True) -> Tensor:
    """Tokens the free prompt may use, as a bool mask over the embedding matrix's rows.

    Rows past the tokenizer's vocabulary (padded embedding matrices) are never allowed: they decode to
    nothing. Special tokens (BOS, EOS, PAD, added special tokens) are excluded by default so a prompt is
    text a user could type; ``allow_non_ascii=False`` also drops tokens whose text is non-ASCII,
    unprintable or undecodable (nanoGCG's default filter).
    """
    mask = torch.zeros(vocab_size, dtype=torch.bool)
    mask[: min(vocab_size, len(tokenizer))] = True
    if not allow_special_tokens:
        special = set(tokenizer.all_special_ids)
        for token_id, added in getattr(tokenizer, "added_tokens_decoder", {}).items():
            if getattr(added, "special", False):
                special.add(token_id)
        for token_id in special:
            if 0 <= token_id < vocab_size:
                mask[token_id] = False
    if not allow_non_ascii:
        ids = mask.nonzero().flatten().tolist()
        texts = tokenizer.batch_decode([[i] for i in ids])
        for token_id, text in zip(ids, texts, strict=True):
            if not text or not (text.isascii() and text.isprintable()):
                mask[token_id] = False
    if not mask.any():
        raise ValueError("no token is allowed in the prompt; loosen allow_special_tokens / allow_non_ascii")
    return mask


def logits_kwarg(model: Any) -> str | None:
    """Name of the forward argument that limits logits to the last positions, if the model has one."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return None
    for name in ("logits_to_keep", "num_logits_to_keep"):
        if name in params:
            return name
    return None


def _auto_chunk_size(model: Any, seq_len: int, target_len: int, search_width: int) -> int:
    """Candidates per forward so that one chunk's peak memory fits a budget.

    Under inference mode activations are freed layer by layer, so the peak per candidate is about the
    target logits (their statistics are taken slice by slice in one bounded buffer, see :func:`_target_stats`;
    half as much again is counted for what the allocator holds on to), one layer's widest activations and
    attention scores, and the K/V kept between the target's scoring stages. Counted as float32 throughout,
    so a screen's 16-bit chunk and the model's own both fit. Measured on SmolLM2 with the longest prompt
    the search tries (64 candidates, 29 prompt and 29 target tokens, float32, every candidate to the end):
    peak RSS grew by 715-768 MiB in two runs, against 846 MiB estimated. The estimate before (three times
    the logits, K/V as wide as the hidden size rather than the grouped-query K/V) split those 64 candidates
    into chunks of 38 and 26, which a bfloat16 screen scored 1.22x slower than one chunk (2 threads, median
    of 10 alternating calls).
    """
    config = model.config
    vocab = model.get_input_embeddings().weight.shape[0]
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", None) or 1024
    wide = max(hidden, getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * hidden)
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_head", None) or 16
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None) or 32
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    kv_width = (getattr(config, "num_key_value_heads", None) or heads) * head_dim
    positions = target_len + 1 if logits_kwarg(model) else seq_len  # without it, logits at every position
    per_candidate = 4 * (positions * vocab * 3 // 2 + 6 * seq_len * wide + heads * seq_len * seq_len
                         + 2 * layers * kv_width * seq_len)
    budget = CPU_CHUNK_BUDGET_BYTES
    device = model.get_input_embeddings().weight.device
    if device.type == "cuda":
        budget = max(budget, torch.cuda.mem_get_info(device)[0] // 2)
    return int(max(1, min(search_width, budget // max(1, per_candidate))))


def _prefix_cache(model: Any, prefix: Tensor) -> tuple | None:
    """The prefix's K/V per layer as a legacy tuple (batch 1); None for an empty prefix."""
    if prefix.shape[1] == 0:
        return None
    # no_grad, not inference_mode: the cache also feeds the gradient pass, and inference tensors
    # cannot be saved for backward.
    with torch.no_grad():
        return _legacy(model(input_ids=prefix, use_cache=True).past_key_values)


def build_problem(model: Any, prefix_ids: list[int], suffix_ids: list[int], target_ids: list[int],
                  allowed: Tensor, *, search_width: int, batch_size: int | None = None,
                  screen_model: Any = None, screen_margin: float = 0.5, screen_rerank: int = 4,
                  screen_rerank_slack: float = 0.1,
                  keep: Callable[[Tensor], Tensor] | None = None, packed: Any = None) -> Problem:
    """Put the fixed ids on the model's device and compute the prefix KV caches once per target.

    ``screen_model`` (from :func:`screen_copy`) scores candidates first; ``screen_margin`` is how close to
    a match, in logits, a screened candidate must come to be checked by the model itself, and
    ``screen_rerank`` how many of the best-ranked ones the model re-scores to choose GCG's next prompt (only
    those screened less than ``screen_rerank_slack`` above the current prompt's loss, see :class:`Screen`).
    ``keep(prompts) -> bool mask`` filters candidate prompts before they are scored (nanoGCG's ``filter_ids``).
    ``packed`` (:func:`acr.kernels.pack_linears`) are the model's linear layers packed for oneDNN, used while
    the model scores candidates.
    """
    device = model.get_input_embeddings().weight.device

    def as_row(ids: list[int]) -> Tensor:
        return torch.tensor([ids], dtype=torch.long, device=device).reshape(1, len(ids))

    prefix, suffix, target = as_row(prefix_ids), as_row(suffix_ids), as_row(target_ids)
    screen = None
    if screen_model is not None:
        screen = Screen(model=screen_model, prefix_cache=_prefix_cache(screen_model, prefix), margin=screen_margin,
                        rerank=screen_rerank, rerank_slack=screen_rerank_slack)
    # Longest sequence a chunk will see: prefix + a prompt as long as the target + suffix + target.
    longest = prefix.shape[1] + suffix.shape[1] + 2 * target.shape[1]
    chunk = batch_size or _auto_chunk_size(model, longest, target.shape[1], search_width)
    return Problem(model=model, prefix_ids=prefix, suffix_ids=suffix, target_ids=target, allowed=allowed,
                   prefix_cache=_prefix_cache(model, prefix), logits_kwarg=logits_kwarg(model), chunk_size=chunk,
                   screen=screen, keep=keep, packed=packed)


def _cache_for(model: Any, cache: tuple, batch: int) -> Any:
    """A fresh cache object holding legacy ``((k, v), ...)`` K/V, expanded (as views) to ``batch`` rows.

    Fresh per call because a ``DynamicCache`` is appended to in place by the forward pass; the tensors
    themselves are never written (the new K/V are concatenated into new tensors).
    """
    legacy = tuple((k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)) for k, v in cache)
    if getattr(model, "_supports_cache_class", False):
        from transformers import DynamicCache

        return DynamicCache.from_legacy_cache(legacy)
    return legacy


def _legacy(past: Any) -> tuple:
    past = past.to_legacy_cache() if hasattr(past, "to_legacy_cache") else past
    return tuple((layer[0], layer[1]) for layer in past)


def token_gradient(problem: Problem, prompt_ids: Tensor) -> Tensor:
    """Gradient of the mean target cross-entropy w.r.t. the one-hot free tokens: (L, V).

    The one-hot matrix times the embedding matrix gives the free tokens' embeddings, so the gradient says,
    to first order, how much swapping in each vocabulary token at each position would change the loss.
    Always the model's own: one sequence, cheap next to the candidates, and a bfloat16 gradient was
    measured to make GCG need more steps.
    """
    model, cache = problem.model, problem.prefix_cache
    embedding = model.get_input_embeddings()
    weight = embedding.weight
    one_hot = torch.nn.functional.one_hot(prompt_ids.to(weight.device), num_classes=weight.shape[0])
    one_hot = one_hot.to(weight.dtype).unsqueeze(0).requires_grad_(True)
    with torch.enable_grad():
        fixed = embedding(torch.cat([problem.suffix_ids, problem.target_ids[:, :-1]], dim=1))
        embeds = torch.cat([one_hot @ weight, fixed], dim=1)
        # free + suffix + target tokens but the last (no position predicts from it), after the cached prefix
        logits, _ = _forward(problem, model, cache, problem.target_ids.shape[1], embeds=embeds)
        loss = torch.nn.functional.cross_entropy(logits[0].float(), problem.target_ids[0])
        (grad,) = torch.autograd.grad(loss, [one_hot])
    return grad[0].detach().float().cpu()


def _first_occurrences(rows: Tensor) -> Tensor:
    """The distinct rows of ``rows`` in the order they first appear (``torch.unique`` sorts them)."""
    if rows.shape[0] == 0:
        return rows
    _, inverse = torch.unique(rows, dim=0, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), rows.shape[0], dtype=torch.long)
    first.scatter_reduce_(0, inverse, torch.arange(rows.shape[0]), reduce="amin")
    return rows[first.sort().values]


def sample_candidates(prompt_ids: Tensor, grad: Tensor, allowed: Tensor, *, search_width: int, topk: int,
                      n_replace: int, generator: torch.Generator,
                      exclude: set[tuple[int, ...]] | None = None) -> Tensor:
    """Up to ``search_width`` distinct prompts, each differing from ``prompt_ids`` at ``n_replace`` positions.

    Each swap draws uniformly among the ``topk`` allowed tokens with the most negative gradient at that
    position. When every single swap fits in the width (short prompts, small vocabularies), all of them
    are taken instead of a random sample. Duplicates, the unchanged prompt and the prompts in ``exclude``
    (already scored at this length) are dropped: scoring them again would be wasted forward passes. To
    keep the width anyway, four times as many swaps are drawn and the first ``search_width`` new ones
    kept, in the order drawn. Runs on CPU with the seeded ``generator``.
    """
    length = prompt_ids.shape[0]
    n_replace = min(n_replace, length)
    scores = grad.masked_fill(~allowed[: grad.shape[1]], float("inf"))
    k = int(min(topk, int(allowed[: grad.shape[1]].sum())))
    top = (-scores).topk(k, dim=1).indices  # (L, k)
    if n_replace == 1 and length * k <= search_width:
        positions = torch.arange(length).repeat_interleave(k)
        candidates = prompt_ids.repeat(length * k, 1)
        candidates[torch.arange(length * k), positions] = top.flatten()
    else:
        draws = 4 * search_width  # duplicates and excluded draws are dropped; the first new ones are kept
        candidates = prompt_ids.repeat(draws, 1)
        positions = torch.rand((draws, length), generator=generator).argsort(dim=1)[:, :n_replace]
        choice = torch.randint(0, k, (draws, n_replace), generator=generator)
        candidates.scatter_(1, positions, top[positions, choice])
    candidates = _first_occurrences(candidates)
    keep = (candidates != prompt_ids).any(dim=1)
    if exclude:
        keep &= torch.tensor([tuple(row) not in exclude for row in candidates.tolist()], dtype=torch.bool)
    return candidates[keep][:search_width]


def _is_oom(error: RuntimeError) -> bool:
    text = str(error).lower()
    return "out of memory" in text or "can't allocate memory" in text


# On CPU, logits are reduced in slices of about this many bytes (as float32): small enough that the
# temporaries are reused from the allocator instead of being mapped and faulted in afresh (measured 3x
# faster than one pass over 64 SmolLM2 candidates).
STATS_SLICE_BYTES = 1 << 23

# The target is scored in stages ending at these fractions of its tokens (at least MIN_STAGE_TOKENS each).
# After a stage, a candidate that already mispredicts a target token, is already further than ``reach``
# from a match, and whose cross-entropy so far already reaches the best complete loss is not scored
# further: cross-entropy is never negative, so its full loss can only be higher, and it can neither end
# the length nor be the prompt GCG moves to. GCG's candidates mostly differ from a prompt whose loss is
# concentrated on the first target tokens, so most stop early (see :func:`_teacher_forced`). Targets shorter
# than STAGED_FROM_TOKENS are scored in one stage: measured on SmolLM2 (float32, 2 threads, 8 GCG steps of 64
# candidates), a 29-token target scored 1.43-1.57x faster in stages, an 8-token quote 0.85-1.04x (too little
# of it is left to skip).
STAGE_FRACTIONS = (0.25, 0.5, 1.0)
MIN_STAGE_TOKENS = 2
STAGED_FROM_TOKENS = 16


def _stage_ends(n_target: int) -> list[int]:
    """How many target tokens are predicted after each stage, e.g. 29 -> [8, 15, 29]; 8 -> [8]."""
    if n_target < STAGED_FROM_TOKENS:
        return [n_target]
    return sorted({min(n_target, max(MIN_STAGE_TOKENS, math.ceil(f * n_target))) for f in STAGE_FRACTIONS})


def _target_stats(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per candidate, from its logits at some target positions (B, K, V) and those K target tokens:
    cross-entropy summed over the positions, whether the argmax is the target at every one, and the margin
    (target logit minus the best other) at the worst one.

    Lower-precision logits (a screen's) are copied slice by slice, as float32, into one buffer reused for
    every slice, and the log-sum-exp is taken in place there: the same operations as ``torch.logsumexp``
    (max, subtract, exp, sum, log, add), so the same sums bit for bit (torch 2.13), without the fresh slice-sized
    temporaries and their page faults: on bfloat16 logits of 64 candidates x 8 positions x 49,152 tokens,
    1.01-2.24x faster in seven runs, median 1.98x. Float32 logits are read where they are (a copy would
    cost more than the one temporary ``torch.logsumexp`` makes)."""
    rows = max(1, STATS_SLICE_BYTES // (4 * logits.shape[1] * logits.shape[2]))
    if logits.device.type != "cpu":
        rows = logits.shape[0]  # accelerators: one pass, no slicing
    buffer = None
    if logits.dtype != torch.float32:
        buffer = torch.empty((min(rows, logits.shape[0]), *logits.shape[1:]), dtype=torch.float32,
                             device=logits.device)
    sums, matches, margins = [], [], []
    for start in range(0, logits.shape[0], rows):
        part = logits[start:start + rows]
        if buffer is not None:
            part = buffer[:part.shape[0]].copy_(part)
        labels = target.expand(part.shape[0], -1)
        picked = part.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
        margin = _margins(part, labels, picked)
        match = margin > 0
        tied = (margin == 0).any(dim=1)  # the target ties the best other logit: argmax picks the first index
        if tied.any():
            match[tied] = part[tied].argmax(dim=-1) == labels[tied]
        if buffer is None:
            log_sum_exp = torch.logsumexp(part, dim=-1)
        else:  # torch.logsumexp's steps, in place in the buffer
            top = part.amax(dim=-1, keepdim=True)
            top.masked_fill_(top.abs() == float("inf"), 0.0)  # as torch.logsumexp: an infinite max is not subtracted
            log_sum_exp = part.sub_(top).exp_().sum(dim=-1).log_().add_(top.squeeze(-1))
        sums.append((log_sum_exp - picked).sum(dim=1))
        matches.append(match.all(dim=1))
        margins.append(margin.min(dim=1).values)
    return tuple(torch.cat(values).cpu() for values in (sums, matches, margins))


def _margins(logits: Tensor, labels: Tensor, picked: Tensor) -> Tensor:
    """Target logit minus the best other logit, per candidate and position: one max over the vocabulary, and
    a second one, with the target masked, only where the target is the largest (measured 2.0-2.7x faster than
    ``topk(2)`` plus ``argmax`` on the logits of 64 candidates x 8 positions x SmolLM2's 49,152 tokens)."""
    best_other = logits.amax(dim=-1)
    leads = picked >= best_other
    if leads.any():
        rows, positions = leads.nonzero(as_tuple=True)
        others = logits[rows, positions].scatter(-1, labels[rows, positions].unsqueeze(-1), float("-inf"))
        best_other[rows, positions] = others.amax(dim=-1)
    return picked - best_other


def _forward(problem: Problem, model: Any, past: tuple | None, n_logits: int, *, ids: Tensor | None = None,
             embeds: Tensor | None = None, keep_cache: bool = False,
             shared: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, tuple | None]:
    """One forward of ``model`` over ``ids`` (or their embeddings ``embeds``) after ``past`` (legacy K/V of that
    model, batch 1 or the batch's): the logits at the last ``n_logits`` positions (where the model supports it,
    the LM head runs only over those), and with ``keep_cache`` the K/V of everything seen so far. ``shared``
    (``(prompt, first)``, for a model that ``shares_start``): row ``i`` of ``ids`` starts as ``prompt`` up to
    position ``first[i]``, which the model then need not recompute."""
    inputs = {"input_ids": ids} if embeds is None else {"inputs_embeds": embeds}
    batch = next(iter(inputs.values())).shape[0]
    kwargs: dict[str, Any] = {"use_cache": keep_cache or past is not None}
    if past is not None:
        kwargs["past_key_values"] = _cache_for(model, past, batch)
    if problem.logits_kwarg is not None:
        kwargs[problem.logits_kwarg] = n_logits
    if shared is not None:
        kwargs["shared_start"] = shared
    out = model(**inputs, **kwargs)
    return out.logits[:, -n_logits:, :], (_legacy(out.past_key_values) if keep_cache else None)


def _rows_of(past: tuple, rows: Tensor) -> tuple:
    return tuple((k[rows], v[rows]) for k, v in past)


@dataclass
class _Chunk:
    """Running totals of one chunk of candidates scored stage by stage (on CPU)."""

    sums: Tensor  # cross-entropy summed over the target tokens scored so far
    matches: Tensor  # argmax equals the target at every position scored so far
    margins: Tensor  # worst margin over the positions scored so far
    scored: Tensor  # target tokens scored so far, per candidate

    def add(self, rows: Tensor, stats: tuple[Tensor, Tensor, Tensor], tokens: int) -> None:
        sums, matches, margins = stats
        self.sums[rows] += sums
        self.matches[rows] &= matches
        self.margins[rows] = torch.minimum(self.margins[rows], margins)
        self.scored[rows] += tokens


def _shared_start(model: Any, chunk: Tensor, base: Tensor | None) -> tuple[Tensor, Tensor] | None:
    """``(base, first)`` for a model that can start each candidate where it first differs from the prompt it was
    drawn from (:class:`acr.llama_screen.SharedStartLlama`); None for any other model or without a base."""
    if base is None or not getattr(model, "shares_start", False) or chunk.shape[1] != base.shape[0]:
        return None
    differs = chunk.cpu() != base.cpu()
    first = torch.where(differs.any(dim=1), differs.int().argmax(dim=1), chunk.shape[1])
    return base, first


def _score_chunk(problem: Problem, model: Any, cache: tuple | None, chunk: Tensor, *, keep: int | None,
                 bar: list[float], below: float, reach: float | None, base: Tensor | None = None) -> _Chunk:
    """Score one chunk stage by stage (see :data:`STAGE_FRACTIONS`), every candidate to the end when ``keep``
    is None. Otherwise the ``keep`` lowest complete loss sums seen so far (``bar``, updated in place) and
    ``below`` set the bar a candidate's partial sum must stay under to go on. ``base``: the prompt the chunk's
    candidates were drawn from (see :func:`_shared_start`)."""
    target = problem.target_ids
    n_target, n = target.shape[1], chunk.shape[0]
    ends = _stage_ends(n_target) if keep is not None else [n_target]
    state = _Chunk(torch.zeros(n), torch.ones(n, dtype=torch.bool), torch.full((n,), float("inf")),
                   torch.zeros(n, dtype=torch.long))
    # Inputs: free + suffix + target but its last token; the logit at input j predicts input j + 1.
    ids = torch.cat([chunk.to(problem.device), torch.cat([problem.suffix_ids, target[:, :-1]], dim=1)
                     .expand(n, -1)], dim=1)
    offset = ids.shape[1] - (n_target - 1)  # inputs before the first target token
    logits, past = _forward(problem, model, cache, ends[0], ids=ids[:, :offset + ends[0] - 1],
                            keep_cache=len(ends) > 1, shared=_shared_start(model, chunk, base))
    state.add(torch.arange(n), _target_stats(logits, target[0, :ends[0]]), ends[0])
    del logits
    if len(ends) == 1:
        return state
    alive = torch.arange(n)

    def run_to(rows: Tensor, done: int, stop: int) -> tuple | None:
        """Score ``rows`` (indices into ``alive``'s K/V) over target tokens done..stop; their new K/V."""
        logits, more = _forward(problem, model, _rows_of(past, rows), stop - done,
                                ids=ids[alive[rows], offset + done - 1:offset + stop - 1], keep_cache=stop < n_target)
        state.add(alive[rows], _target_stats(logits, target[0, done:stop]), stop - done)
        return more

    # Best first: the lowest partial sums are scored to the end at once, so the bar is set before pruning.
    need = keep - len(bar)
    if need > 0:
        first = state.sums.topk(min(need, n), largest=False).indices
        run_to(first, ends[0], n_target)
        bar.extend(state.sums[first].tolist())
    for done, stop in zip(ends, ends[1:], strict=False):
        cut = min(below * n_target, sorted(bar)[keep - 1] if len(bar) >= keep else float("inf"))
        rows = alive[state.scored[alive] < n_target]
        can_matter = state.matches[rows] | (state.sums[rows] < cut)
        if reach is not None:
            can_matter |= state.margins[rows] > -reach
        kept = rows[can_matter]
        if kept.numel() == 0:
            break
        past = run_to(torch.searchsorted(alive, kept), done, stop)
        alive = kept
        if stop == n_target:
            bar.extend(state.sums[kept].tolist())
    return state


def _teacher_forced(problem: Problem, model: Any, cache: tuple | None, candidates: Tensor, *,
                    keep: int | None = None, below: float = float("inf"), reach: float | None = None,
                    base: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """``model``'s loss, exact-match flag and margin for every candidate, in memory-sized chunks (on CPU).

    The margin is the target logit minus the best other logit at the target's worst position: positive
    where greedy decoding emits the whole target (the flag itself is the plain argmax test, so ties are
    broken exactly as ``generate`` breaks them).

    With ``keep``, only what can decide the step is scored to the end: the ``keep`` lowest losses, every
    loss below ``below``, every match and (given ``reach``) every candidate within ``reach`` of a match.
    The rest stop after the first stage that rules them out (:data:`STAGE_FRACTIONS`) and get an infinite
    loss and their margin so far (an upper bound, already at most ``-reach``). The scores that are
    computed are the same either way: each stage continues from the K/V of the one before.

    ``base``: the prompt the candidates were drawn from; a model that ``shares_start`` then computes each
    candidate only from where it first differs from it.
    """
    n = candidates.shape[0]
    losses, matches, margins = torch.empty(n), torch.zeros(n, dtype=torch.bool), torch.empty(n)
    n_target = problem.target_ids.shape[1]
    bar: list[float] = []
    start = 0
    kernels = problem.packed.active() if problem.packed is not None and model is problem.model \
        else contextlib.nullcontext()
    with torch.inference_mode(), kernels:
        while start < n:
            stop = min(n, start + problem.chunk_size)
            chunk_bar = list(bar)  # kept only if the chunk finishes (an out-of-memory retry starts it again)
            try:
                state = _score_chunk(problem, model, cache, candidates[start:stop], keep=keep, bar=chunk_bar,
                                     below=below, reach=reach, base=base)
            except RuntimeError as error:
                if not _is_oom(error) or problem.chunk_size == 1:
                    raise
                problem.chunk_size = max(1, problem.chunk_size // 2)
                if problem.device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            bar[:] = chunk_bar
            complete = state.scored == n_target
            losses[start:stop] = torch.where(complete, state.sums / n_target, float("inf"))
            matches[start:stop] = state.matches & complete
            margins[start:stop] = state.margins
            problem.pruned += int((~complete).sum())
            start = stop
    return losses, matches, margins


def score_candidates(problem: Problem, candidates: Tensor, below: float = float("inf"),
                     base: Tensor | None = None,
                     confirm: Callable[[list[int]], bool] | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Teacher-forced loss and exact-match flag of every candidate that can matter: ``(losses, matches, exact)``
    on CPU.

    ``matches[i]`` is true when the argmax at every target position equals the target token. That holds
    exactly when greedy decoding from candidate ``i`` emits the whole target (each greedy step sees the
    same prefix teacher forcing does, as long as every earlier step was right), so all candidates of a
    step are checked for success in the same forward pass that scores them.

    Candidates that can neither match nor be the lowest loss (nor, with a screen, be among its best-ranked
    or near-matches), nor have a loss under ``below`` (the current prompt's), are not scored past the
    target token that shows it; their loss is ``inf`` (see :func:`_teacher_forced`).

    ``exact[i]`` says that ``losses[i]`` is the model's own. Without a screen all finite ones are. With one,
    every loss is first the screen's; the ``screen.rerank`` lowest (those of them less than
    ``screen.rerank_reach`` above ``below``: a higher one cannot become GCG's next prompt) and every candidate
    the screen puts within ``screen.reach`` of a match are scored again by the model, and those get its loss
    and its match flag (the only flags that can be true). When none qualifies the model scores nothing.

    ``base`` is the prompt the candidates were drawn from (GCG's current one): a screen that can
    (:class:`acr.llama_screen.SharedStartLlama`) takes the K/V of the tokens a candidate shares with it from it.

    ``confirm(indices)`` is given the model's matches, lowest loss first, and says whether one of them is
    accepted (real generation confirmed it). With a screen, the near-matches are then re-scored in batches
    (see :data:`RECHECK_BATCHES`), the screen's closest to a match first and the best-ranked last, and
    re-scoring stops at the first batch with an accepted match: the rest are left to the screen (not
    ``exact``, no match). GCG needs only one match to end a length; when a step has many near-matches
    (typically the step that ends it), re-scoring all of them cost more than the step's screen pass.
    """
    screen = problem.screen
    if screen is None:
        losses, matches, _ = _teacher_forced(problem, problem.model, problem.prefix_cache, candidates, keep=1,
                                             below=below, base=base)
        problem.forward_passes += candidates.shape[0]
        if confirm is not None and matches.any():
            confirm(_by_loss(matches.nonzero().flatten(), losses))
        return losses, matches, torch.isfinite(losses)
    losses, _, margins = _teacher_forced(problem, screen.model, screen.prefix_cache, candidates,
                                         keep=screen.rerank, reach=screen.reach, base=base)
    problem.forward_passes += candidates.shape[0]
    near = margins > -screen.reach
    ranked = losses.topk(min(screen.rerank, losses.shape[0]), largest=False).indices
    ranked = ranked[losses[ranked] < below + screen.rerank_reach]
    ranked = ranked[~near[ranked]]
    closest = near.nonzero().flatten()
    closest = closest[margins[closest].argsort(descending=True, stable=True)]
    exact = torch.zeros(candidates.shape[0], dtype=torch.bool)
    matches = torch.zeros(candidates.shape[0], dtype=torch.bool)
    losses = losses.clone()
    for chosen in _recheck_batches(closest, ranked, batched=confirm is not None):
        exact_losses, exact_matches, exact_margins = _teacher_forced(problem, problem.model, problem.prefix_cache,
                                                                     candidates[chosen])
        problem.exact_rechecks += chosen.numel()
        was_near = near[chosen]
        if was_near.any():
            errors = (exact_margins[was_near] - margins[chosen][was_near]).abs()
            screen.largest_error = max(screen.largest_error, float(errors.max()))
        both = torch.isfinite(losses[chosen])  # a near-match the screen stopped scoring has no screened loss
        if both.any():
            over = losses[chosen][both] - exact_losses[both]
            screen.largest_overestimate = max(screen.largest_overestimate, float(over.max()))
        exact[chosen] = True
        matches[chosen] = exact_matches
        losses[chosen] = exact_losses
        if confirm is not None and exact_matches.any() and confirm(_by_loss(chosen[exact_matches], losses)):
            break
    return losses, matches, exact


# With a ``confirm`` callback, a screen's near-matches are re-scored by the model in batches of these sizes
# (then of the last size), closest to a match first; the best-ranked candidates close the last batch.
# Measured on SmolLM2 (float32, 2 threads, the benchmark's 29-token counting target at 5 prompt tokens): a
# re-check costs about 90 ms plus 85 ms per candidate, and the step that ends a length had 15 and 33
# near-matches, of which 1 and 7 matched.
RECHECK_BATCHES = (4, 8, 16)
# How a screened search re-checks near-matches: named in the resume fingerprint of runs with a screen, so rows a
# search made when every near-match was re-checked at once (it could end a length on another match) are not mixed in.
RECHECKS = "batched-until-confirmed"


def _recheck_batches(closest: Tensor, ranked: Tensor, *, batched: bool) -> list[Tensor]:
    """The candidates the model re-scores, in the batches it scores them: ``closest`` (near-matches, closest
    first) in :data:`RECHECK_BATCHES`, ``ranked`` (best-ranked, not near) with the last; one batch of all
    when not ``batched``. No batch is empty."""
    if not batched:
        whole = torch.cat([closest, ranked]).sort().values
        return [whole] if whole.numel() else []
    batches, start = [], 0
    while start < closest.numel():
        size = RECHECK_BATCHES[min(len(batches), len(RECHECK_BATCHES) - 1)]
        batches.append(closest[start:start + size])
        start += size
    if ranked.numel():
        if batches:
            batches[-1] = torch.cat([batches[-1], ranked])
        else:
            batches.append(ranked)
    return batches


def _by_loss(indices: Tensor, losses: Tensor) -> list[int]:
    """``indices`` ordered by their ``losses``, lowest first (ties in index order)."""
    return indices[losses[indices].argsort(stable=True)].tolist()


@dataclass
class LengthOutcome:
    """What GCG achieved at one prompt length."""

    prompt_ids: Tensor  # (L,) on CPU: the matching prompt on success, else the lowest-loss one
    loss: float
    success: bool
    steps: int
    false_matches: int = 0


def random_prompt(allowed: Tensor, length: int, generator: torch.Generator) -> Tensor:
    """``length`` allowed tokens drawn uniformly with the seeded generator (a start or a restart)."""
    pool = allowed.nonzero().flatten()
    return pool[torch.randint(0, pool.shape[0], (length,), generator=generator)]


class _Verifier:
    """Real greedy generation over a step's teacher-forced matches, lowest loss first (the ``confirm`` of
    :func:`score_candidates`): the first it confirms is the step's ``hit``; the ones it rejects (a near-tie
    that batched and incremental numerics break differently) are counted, not accepted."""

    def __init__(self, problem: Problem, verify: Callable[[list[int]], bool]) -> None:
        self.problem, self.verify = problem, verify
        self.rejected = 0
        self.hit: int | None = None

    def of(self, candidates: Tensor, usable: Tensor | None = None) -> Callable[[list[int]], bool]:
        """The ``confirm`` for one step's ``candidates``; ``usable``: a bool per candidate, those that may end the
        length (a start that fails the ``keep`` filter may not)."""
        self.hit = None

        def confirm(indices: list[int]) -> bool:
            for index in indices:
                if usable is not None and not usable[index]:
                    continue
                if self.verify(self.problem.input_ids(candidates[index])):
                    self.hit = index
                    return True
                self.rejected += 1
            return False

        return confirm


def _best_exact(losses: Tensor, exact: Tensor) -> tuple[int, float]:
    """Index and value of the lowest loss among those the model itself computed (GCG only moves by exact
    losses); ``inf`` when it computed none."""
    masked = losses.masked_fill(~exact, float("inf"))
    best = int(masked.argmin())
    return best, float(masked[best])


def optimize_length(problem: Problem, init_ids: Tensor, *, steps: int, search_width: int, topk: int,
                    n_replace: int, generator: torch.Generator,
                    verify: Callable[[list[int]], bool]) -> LengthOutcome:
    """Run GCG on prompts of one length until one emits the target or ``steps`` run out.

    ``init_ids`` is one start ``(L,)`` or several ``(K, L)`` (e.g. every deletion of a longer working
    prompt): all are scored, a verified match ends the length at zero steps, else the lowest-loss start
    is optimized. ``verify(input_ids)`` runs real greedy generation; a teacher-forced match it does not
    confirm (a near-tie that batched and incremental numerics break differently) is counted, not accepted.

    Because a worse prompt is never accepted, GCG can stay on one prompt for several steps. While it
    does, its gradient is reused rather than recomputed, and no prompt already scored at this length is
    scored again; when every ``n_replace``-token swap within the top-k has been scored (a local optimum
    for such swaps), the step swaps one more position instead.
    """
    starts = (init_ids if init_ids.dim() == 2 else init_ids.unsqueeze(0)).cpu()
    verifier = _Verifier(problem, verify)
    # a start that may not be used is still a place to optimize from
    usable = problem.keep(starts) if problem.keep is not None else None
    losses, _, exact = score_candidates(problem, starts, confirm=verifier.of(starts, usable))
    if verifier.hit is not None:
        return LengthOutcome(starts[verifier.hit].clone(), float(losses[verifier.hit]), True, 0, verifier.rejected)
    scored = {tuple(row) for row in starts.tolist()}
    best, best_loss = _best_exact(losses, exact)
    current = starts[best].clone()
    grad = None
    done = 0
    while done < steps:
        done += 1
        if grad is None:
            grad = token_gradient(problem, current)
        candidates = torch.empty(0, current.shape[0], dtype=torch.long)
        for swaps in range(min(n_replace, current.shape[0]), current.shape[0] + 1):
            candidates = sample_candidates(current, grad, problem.allowed, search_width=search_width, topk=topk,
                                           n_replace=swaps, generator=generator, exclude=scored)
            if problem.keep is not None and candidates.shape[0]:
                scored.update(tuple(row) for row in candidates.tolist())  # filtered ones count as tried
                candidates = candidates[problem.keep(candidates)]
            if candidates.shape[0]:
                break
        if candidates.shape[0] == 0:  # every reachable prompt has been scored: nothing left to try
            break
        losses, _, exact = score_candidates(problem, candidates, below=best_loss, base=current,
                                            confirm=verifier.of(candidates))
        scored.update(tuple(row) for row in candidates.tolist())
        if verifier.hit is not None:
            return LengthOutcome(candidates[verifier.hit].clone(), float(losses[verifier.hit]), True, done,
                                 verifier.rejected)
        best, loss = _best_exact(losses, exact)
        if loss < best_loss:
            best_loss, current, grad = loss, candidates[best].clone(), None
    return LengthOutcome(current, best_loss, False, done, verifier.rejected)
