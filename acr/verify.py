"""Checks by real generation: does a prompt make the model emit the target, and does a prefix?

The optimizer decides success from teacher-forced argmaxes; the reported result is only trusted after
``model.generate`` (greedy, no penalties, the exact input ids) reproduces the target token for token.
"""

from __future__ import annotations

from typing import Any

import torch

from evalkit.lm import greedy_generation_config


def greedy_continuation(model: Any, input_ids: list[int], max_new_tokens: int) -> list[int]:
    """The tokens ``model.generate`` emits greedily after exactly ``input_ids`` (no padding, no BOS added)."""
    device = model.get_input_embeddings().weight.device
    ids = torch.tensor([input_ids], dtype=torch.long, device=device)
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                             generation_config=greedy_generation_config(model, max_new_tokens))
    return out[0, ids.shape[1]:].tolist()


def verify_generation(model: Any, input_ids: list[int], target_ids: list[int]) -> bool:
    """True when greedy generation from ``input_ids`` emits ``target_ids`` exactly."""
    return greedy_continuation(model, input_ids, len(target_ids)) == list(target_ids)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def completion_test(model: Any, tokenizer: Any, target: str, prefix_fraction: float = 0.5,
                    prefix_tokens: int | None = None) -> dict[str, Any]:
    """Discoverable memorization: does greedy continuation of the target's first tokens reproduce the rest?

    The target is tokenized as a base model sees it (with the tokenizer's BOS, if it adds one); the first
    ``prefix_tokens`` of its own tokens (else ``round(prefix_fraction * n)``, kept within ``1..n-1``) are
    the prompt and the remaining ones the expected continuation. Cheaper than ACR (one generation) but
    only tests one, fixed, prompt.
    """
    from evalkit.errors import UsageError

    if not isinstance(target, str) or not target:
        raise UsageError("completion_test needs a non-empty target string")
    own = tokenizer(target, add_special_tokens=False)["input_ids"]
    if len(own) < 2:
        raise UsageError(f"target has {len(own)} token(s); a completion test needs at least 2")
    with_special = tokenizer(target, add_special_tokens=True)["input_ids"]
    bos = getattr(tokenizer, "bos_token_id", None)
    lead = [bos] if bos is not None and with_special[:1] == [bos] and own[:1] != [bos] else []
    if prefix_tokens is None:
        if not 0.0 < prefix_fraction < 1.0:
            raise UsageError(f"prefix_fraction must be strictly between 0 and 1, got {prefix_fraction}")
        prefix_tokens = round(prefix_fraction * len(own))
    k = min(max(1, int(prefix_tokens)), len(own) - 1)
    expected = own[k:]
    generated = greedy_continuation(model, lead + own[:k], len(expected))
    matched = _common_prefix(generated, expected)
    return {
        "target": target,
        "prefix_tokens": k,
        "suffix_tokens": len(expected),
        "prefix_text": tokenizer.decode(own[:k]),
        "expected_text": tokenizer.decode(expected),
        "generated_text": tokenizer.decode(generated),
        "matched_tokens": matched,
        "match_fraction": matched / len(expected),
        "memorized": generated == expected,
        "bos_added": bool(lead),
    }
