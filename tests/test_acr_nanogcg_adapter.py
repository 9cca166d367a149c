"""The ACR benchmark's baseline: nanoGCG 0.3.0 driving acr's length search, on the tiny memorizing model.

The benchmark's numbers are only meaningful if the adapter really runs nanoGCG's optimizer inside the same
search and reports what it found the same way: a verified prompt, counted candidate forwards.
"""

from __future__ import annotations

import pytest
import torch

from acr import ACRConfig
from acr.search import _prepare, _run_target, encode_target
from tests.acr_models import CONFIG, QUOTES
from tests.acr_models import random_strings as _random_strings

pytest.importorskip("nanogcg", reason="nanogcg is installed by `make install` (no-deps, pinned)")
from benchmarks.nanogcg_adapter import NanoGCGAtLength  # noqa: E402


def _run(model, tokenizer, target, config):
    optimizer = NanoGCGAtLength(model, tokenizer, target)
    prep = _prepare(model, tokenizer, config, "tiny")
    return _run_target(prep, target, encode_target(tokenizer, target), optimizer), optimizer


def test_nanogcg_in_the_length_search_finds_a_verified_prompt(tiny):
    model, tokenizer = tiny
    config = ACRConfig(**{**CONFIG.to_dict(), "screen_dtype": "none"})
    template = tokenizer.chat_template
    result, optimizer = _run(model, tokenizer, QUOTES["caesar"], config)
    assert result.success and result.verified_generation and result.acr > 1
    assert result.input_ids == [tokenizer.bos_token_id, *result.prompt_ids]  # BOS + free tokens, as acr feeds
    ids = torch.tensor([result.input_ids])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                         max_new_tokens=result.target_tokens, pad_token_id=0)
    assert out[0, ids.shape[1]:].tolist() == result.target_ids
    # Every candidate nanoGCG ran a forward over is counted, length by length.
    assert result.forward_passes == sum(entry["candidates"] for entry in result.lengths_tried) > 0
    assert tokenizer.chat_template == template  # hidden only for the duration of a call
    assert optimizer.stopped_without_match == 0


def test_nanogcg_side_reports_a_never_trained_string_as_censored(tiny):
    model, tokenizer = tiny
    config = ACRConfig(**{**CONFIG.to_dict(), "screen_dtype": "none", "steps_per_length": 5})
    target = _random_strings(tokenizer, 1, 12)[0]
    result, _ = _run(model, tokenizer, target, config)
    assert result.censored and not result.memorized and result.prompt_tokens == result.target_tokens
    assert [entry["length"] for entry in result.lengths_tried] == [2, 6, 10, 12]
    assert all(entry["steps"] == 5 for entry in result.lengths_tried)
