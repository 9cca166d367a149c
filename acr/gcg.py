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
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

# Candidate chunks are sized so their logits (and the softmax temporaries) stay under this on CPU.
CPU_CHUNK_BUDGET_BYTES = 1 << 30


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
    forward_passes: int = 0  # candidate sequences scored so far

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


def _logits_kwarg(model: Any) -> str | None:
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
    target logits (plus log-softmax temporaries) and one layer's widest activations and attention scores.
    """
    config = model.config
    vocab = model.get_input_embeddings().weight.shape[0]
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", None) or 1024
    wide = max(hidden, getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * hidden)
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_head", None) or 16
    per_candidate = 4 * (3 * (target_len + 1) * vocab + 6 * seq_len * wide + heads * seq_len * seq_len)
    budget = CPU_CHUNK_BUDGET_BYTES
    device = model.get_input_embeddings().weight.device
    if device.type == "cuda":
        budget = max(budget, torch.cuda.mem_get_info(device)[0] // 2)
    return int(max(1, min(search_width, budget // max(1, per_candidate))))


def build_problem(model: Any, prefix_ids: list[int], suffix_ids: list[int], target_ids: list[int],
                  allowed: Tensor, *, search_width: int, batch_size: int | None = None) -> Problem:
    """Put the fixed ids on the model's device and compute the prefix KV cache once per target."""
    device = model.get_input_embeddings().weight.device

    def as_row(ids: list[int]) -> Tensor:
        return torch.tensor([ids], dtype=torch.long, device=device).reshape(1, len(ids))

    prefix, suffix, target = as_row(prefix_ids), as_row(suffix_ids), as_row(target_ids)
    cache = None
    if prefix.shape[1] > 0:
        # no_grad, not inference_mode: the cache also feeds the gradient pass, and inference tensors
        # cannot be saved for backward.
        with torch.no_grad():
            past = model(input_ids=prefix, use_cache=True).past_key_values
        past = past.to_legacy_cache() if hasattr(past, "to_legacy_cache") else past
        cache = tuple((layer[0], layer[1]) for layer in past)
    # Longest sequence a chunk will see: prefix + a prompt as long as the target + suffix + target.
    longest = prefix.shape[1] + suffix.shape[1] + 2 * target.shape[1]
    chunk = batch_size or _auto_chunk_size(model, longest, target.shape[1], search_width)
    return Problem(model=model, prefix_ids=prefix, suffix_ids=suffix, target_ids=target, allowed=allowed,
                   prefix_cache=cache, logits_kwarg=_logits_kwarg(model), chunk_size=chunk)


def _expanded_cache(problem: Problem, batch: int) -> Any:
    """A fresh cache object holding the prefix K/V expanded (as views) to ``batch`` rows.

    Fresh per call because a ``DynamicCache`` is appended to in place by the forward pass; the expanded
    views themselves are never written (the new K/V are concatenated into new tensors).
    """
    legacy = tuple((k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)) for k, v in problem.prefix_cache)
    if getattr(problem.model, "_supports_cache_class", False):
        from transformers import DynamicCache

        return DynamicCache.from_legacy_cache(legacy)
    return legacy


def _target_logits(problem: Problem, *, input_ids: Tensor | None = None,
                   inputs_embeds: Tensor | None = None) -> Tensor:
    """Logits at the positions that predict the target tokens: (batch, T, V).

    The prefix is supplied from its cache, so the forward runs only over free + suffix + target tokens,
    and (where the model supports it) the LM head runs only over the last T + 1 positions.
    """
    given = input_ids if input_ids is not None else inputs_embeds
    batch = given.shape[0]
    n_target = problem.target_ids.shape[1]
    kwargs: dict[str, Any] = {"use_cache": problem.prefix_cache is not None}
    if problem.prefix_cache is not None:
        kwargs["past_key_values"] = _expanded_cache(problem, batch)
    if problem.logits_kwarg is not None:
        kwargs[problem.logits_kwarg] = n_target + 1
    if input_ids is not None:
        logits = problem.model(input_ids=input_ids, **kwargs).logits
    else:
        logits = problem.model(inputs_embeds=inputs_embeds, **kwargs).logits
    return logits[:, -(n_target + 1):-1, :]


def token_gradient(problem: Problem, prompt_ids: Tensor) -> Tensor:
    """Gradient of the mean target cross-entropy w.r.t. the one-hot free tokens: (L, V).

    The one-hot matrix times the embedding matrix gives the free tokens' embeddings, so the gradient says,
    to first order, how much swapping in each vocabulary token at each position would change the loss.
    """
    embedding = problem.model.get_input_embeddings()
    weight = embedding.weight
    one_hot = torch.nn.functional.one_hot(prompt_ids.to(weight.device), num_classes=weight.shape[0])
    one_hot = one_hot.to(weight.dtype).unsqueeze(0).requires_grad_(True)
    with torch.enable_grad():
        fixed = embedding(torch.cat([problem.suffix_ids, problem.target_ids], dim=1))
        embeds = torch.cat([one_hot @ weight, fixed], dim=1)
        logits = _target_logits(problem, inputs_embeds=embeds)
        loss = torch.nn.functional.cross_entropy(logits[0].float(), problem.target_ids[0])
        (grad,) = torch.autograd.grad(loss, [one_hot])
    return grad[0].detach().float().cpu()


