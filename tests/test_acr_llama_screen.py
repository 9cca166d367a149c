"""The Llama screen that starts each candidate where it differs from its prompt (acr.llama_screen).

Built in float32 it must give transformers' own logits (up to summation order): with no cache, after a prefix
cache, started late from a shared prompt, and continued from its own cache. Its 16-bit copy then differs from
the model only by rounding, as a plain 16-bit copy does; and it is only a screen (the float32 model decides,
see test_acr_core).
"""

from __future__ import annotations

import copy

import pytest
import torch

from acr import gcg as acr_gcg
from acr import llama_screen
from acr.gcg import allowed_token_mask, build_problem, score_candidates
from acr.llama_screen import SharedStartLlama
from acr.screens import screen_copy, screen_forward
from tests.acr_models import QUOTES

VOCAB = 50


def _llama(kv_heads: int = 2, tie: bool = True, **extra):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=kv_heads, tie_word_embeddings=tie,
                         max_position_embeddings=64, **extra)
    return LlamaForCausalLM(config).eval()


def _candidates(prompt: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Single swaps at every position, two double swaps, and one row equal to the prompt."""
    rows = []
    for position in range(prompt.shape[0]):
        row = prompt.clone()
        row[position] = (row[position] + 1 + position) % VOCAB
        rows.append(row)
    for positions in ((1, 4), (3, 5)):
        row = prompt.clone()
        row[list(positions)] = torch.randint(0, VOCAB, (2,), generator=generator)
        rows.append(row)
    rows.append(prompt.clone())
    return torch.stack(rows)


@pytest.mark.parametrize(("kv_heads", "tie"), [(4, False), (2, True)])
def test_a_float32_copy_gives_the_model_logits_plain_cached_started_late_and_continued(kv_heads, tie, monkeypatch):
    model = _llama(kv_heads, tie)
    exact_copy = SharedStartLlama(model, torch.float32)
    generator = torch.Generator().manual_seed(1)
    prefix = torch.tensor([[1, 7, 9]])
    prompt = torch.randint(3, VOCAB, (6,), generator=generator)
    candidates = _candidates(prompt, generator)
    n = candidates.shape[0]
    ids = torch.cat([candidates, torch.randint(3, VOCAB, (1, 7), generator=generator).expand(n, -1)], dim=1)
    rows_embedded = []
    embedding = torch.nn.functional.embedding
    def counted(index, weight, *args, **kwargs):  # rows the copy computes (torch's embedding is shared)
        if weight is exact_copy.embed:
            rows_embedded.append(index.numel())
        return embedding(index, weight, *args, **kwargs)

    monkeypatch.setattr(llama_screen.F, "embedding", counted)
    with torch.inference_mode():
        whole = torch.cat([prefix.expand(n, -1), ids], dim=1)
        full = model(input_ids=whole).logits[:, 3:]
        assert torch.allclose(exact_copy(input_ids=whole).logits[:, 3:], full, atol=1e-5)
        prefix_cache = exact_copy(input_ids=prefix, use_cache=True).past_key_values
        reference_cache = model(input_ids=prefix, use_cache=True).past_key_values
        for (k, v), (rk, rv) in zip(prefix_cache, acr_gcg._legacy(reference_cache), strict=True):
            assert torch.allclose(k, rk, atol=1e-6) and torch.allclose(v, rv, atol=1e-6)
        expanded = acr_gcg._cache_for(exact_copy, prefix_cache, n)  # legacy K/V views, as acr.gcg hands them
        rows_embedded.clear()
        cached = exact_copy(input_ids=ids, past_key_values=expanded, num_logits_to_keep=8).logits
        assert torch.allclose(cached, full[:, -8:], atol=1e-5) and rows_embedded == [n * ids.shape[1]]
        # Started late: each candidate from its first swapped position, the prompt's K/V before it.
        differs = candidates != prompt
        first = torch.where(differs.any(1), differs.int().argmax(1), prompt.shape[0])
        rows_embedded.clear()
        late = exact_copy(input_ids=ids, past_key_values=expanded, num_logits_to_keep=8,
                    shared_start=(prompt, first)).logits
        assert torch.allclose(late, full[:, -8:], atol=1e-5)
        shared = int(first.max())  # the prompt's own row, computed once in the same batch
        assert rows_embedded == [int((ids.shape[1] - first).sum()) + shared] and rows_embedded[0] < n * ids.shape[1]
        # Stage by stage: the first target positions with the cache kept, then the rest for some rows.
        out = exact_copy(input_ids=ids[:, :9], past_key_values=expanded, num_logits_to_keep=3,
                   use_cache=True, shared_start=(prompt, first))
        rows = torch.tensor([0, 3, 5, n - 1])
        rest = exact_copy(input_ids=ids[rows, 9:], num_logits_to_keep=4,
                    past_key_values=tuple((k[rows], v[rows]) for k, v in out.past_key_values)).logits
        assert torch.allclose(out.logits, full[:, 6:9], atol=1e-5)
        assert torch.allclose(rest, full[rows, -4:], atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_16_bit_copy_is_as_near_the_model_as_transformers_own_16_bit_copy(dtype):
    model = _llama()
    generator = torch.Generator().manual_seed(2)
    ids = torch.randint(3, VOCAB, (8, 12), generator=generator)
    with torch.inference_mode():
        exact = model(input_ids=ids).logits
        ours = SharedStartLlama(model, dtype)(input_ids=ids).logits.float()
        theirs = copy.deepcopy(model).to(dtype)(input_ids=ids).logits.float()
    ours_error, their_error = (ours - exact).abs().mean(), (theirs - exact).abs().mean()
    assert 0 < ours_error < 2 * their_error


def test_which_models_get_it_and_which_keep_transformers_forward():
    from transformers import GPT2Config, GPT2LMHeadModel

    llama = _llama()
    assert llama_screen.unsupported(llama) is None
    assert screen_forward(llama, "bfloat16") == screen_forward(llama, "float16") == "llama-shared-start"
    assert screen_forward(llama, "int8") == "transformers" and screen_forward(llama, None) is None
    screen = screen_copy(llama, "bfloat16")
    assert isinstance(screen, SharedStartLlama) and screen.embed.dtype == torch.bfloat16 and screen.shares_start
    assert llama.get_input_embeddings().weight.dtype == torch.float32  # the model itself is untouched
    biased = _llama(attention_bias=True)
    assert "biased" in llama_screen.unsupported(biased) and screen_forward(biased, "bfloat16") == "transformers"
    assert type(screen_copy(biased, "bfloat16")) is type(biased)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=1, n_head=2, n_positions=32)).eval()
    assert "gpt2" in llama_screen.unsupported(gpt2) and screen_forward(gpt2, "bfloat16") == "transformers"
    assert type(screen_copy(gpt2, "bfloat16")) is GPT2LMHeadModel
    with pytest.raises(ValueError, match="not a supported Llama model"):
        SharedStartLlama(gpt2, torch.bfloat16)


def test_a_gcg_step_scores_the_same_when_candidates_start_late(tiny, monkeypatch):
    """score_candidates given the prompt the candidates were drawn from: the same losses, margins and matches as
    scoring every candidate from its first token, by a float32 screen (the model's forward) and by the
    bfloat16 one; the model's own re-checks are unchanged."""
    model, tokenizer = tiny
    target = tokenizer(QUOTES["caesar"], add_special_tokens=False)["input_ids"]
    allowed = allowed_token_mask(tokenizer, model.get_input_embeddings().weight.shape[0])
    prompt = torch.tensor(tokenizer("caesar :", add_special_tokens=False)["input_ids"] + [10, 11])
    generator = torch.Generator().manual_seed(3)
    candidates = prompt.repeat(24, 1)
    positions = torch.arange(24) % prompt.shape[0]
    candidates[torch.arange(24), positions] = torch.randint(4, len(tokenizer), (24,), generator=generator)
    candidates = candidates[(candidates != prompt).any(1)]
    started_late = []
    forward = SharedStartLlama.forward
    monkeypatch.setattr(SharedStartLlama, "forward", lambda self, *args, **kwargs: started_late.append(
        kwargs.get("shared_start") is not None) or forward(self, *args, **kwargs))
    for dtype, tolerance in ((torch.float32, 1e-5), (torch.bfloat16, 2e-2)):
        scores = {}
        for base in (None, prompt):
            started_late.clear()
            problem = build_problem(model, [tokenizer.bos_token_id], [], target, allowed, search_width=64,
                                    screen_model=SharedStartLlama(model, dtype), screen_rerank=3)
            screen = problem.screen
            screened = acr_gcg._teacher_forced(problem, screen.model, screen.prefix_cache, candidates, base=base)
            scores[base is None] = (screened, score_candidates(problem, candidates, base=base))
            assert any(started_late) == (base is not None)  # the prefix cache is always computed from the start
        (plain, plain_step), (late, late_step) = scores[True], scores[False]
        assert torch.allclose(plain[0], late[0], atol=tolerance) and torch.allclose(plain[2], late[2], atol=tolerance)
        assert plain_step[1].tolist() == late_step[1].tolist()  # matches: the model's own decision
        rechecked = plain_step[2] & late_step[2]
        assert torch.allclose(plain_step[0][rechecked], late_step[0][rechecked], atol=1e-5)
