"""Facts about a local causal language model that the runner and the ACR audit both rely on.

* :func:`greedy_generation_config` -- what "greedy" means everywhere in evalkit: a *fresh*
  ``GenerationConfig`` (argmax at every step, one beam), so nothing from the model's own generation
  config (``repetition_penalty``, ``no_repeat_ngram_size``, ``bad_words_ids``, ``suppress_tokens``,
  sampling settings, ...) changes the tokens chosen. Only :data:`STRUCTURAL_FIELDS` are kept.
* :func:`context_limit` -- the longest sequence the model takes.

transformers is imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# Generation-config fields kept from the model's own config: they decide how the forward pass is computed
# (which KV cache a model needs to be correct), never which token is chosen.
STRUCTURAL_FIELDS = ("cache_implementation", "cache_config")


def greedy_generation_config(model: Any, max_new_tokens: int, *, eos_token_id: int | Sequence[int] | None = None,
                             pad_token_id: int | None = None) -> Any:
    """Plain greedy decoding for ``max_new_tokens`` tokens. Stop and pad ids default to the model's own."""
    from transformers import GenerationConfig

    model_config = getattr(model, "generation_config", None)
    eos = eos_token_id if eos_token_id is not None else getattr(model_config, "eos_token_id", None)
    if isinstance(eos, (list, tuple)):
        eos = [int(t) for t in eos] or None
    pad = pad_token_id if pad_token_id is not None else getattr(model_config, "pad_token_id", None)
    if pad is None:
        pad = eos[0] if isinstance(eos, list) else eos
    config = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=int(max_new_tokens), min_new_tokens=0,
                              eos_token_id=eos, pad_token_id=pad if pad is not None else 0)
    for name in STRUCTURAL_FIELDS:  # how the model computes attention (e.g. Gemma 2's hybrid cache), not what it picks
        value = getattr(model_config, name, None)
        if value is not None:
            setattr(config, name, value)
    return config


def context_limit(model: Any, tokenizer: Any = None) -> int | None:
    """Longest sequence the model takes: its config's position limit, else a sane tokenizer limit."""
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    value = getattr(tokenizer, "model_max_length", None)
    if isinstance(value, int) and 0 < value < 1_000_000:  # transformers uses ~1e30 for "unknown"
        return value
    return None
