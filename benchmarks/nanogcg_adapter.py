"""nanoGCG 0.3.0 as the one-length optimizer of acr's length search, for the side-by-side benchmark.

:class:`NanoGCGAtLength` is called exactly like :func:`acr.gcg.optimize_length`, so the same
:func:`acr.search.search_prompt_length` drives either. Each call is one ``nanogcg.GCG.run`` at the
given length, with nanoGCG's own gradient, sampling, candidate loss and early stop; only two things are
supplied from outside, through a subclass, because nanoGCG takes a string and we have token ids:

* the start: ``init_buffer`` scores the given start ids (all of them, when the search passes every
  single-token deletion of a longer prompt) with nanoGCG's own candidate loss and keeps the best;
* a record of every prompt the buffer accepted, so the outcome can hand back token ids.

nanoGCG's list of disallowed (non-ASCII and special) tokens, which it rebuilds by decoding the whole
vocabulary in every ``GCG()`` (1-2 s for SmolLM2), is built once (per adapter, or passed in) and
reused, so the comparison is of the optimizers, not of that setup.

Settings that differ from nanoGCG's defaults, and why: ``early_stop=True`` (a length ends at the first
exact match, as in acr), ``filter_ids=False`` (acr does not restrict candidates to prompts whose text
re-tokenizes to the same ids; with the filter on, a random start whose text merges tokens makes every
candidate fail the filter and nanoGCG raise), ``seed=None`` with torch's global RNG seeded here from the
search's generator (nanoGCG's own seeding also switches on ``torch.use_deterministic_algorithms``
process-wide, which would change the other side of the benchmark), ``verbosity="WARNING"`` (its INFO
log decodes the buffer every step) and ``allow_non_ascii`` passed through.

A base model's prompt must be BOS + free tokens, as in acr: nanoGCG does that when the tokenizer has no
chat template, so the template is hidden for the duration of a call.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import torch

from acr.gcg import LengthOutcome, Problem

# The free tokens are the whole prompt: nanoGCG appends {optim_str} to this (empty) message.
USER_MESSAGE = ""


def _nanogcg():
    import nanogcg
    from nanogcg import gcg as nanogcg_gcg

    return nanogcg, nanogcg_gcg


@contextmanager
def _without_chat_template(tokenizer: Any):
    saved = tokenizer.chat_template
    tokenizer.chat_template = None
    try:
        yield
    finally:
        tokenizer.chat_template = saved


@contextmanager
def _reuse(module: Any, not_allowed: torch.Tensor | None):
    """Make ``module.get_nonascii_toks`` return the list already built, for the duration."""
    saved = module.get_nonascii_toks
    if not_allowed is not None:
        module.get_nonascii_toks = lambda tokenizer, device="cpu": not_allowed
    try:
        yield
    finally:
        module.get_nonascii_toks = saved


class NanoGCGAtLength:
    """``optimize_length``-compatible wrapper around ``nanogcg.GCG.run`` (nanoGCG 0.3.0)."""

    def __init__(self, model: Any, tokenizer: Any, target_text: str, *, allow_non_ascii: bool = False,
                 not_allowed: torch.Tensor | None = None):
        self.model, self.tokenizer, self.target_text = model, tokenizer, target_text
        self.allow_non_ascii = allow_non_ascii
        self.stopped_without_match = 0  # early stops whose returned (lowest-loss) prompt did not emit the target
        self._not_allowed = not_allowed  # nanoGCG's own list, built on first use unless given

    def __call__(self, problem: Problem, init_ids: torch.Tensor, *, steps: int, search_width: int, topk: int,
                 n_replace: int, generator: torch.Generator, verify) -> LengthOutcome:
        nanogcg, nanogcg_gcg = _nanogcg()
        starts = (init_ids if init_ids.dim() == 2 else init_ids.unsqueeze(0)).to(self.model.device)

        class RecordingBuffer(nanogcg_gcg.AttackBuffer):
            def __init__(self, size: int):
                super().__init__(size)
                self.history: list[tuple[float, torch.Tensor]] = []

            def add(self, loss, optim_ids):
                super().add(loss, optim_ids)
                self.history.append((float(loss), optim_ids[0].detach().cpu().clone()))

        class StartFromIds(nanogcg_gcg.GCG):
            def init_buffer(self):
                buffer = RecordingBuffer(self.config.buffer_size)
                embeds = torch.cat([self.embedding_layer(starts),
                                    self.after_embeds.repeat(starts.shape[0], 1, 1),
                                    self.target_embeds.repeat(starts.shape[0], 1, 1)], dim=1)
                if not self.prefix_cache:
                    embeds = torch.cat([self.before_embeds.repeat(starts.shape[0], 1, 1), embeds], dim=1)
                losses = nanogcg_gcg.find_executable_batch_size(
                    self._compute_candidates_loss_original, starts.shape[0])(embeds)
                best = int(losses.argmin())
                buffer.add(losses[best], starts[[best]])
                self.buffer = buffer
                return buffer

            def _compute_candidates_loss_original(self, search_batch_size, input_embeds):
                problem.forward_passes += input_embeds.shape[0]  # the same count acr keeps
                return super()._compute_candidates_loss_original(search_batch_size, input_embeds)

        # Every draw nanoGCG makes comes from torch's global RNG: seed it from the search's generator.
        torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
        config = nanogcg.GCGConfig(num_steps=steps, search_width=search_width, topk=topk, n_replace=n_replace,
                                   early_stop=True, filter_ids=False, allow_non_ascii=self.allow_non_ascii,
                                   seed=None, verbosity="WARNING")
        nanogcg_gcg.logger.setLevel("ERROR")  # its CPU / float32 advice is printed on every call
        if self._not_allowed is None and not self.allow_non_ascii:
            self._not_allowed = nanogcg_gcg.get_nonascii_toks(self.tokenizer, device=self.model.device)
        with _without_chat_template(self.tokenizer), _reuse(nanogcg_gcg, self._not_allowed):
            gcg = StartFromIds(self.model, self.tokenizer, config)
            result = gcg.run(USER_MESSAGE, self.target_text)
        history = gcg.buffer.history
        last = history[-1][1]
        if gcg.stop_flag:
            if verify(problem.input_ids(last)):
                return LengthOutcome(last, history[-1][0], True, len(result.losses))
            self.stopped_without_match += 1
        loss, best = min(history, key=lambda item: item[0])
        return LengthOutcome(best, loss, False, len(result.losses))
