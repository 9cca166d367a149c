"""The model's linear layers packed for oneDNN while it scores candidates (acr/kernels.py), on the tiny Llama
trained in tests/acr_models.py. Real oneDNN kernels, no mocks: packed scoring gives the plain scoring's
decisions, the packing is undone after every use, and the gradient and the verifying ``generate`` never run
packed."""

from __future__ import annotations

import copy

import pytest
import torch

from acr import ACRConfig, compute_acr
from acr import gcg as acr_gcg
from acr import kernels as acr_kernels
from acr import search as acr_search
from acr.gcg import allowed_token_mask, build_problem, score_candidates
from acr.kernels import linear_groups, linear_kernels_for, pack_linears, pick_packed
from evalkit.errors import UsageError
from tests.acr_models import CONFIG, QUOTES


def _patched(model) -> list[str]:
    """Names of the linear layers whose forward is swapped right now."""
    return [name for name, module in model.named_modules() if "forward" in module.__dict__]


def _candidates(tokenizer, n: int) -> torch.Tensor:
    title = tokenizer("caesar :", add_special_tokens=False)["input_ids"]
    generator = torch.Generator().manual_seed(3)
    near = torch.tensor([title] * n)
    near[torch.arange(n), torch.arange(n) % 2] = torch.randint(4, len(tokenizer), (n,), generator=generator)
    return torch.cat([torch.tensor([title]), near])


def test_packed_scoring_makes_the_plain_scorings_decisions(tiny, monkeypatch):
    model, tokenizer = tiny
    calls = []
    real = acr_kernels._packed_linear
    monkeypatch.setattr(acr_kernels, "_packed_linear", lambda *args: calls.append(1) or real(*args))
    target = tokenizer(QUOTES["caesar"], add_special_tokens=False)["input_ids"]
    allowed = allowed_token_mask(tokenizer, model.get_input_embeddings().weight.shape[0])
    shapes = sorted(linear_groups(model))
    packed = pack_linears(model, shapes, rows=64)
    assert packed is not None and packed.shapes == shapes
    assert len(packed.layers) == sum(len(group) for group in linear_groups(model).values())
    candidates = _candidates(tokenizer, 40)
    plain = build_problem(model, [tokenizer.bos_token_id], [], target, allowed, search_width=64)
    fast = build_problem(model, [tokenizer.bos_token_id], [], target, allowed, search_width=64, packed=packed)
    every = acr_gcg._teacher_forced(plain, model, plain.prefix_cache, candidates)
    assert calls == []
    every_packed = acr_gcg._teacher_forced(fast, model, fast.prefix_cache, candidates)
    assert len(calls) == len(packed.layers)  # one chunk: every layer once, through the packed kernel
    assert every_packed[1].tolist() == every[1].tolist() and every[1][0]  # the same matches, the title's among them
    assert torch.allclose(every_packed[0], every[0], atol=1e-4)
    assert torch.allclose(every_packed[2], every[2], atol=1e-3)
    # A GCG step: the same matches and the same best candidate.
    losses, matches, exact = score_candidates(fast, candidates)
    plain_losses, plain_matches, _ = score_candidates(plain, candidates)
    assert matches.tolist() == plain_matches.tolist() and int(losses.argmin()) == int(plain_losses.argmin())
    assert _patched(model) == []  # undone after scoring


def test_packing_is_undone_even_when_scoring_fails(tiny):
    model, _ = tiny
    packed = pack_linears(model, sorted(linear_groups(model)), rows=8)
    with pytest.raises(RuntimeError, match="boom"), packed.active():
        assert len(_patched(model)) == len(packed.layers)
        raise RuntimeError("boom")
    assert _patched(model) == []
    assert pack_linears(model, [], rows=8) is None  # nothing to pack: no object at all


def test_a_tied_head_shares_one_packed_copy():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True))
    model.lm_head.weight = model.model.embed_tokens.weight
    head_key = f"{model.lm_head.in_features}x{model.lm_head.out_features}"
    packed = pack_linears(model, [head_key], rows=4)
    assert [layer for layer, _ in packed.layers] == [model.lm_head]
    ids = torch.tensor([[1, 5, 7]])
    with torch.inference_mode():
        plain = model(ids).logits
        with packed.active():
            fast = model(ids).logits
    assert torch.allclose(plain, fast, atol=1e-5)