def sample_candidates(prompt_ids: Tensor, grad: Tensor, allowed: Tensor, *, search_width: int, topk: int,
                      n_replace: int, generator: torch.Generator) -> Tensor:
    """Up to ``search_width`` distinct prompts, each differing from ``prompt_ids`` at ``n_replace`` positions.

    Each swap draws uniformly among the ``topk`` allowed tokens with the most negative gradient at that
    position. When every single swap fits in the width (short prompts, small vocabularies), all of them
    are taken instead of a random sample. Duplicates and the unchanged prompt are dropped: scoring them
    again would be wasted forward passes. Runs on CPU with the seeded ``generator``.
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
        candidates = prompt_ids.repeat(search_width, 1)
        positions = torch.rand((search_width, length), generator=generator).argsort(dim=1)[:, :n_replace]
        choice = torch.randint(0, k, (search_width, n_replace), generator=generator)
        candidates.scatter_(1, positions, top[positions, choice])
    candidates = torch.unique(candidates, dim=0)
    keep = (candidates != prompt_ids).any(dim=1)
    return candidates[keep]


def _is_oom(error: RuntimeError) -> bool:
    text = str(error).lower()
    return "out of memory" in text or "can't allocate memory" in text


def score_candidates(problem: Problem, candidates: Tensor) -> tuple[Tensor, Tensor]:
    """Teacher-forced loss and exact-match flag of every candidate prompt: ``(losses, matches)`` on CPU.

    ``matches[i]`` is true when the argmax at every target position equals the target token. That holds
    exactly when greedy decoding from candidate ``i`` emits the whole target (each greedy step sees the
    same prefix teacher forcing does, as long as every earlier step was right), so all candidates of a
    step are checked for success in the same forward pass that scores them.
    """
    n = candidates.shape[0]
    losses, matches = torch.empty(n), torch.zeros(n, dtype=torch.bool)
    target = problem.target_ids
    fixed = torch.cat([problem.suffix_ids, target], dim=1)
    start = 0
    with torch.inference_mode():
        while start < n:
            stop = min(n, start + problem.chunk_size)
            chunk = candidates[start:stop].to(problem.device)
            ids = torch.cat([chunk, fixed.expand(chunk.shape[0], -1)], dim=1)
            try:
                logits = _target_logits(problem, input_ids=ids).float()
            except RuntimeError as error:
                if not _is_oom(error) or problem.chunk_size == 1:
                    raise
                problem.chunk_size = max(1, problem.chunk_size // 2)
                if problem.device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            labels = target.expand(chunk.shape[0], -1)
            picked = logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
            losses[start:stop] = (torch.logsumexp(logits, dim=-1) - picked).mean(dim=1).cpu()
            matches[start:stop] = (logits.argmax(dim=-1) == labels).all(dim=1).cpu()
            problem.forward_passes += chunk.shape[0]
            start = stop
    return losses, matches


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


def _first_verified(problem: Problem, candidates: Tensor, losses: Tensor, matches: Tensor,
                    verify: Callable[[list[int]], bool]) -> tuple[int | None, int]:
    """Index of the lowest-loss matching candidate that real greedy generation confirms, and rejections."""
    rejected = 0
    for index in sorted(matches.nonzero().flatten().tolist(), key=lambda i: float(losses[i])):
        if verify(problem.input_ids(candidates[index])):
            return index, rejected
        rejected += 1
    return None, rejected


def optimize_length(problem: Problem, init_ids: Tensor, *, steps: int, search_width: int, topk: int,
                    n_replace: int, generator: torch.Generator,
                    verify: Callable[[list[int]], bool]) -> LengthOutcome:
    """Run GCG on prompts of one length until one emits the target or ``steps`` run out.

    ``init_ids`` is one start ``(L,)`` or several ``(K, L)`` (e.g. every deletion of a longer working
    prompt): all are scored, a verified match ends the length at zero steps, else the lowest-loss start
    is optimized. ``verify(input_ids)`` runs real greedy generation; a teacher-forced match it does not
    confirm (a near-tie that batched and incremental numerics break differently) is counted, not accepted.
    """
    starts = (init_ids if init_ids.dim() == 2 else init_ids.unsqueeze(0)).cpu()
    losses, matches = score_candidates(problem, starts)
    false_matches = 0
    if matches.any():
        hit, false_matches = _first_verified(problem, starts, losses, matches, verify)
        if hit is not None:
            return LengthOutcome(starts[hit].clone(), float(losses[hit]), True, 0, false_matches)
    best = int(losses.argmin())
    current, best_loss = starts[best].clone(), float(losses[best])
    done = 0
    while done < steps:
        done += 1
        grad = token_gradient(problem, current)
        candidates = sample_candidates(current, grad, problem.allowed, search_width=search_width, topk=topk,
                                       n_replace=n_replace, generator=generator)
        if candidates.shape[0] == 0:  # a single allowed token: nothing left to try
            break
        losses, matches = score_candidates(problem, candidates)
        if matches.any():
            hit, rejected = _first_verified(problem, candidates, losses, matches, verify)
            false_matches += rejected
            if hit is not None:
                return LengthOutcome(candidates[hit].clone(), float(losses[hit]), True, done, false_matches)
        best = int(losses.argmin())
        if float(losses[best]) < best_loss:
            best_loss, current = float(losses[best]), candidates[best].clone()
    return LengthOutcome(current, best_loss, False, done, false_matches)
