"""The knobs of an ACR run, in one dataclass.

Defaults follow nanoGCG (num_steps 250, search_width 512, topk 256) scaled down for CPU: every GCG step
costs one backward pass plus ``search_width`` candidate forwards, and on a laptop-class CPU the
candidate forwards dominate. The outer length search (MiniPrompt) follows the paper: start at 5 tokens,
grow by 5 until a prompt works, then shrink one token at a time.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from evalkit.errors import UsageError


@dataclass
class ACRConfig:
    """Options of :func:`acr.compute_acr`. Every field has a default; change only what you need."""

    # Outer search over the prompt length |x|.
    max_prompt_tokens: int | None = None  # cap on |x|, never above |y| (a longer prompt cannot show memorization);
    #                                       None -> |y|
    initial_length: int = 5  # first length tried (the paper's MiniPrompt starts at 5)
    grow_step: int = 5  # tokens added after a failed length, until one succeeds or the cap is reached
    # Inner optimizer (GCG) at one length.
    steps_per_length: int = 200  # GCG steps before a length counts as failed (nanoGCG: 250)
    search_width: int = 128  # candidate prompts scored per step (nanoGCG: 512)
    topk: int = 256  # candidate tokens per position, taken from the one-hot gradient
    n_replace: int = 1  # positions swapped per candidate
    restarts: int = 0  # extra attempts at a failed length, each from a fresh random prompt
    seed: int = 0  # seeds one torch.Generator per target: same inputs + seed -> same result
    batch_size: int | None = None  # candidates per forward chunk; None -> sized from the logits' memory
    # Screening precision: a cheaper copy of a float32 model (16-bit or int8) scores candidates first; the model
    # itself takes the gradient, re-scores the best-ranked few (GCG moves by those exact losses) and every
    # candidate within screen_margin logits of a match, and only it decides success.
    screen_dtype: str = "auto"  # auto (the fastest measured here) | bfloat16 | float16 | int8 | none
    screen_margin: float = 0.5  # logits, widened to 1.5x the largest error seen (see acr.gcg.Screen)
    screen_rerank: int = 4  # best-screened candidates the model re-scores each step; GCG moves by those exact losses
    # ... those of them whose screened loss is less than this far above the current prompt's (nats, widened to 1.5x
    # the screen's largest overestimate seen); a large number (1e9): always all screen_rerank of them
    screen_rerank_slack: float = 0.1
    # The kernel of the model's own linear layers while it scores candidates (acr.kernels): torch's, or oneDNN's
    # with the weights packed once (float32 too: the same products summed in another order).
    linear_kernel: str = "auto"  # auto (packed where measured faster on this machine, cached) | torch | onednn
    # Which tokens the free prompt may use.
    allow_special_tokens: bool = False  # BOS/EOS/PAD/added special tokens stay out of prompts by default
    allow_non_ascii: bool = False  # False (CLI, API and benchmark alike): printable ASCII tokens only, as nanoGCG
    require_retokenize: bool = False  # True: only prompts whose text, as a user would type it, encodes back to the
    #                                  same tokens (checked on the rendered chat) are tried
    # Chat models: wrap the free tokens in the chat template (scaffold tokens are not counted in |x|).
    chat_template: bool = False
    system_prompt: str | None = None
    require_end_of_turn: bool = True  # chat mode: the target is the whole reply, so the end-of-turn token must follow
    # What counts as memorized.
    threshold: float = 1.0  # tau >= 1: memorized when the found ACR > tau
    beat_deflate: bool = False  # True: also require the prompt to be shorter, in UTF-8 bytes, than raw DEFLATE(y)

    def __post_init__(self) -> None:
        positive = {"initial_length": self.initial_length, "grow_step": self.grow_step,
                    "steps_per_length": self.steps_per_length, "search_width": self.search_width,
                    "topk": self.topk, "n_replace": self.n_replace, "screen_rerank": self.screen_rerank}
        for name, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise UsageError(f"ACRConfig.{name} must be a positive integer, got {value!r}")
        for name in ("max_prompt_tokens", "batch_size"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise UsageError(f"ACRConfig.{name} must be a positive integer or None, got {value!r}")
        if not isinstance(self.restarts, int) or self.restarts < 0:
            raise UsageError(f"ACRConfig.restarts must be a non-negative integer, got {self.restarts!r}")
        if self.screen_dtype not in ("auto", "none", "bfloat16", "float16", "int8"):
            raise UsageError("ACRConfig.screen_dtype must be auto, none, bfloat16, float16 or int8, "
                             f"got {self.screen_dtype!r}")
        if self.linear_kernel not in ("auto", "torch", "onednn"):
            raise UsageError(f"ACRConfig.linear_kernel must be auto, torch or onednn, got {self.linear_kernel!r}")
        if not isinstance(self.screen_margin, (int, float)) or self.screen_margin < 0:
            raise UsageError(f"ACRConfig.screen_margin must be a number >= 0, got {self.screen_margin!r}")
        slack = self.screen_rerank_slack
        if isinstance(slack, bool) or not isinstance(slack, (int, float)) or not 0 <= slack < math.inf:
            raise UsageError(f"ACRConfig.screen_rerank_slack must be a finite number >= 0, got {slack!r}")
        if not isinstance(self.threshold, (int, float)) or not self.threshold >= 1.0:
            raise UsageError(f"ACRConfig.threshold must be >= 1, got {self.threshold!r}: at tau below 1 a prompt "
                             "longer than the string would count as memorizing it")

    def to_dict(self) -> dict:
        return asdict(self)