def test_the_gradient_and_the_verifying_generate_never_run_packed(tiny, monkeypatch):
    """A found prompt is decided by teacher forcing (packed here), but the gradient that proposes swaps and
    the real generate that confirms a match run the model as loaded."""
    model, tokenizer = tiny
    seen = {"gradient": 0, "verify": 0}  # gradients taken on a problem with packed layers; generates run
    real_gradient, real_verify = acr_gcg.token_gradient, acr_search.verify_generation

    def gradient(problem, prompt):
        assert _patched(model) == []
        seen["gradient"] += problem.packed is not None
        return real_gradient(problem, prompt)

    def verify(*args, **kwargs):
        assert _patched(model) == []
        seen["verify"] += 1
        return real_verify(*args, **kwargs)

    monkeypatch.setattr(acr_gcg, "token_gradient", gradient)
    monkeypatch.setattr(acr_search, "verify_generation", verify)
    config = ACRConfig(**{**CONFIG.to_dict(), "linear_kernel": "onednn", "initial_length": 3})
    result = compute_acr(model, tokenizer, QUOTES["hamlet"], config)
    assert result.success and result.verified_generation and seen["verify"] >= 1
    assert result.linear_kernels["packed"] == sorted(linear_groups(model))
    torch_result = compute_acr(model, tokenizer, QUOTES["hamlet"], ACRConfig(**{**config.to_dict(),
                                                                                 "linear_kernel": "torch"}))
    assert torch_result.linear_kernels["packed"] == [] and torch_result.success
    assert seen["gradient"] >= 1 and _patched(model) == []


def test_the_choice_is_measured_cached_and_bounded_by_memory(tiny, tmp_path, monkeypatch):
    model, tokenizer = tiny
    assert linear_kernels_for(model, "torch", rows=8, seq_len=6, target_len=3) == ([], None)
    assert linear_kernels_for(model, "onednn", rows=8, seq_len=6, target_len=3) == (sorted(linear_groups(model)), None)
    with pytest.raises(ValueError, match="linear kernel"):
        linear_kernels_for(model, "mkl", rows=8, seq_len=6, target_len=3)
    chosen, measured = linear_kernels_for(model, "auto", rows=8, seq_len=6, target_len=3, cache_dir=tmp_path)
    assert set(measured["gflops"]) == set(linear_groups(model)) and not measured["cached"]
    assert all(rate["torch"] > 0 and rate["onednn"] > 0 for rate in measured["gflops"].values())
    assert chosen == pick_packed(measured["gflops"])
    head = f"{model.lm_head.in_features}x{model.lm_head.out_features}"
    assert measured["gflops"][head]["rows"] == 8 * 4 and measured["gflops"]["64x64"]["rows"] == 8 * 6
    again, cached = linear_kernels_for(model, "auto", rows=8, seq_len=6, target_len=3, cache_dir=tmp_path)
    assert again == chosen and cached["cached"] and cached["gflops"] == measured["gflops"]
    assert linear_kernels_for(model, "auto", rows=9, seq_len=6, target_len=3, cache_dir=tmp_path)[1]["cached"] is False
    # Packed copies that would not fit are not made: auto packs nothing and says why; onednn is refused.
    monkeypatch.setattr(acr_kernels, "_available_bytes", lambda: 1000)
    chosen, measured = linear_kernels_for(model, "auto", rows=8, seq_len=6, target_len=3, cache_dir=tmp_path)
    assert chosen == [] and "would take more than 25%" in measured["reason"]
    with pytest.raises(ValueError, match="cannot pack"):
        linear_kernels_for(model, "onednn", rows=8, seq_len=6, target_len=3)
    with pytest.raises(UsageError, match="cannot pack"):
        compute_acr(model, tokenizer, QUOTES["hamlet"], ACRConfig(**{**CONFIG.to_dict(), "linear_kernel": "onednn"}))


def test_only_float32_models_on_cpu_are_packed(tiny):
    model, _ = tiny
    half = copy.deepcopy(model).to(torch.bfloat16)  # a copy: the shared model keeps its float32 weights
    assert "float32 only" in acr_kernels.packing_unavailable(half)
    assert linear_kernels_for(half, "auto", rows=8, seq_len=6, target_len=3)[0] == []


def test_the_pick_among_measured_kernels():
    speeds = {"64x64": {"torch": 10.0, "onednn": 10.9}, "64x128": {"torch": 10.0, "onednn": 11.0},
              "128x64": {"torch": 20.0, "onednn": 12.0}}
    assert pick_packed(speeds) == ["64x128"]  # at least 1.1x faster, and only there
    with pytest.raises(UsageError, match="linear_kernel"):
        ACRConfig(linear_kernel="mkl")
