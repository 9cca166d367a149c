"""ACR end to end on a real (tiny) causal LM trained here to memorize a few strings. No mocks.

The model is a 2-layer Llama over a word-level tokenizer that adds BOS. It is trained on
``<s> TITLE : QUOTE`` for three quotes (so the 2-token prompt ``TITLE :`` emits a 14-16 token quote: ACR > 1)
and on one chat-formatted exchange (``<s> user : lear ; assistant : QUOTE``) for the scaffold case.
Random word strings of the same vocabulary were never trained on: no prompt is found for them within the
budget, so they have no ACR and are not memorized.
"""

from __future__ import annotations

import json

import pytest
import torch

from acr import (
    ACRConfig,
    completion_test,
    compute_acr,
    compute_acr_many,
    plot_acr,
    results_frame,
    summarize_results,
)
from acr import gcg as acr_gcg
from acr.gcg import (
    allowed_token_mask,
    build_problem,
    optimize_length,
    sample_candidates,
    score_candidates,
)
from acr.results import deflate_bytes
from acr.screens import choose_screen, measure_screens, pick_screen, screen_copy, screen_for
from evalkit.errors import UsageError
from tests.acr_models import CHAT_QUOTE, CONFIG, QUOTES
from tests.acr_models import build_tokenizer as _build_tokenizer
from tests.acr_models import random_strings as _random_strings


@pytest.fixture(scope="module")
def run(tiny):
    model, tokenizer = tiny
    targets = [*QUOTES.values(), *_random_strings(tokenizer, 2, 14)]
    seen = []
    results = compute_acr_many(model, tokenizer, targets, CONFIG, progress=False, on_result=seen.append,
                               model_name="tiny-llama")
    return results, seen


def _greedy(model, input_ids, n):
    ids = torch.tensor([input_ids])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=n,
                         pad_token_id=0)
    return out[0, len(input_ids):].tolist()


def test_memorized_strings_get_acr_above_one_with_verified_prompts(tiny, run):
    model, tokenizer = tiny
    for result in run[0][:3]:
        assert result.success and result.memorized and not result.censored
        assert result.verified_generation
        assert result.acr == result.target_tokens / result.prompt_tokens > 1.0
        assert result.prompt_tokens < result.target_tokens
        # Base model: the fed ids are BOS + the free tokens, and BOS is recorded, not counted.
        assert result.bos_added and result.input_ids == [tokenizer.bos_token_id, *result.prompt_ids]
        assert result.target_ids == tokenizer(result.target, add_special_tokens=False)["input_ids"]
        generated = _greedy(model, result.input_ids, result.target_tokens)
        assert generated == result.target_ids
        assert tokenizer.decode(generated) == result.target
        assert result.model == "tiny-llama" and result.seed == 0
        assert result.forward_passes > 0 and result.wall_seconds > 0


def test_bracket_is_consistent_with_lengths_tried(run):
    for result in run[0]:
        bracket = result.bracket
        failed = [t["length"] for t in result.lengths_tried if not t["success"]]
        worked = [t["length"] for t in result.lengths_tried if t["success"]]
        assert bracket["longest_failed"] == (max(failed) if failed else None)
        assert bracket["shortest_success"] == (min(worked) if worked else None)
        if failed and worked:
            assert bracket["longest_failed"] < bracket["shortest_success"]
        if result.success:
            assert result.prompt_tokens == bracket["shortest_success"]
        assert result.steps == sum(t["steps"] for t in result.lengths_tried)


def test_never_trained_strings_have_no_prompt_found_and_no_acr(run):
    for result in run[0][3:]:
        assert result.censored and not result.success and not result.memorized
        assert result.status == "no prompt found within the budget"
        assert not result.verified_generation and not result.beats_deflate
        cap = result.target_tokens  # default cap: |y|
        assert result.bracket == {"longest_failed": cap, "shortest_success": None}
        assert result.lengths_tried[-1]["length"] == cap
        assert result.acr is None  # a failed search bounds nothing: there is no ACR to report
        assert result.prompt_tokens == cap  # best prompt found at the cap is kept for inspection
        assert result.budget == {"steps_per_length": CONFIG.steps_per_length, "search_width": CONFIG.search_width,
                                 "topk": CONFIG.topk, "restarts": 0, "max_prompt_tokens": cap,
                                 "lengths_tried": [t["length"] for t in result.lengths_tried]}


def test_no_prompt_found_at_a_low_cap_has_no_acr_and_is_never_memorized(tiny):
    model, tokenizer = tiny
    target = _random_strings(tokenizer, 1, 14)[0]
    config = ACRConfig(initial_length=2, grow_step=1, max_prompt_tokens=3, steps_per_length=3, search_width=16,
                       topk=8, n_replace=2, restarts=1, seed=5)
    result = compute_acr(model, tokenizer, target, config)
    assert result.censored and not result.memorized and result.acr is None  # was |y| / cap = 4.67, "bound"
    assert [(t["length"], t["restart"]) for t in result.lengths_tried] == [(2, 0), (2, 1), (3, 0), (3, 1)]
    assert result.bracket == {"longest_failed": 3, "shortest_success": None}
    assert result.budget["lengths_tried"] == [2, 3] and result.budget["restarts"] == 1


def test_the_cap_never_exceeds_the_target_and_tau_below_one_is_refused(tiny):
    model, tokenizer = tiny
    target = _random_strings(tokenizer, 1, 4)[0]
    config = ACRConfig(initial_length=2, grow_step=4, max_prompt_tokens=10, steps_per_length=2, search_width=8,
                       topk=8, seed=0)
    result = compute_acr(model, tokenizer, target, config)
    assert max(t["length"] for t in result.lengths_tried) <= 4 and result.budget["max_prompt_tokens"] == 4
    with pytest.raises(UsageError, match="threshold must be >= 1"):
        ACRConfig(threshold=0.5)


def test_runs_inside_inference_mode_and_restores_train_mode(tiny):
    model, tokenizer = tiny
    model.train()
    try:
        with torch.inference_mode():
            result = compute_acr(model, tokenizer, QUOTES["macbeth"], CONFIG)
        assert result.success and model.training
    finally:
        model.eval()


def test_on_result_sees_every_target_in_order(run):
    results, seen = run
    assert seen == results and len(results) == 5


def test_same_seed_gives_the_same_result(tiny, run):
    model, tokenizer = tiny
    first = run[0][0].to_dict()
    again = compute_acr(model, tokenizer, QUOTES["hamlet"], CONFIG, model_name="tiny-llama").to_dict()
    for result in (first, again):  # timings are all that may differ
        result.pop("wall_seconds")
        for entry in result["lengths_tried"]:
            assert entry.pop("seconds") >= 0
    assert again == first


def test_chat_scaffold_is_recorded_but_not_counted(tiny):
    model, tokenizer = tiny
    config = ACRConfig(**{**CONFIG.to_dict(), "chat_template": True})
    result = compute_acr(model, tokenizer, CHAT_QUOTE[1], config)
    scaffold = result.scaffold
    assert scaffold["chat_template"] and scaffold["counted"] is False
    assert scaffold["before_text"] == "<s>user : " and scaffold["after_text"] == " ; assistant :"
    assert scaffold["before_ids"][0] == tokenizer.bos_token_id and result.bos_added
    assert result.input_ids == scaffold["before_ids"] + result.prompt_ids + scaffold["after_ids"]
    assert result.success and result.memorized and result.verified_generation
    assert result.acr == result.target_tokens / result.prompt_tokens  # scaffold tokens not in |x|
    assert _greedy(model, result.input_ids, result.target_tokens) == result.target_ids


def test_prefix_kv_cache_scores_like_a_full_forward(tiny):
    """Candidates scored from the cached prefix, stage by stage over the target, give the losses and
    exact-match flags of full forwards; a step's scoring stops early only on candidates that provably can
    neither match nor have the lowest loss (nor one below the current prompt's)."""
    model, tokenizer = tiny
    target = tokenizer(QUOTES["caesar"], add_special_tokens=False)["input_ids"]
    before = [tokenizer.bos_token_id]
    allowed = allowed_token_mask(tokenizer, model.get_input_embeddings().weight.shape[0])
    problem = build_problem(model, before, [], target, allowed, search_width=8, batch_size=3)
    title = tokenizer("caesar :", add_special_tokens=False)["input_ids"]
    generator = torch.Generator().manual_seed(0)
    candidates = torch.cat([torch.tensor([title]), torch.randint(4, len(tokenizer), (12, 2), generator=generator)])
    n = len(candidates)
    full = torch.cat([torch.tensor([before * n]).T, candidates, torch.tensor([target] * n)], dim=1)
    with torch.no_grad():
        logits = model(full).logits[:, -len(target) - 1:-1]
    expected = torch.nn.functional.cross_entropy(logits.transpose(1, 2), torch.tensor([target] * n),
                                                 reduction="none").mean(dim=1)
    expected_matches = (logits.argmax(-1) == torch.tensor(target)).all(-1)
    # Every candidate to the end: the full forward's numbers.
    every, every_matches, _ = acr_gcg._teacher_forced(problem, model, problem.prefix_cache, candidates)
    assert torch.allclose(every, expected, atol=1e-4) and every_matches.tolist() == expected_matches.tolist()
    assert problem.pruned == 0
    # A GCG step: the same matches and the same best; the others may stop early, never one that could win.
    losses, matches, exact = score_candidates(problem, candidates)
    assert matches.tolist() == expected_matches.tolist() and matches[0]  # the training prefix emits the quote
    assert torch.equal(exact, torch.isfinite(losses))  # no screen: every finite loss is the model's own
    assert torch.allclose(losses[exact], expected[exact], atol=1e-4)
    assert int(losses.argmin()) == int(expected.argmin())
    assert (expected[~exact] >= losses.min() - 1e-5).all() and not expected_matches[~exact].any()
    assert problem.pruned == int((~exact).sum()) > 0 and problem.forward_passes == n
    # Given the current prompt's loss, what cannot beat it stops early too: more stop, the best still wins.
    before = problem.pruned
    score_candidates(problem, candidates[1:])
    unbounded, problem.pruned = problem.pruned - before, before
    below = float(expected[1:].sort().values[1])  # only the best candidate beats this prompt
    losses, matches, exact = score_candidates(problem, candidates[1:], below=below)
    assert int(losses.argmin()) == int(expected[1:].argmin()) and not expected_matches[1:][~exact].any()
    assert (expected[1:][~exact] >= min(below, float(losses.min())) - 1e-5).all()
    assert problem.pruned - before >= unbounded


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_target_stats_equal_the_plain_definitions_ties_included(dtype):
    """Loss sums, match flags and margins computed with one max pass equal cross-entropy, ``argmax`` and
    ``topk(2)``: on random logits, on rows where the target leads, and on exact ties, where ``argmax`` (as
    ``generate``) takes the lowest index, so a tie with an earlier token is no match and one with a later
    token is."""
    generator = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(40, 6, 500, generator=generator)).to(dtype)
    target = torch.randint(10, 490, (6,), generator=generator)
    positions = torch.arange(6)
    logits[:20, positions, target] = 30.0  # the target leads at every position: a match
    logits[10:15, positions, target - 3] = 30.0  # ... tied with an earlier token: argmax takes that one
    logits[15:20, positions, target + 3] = 30.0  # ... tied with a later token: argmax takes the target
    logits[20:25, positions[:3], target[:3]] = 30.0  # leads only at the first positions
    sums, matches, margins = acr_gcg._target_stats(logits, target)
    full = logits.float()
    labels = target.expand(40, -1)
    expected_sums = torch.nn.functional.cross_entropy(full.transpose(1, 2), labels, reduction="none").sum(dim=1)
    top2 = full.topk(2, dim=-1)
    picked = full.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    best_other = torch.where(top2.indices[..., 0] == labels, top2.values[..., 1], top2.values[..., 0])
    assert torch.allclose(sums, expected_sums, atol=1e-3)
    assert torch.equal(sums, (torch.logsumexp(full, dim=-1) - picked).sum(dim=1))  # bit for bit, bfloat16 too
    assert matches.tolist() == (full.argmax(dim=-1) == labels).all(dim=1).tolist()
    assert matches[:10].all() and not matches[10:15].any() and matches[15:20].all() and not matches[20:].any()
    assert torch.equal(margins, (picked - best_other).min(dim=1).values)


def test_chunks_are_sized_by_the_target_logits_once_and_the_grouped_query_kv():
    """SmolLM2-135M's shape (built on the meta device: no weights): 64 candidates of the longest sequence a
    29-token target's search reaches (prefix, 29 prompt and 29 target tokens) are scored in one forward within
    the 1 GiB budget. The estimate before this (three times the logits, K/V as wide as the hidden size) split
    them 38 + 26, which scored 1.22x slower. Longer sequences still get smaller chunks, and K/V as wide as
    the hidden size (no grouped-query attention) weigh more."""
    from transformers import LlamaConfig, LlamaForCausalLM

    def model(kv_heads: int):
        config = LlamaConfig(hidden_size=576, intermediate_size=1536, num_attention_heads=9,
                             num_key_value_heads=kv_heads, num_hidden_layers=30, vocab_size=49152,
                             tie_word_embeddings=True)
        with torch.device("meta"):
            return LlamaForCausalLM(config)

    smollm2 = model(3)
    assert acr_gcg._auto_chunk_size(smollm2, 59, 29, 64) == 64
    long_target = acr_gcg._auto_chunk_size(smollm2, 1 + 2 * 400, 400, 64)
    assert 1 <= long_target < 64
    assert acr_gcg._auto_chunk_size(model(9), 1 + 2 * 400, 400, 64) < long_target


def _caesar_candidates(tokenizer, n_random: int, seed: int = 0):
    title = tokenizer("caesar :", add_special_tokens=False)["input_ids"]
    generator = torch.Generator().manual_seed(seed)
    near = torch.tensor([title] * 8)
    near[torch.arange(8), torch.arange(8) % 2] = torch.randint(4, len(tokenizer), (8,), generator=generator)
    far = torch.randint(4, len(tokenizer), (n_random, 2), generator=generator)
    return torch.cat([torch.tensor([title]), near, far])


@pytest.mark.parametrize("kind", ["bfloat16", "int8"])
def test_screened_scoring_keeps_the_exact_match_decision(tiny, kind):
    """A screen (bfloat16, or int8 linear layers) scores candidates first, but the float32 model decides: the
    same match flags as unscreened scoring, and its own losses for the best-ranked few and the near-matches
    (only those)."""
    model, tokenizer = tiny
    target = tokenizer(QUOTES["caesar"], add_special_tokens=False)["input_ids"]
    allowed = allowed_token_mask(tokenizer, model.get_input_embeddings().weight.shape[0])
    candidates = _caesar_candidates(tokenizer, 40)
    plain = build_problem(model, [tokenizer.bos_token_id], [], target, allowed, search_width=64)
    exact_matches = score_candidates(plain, candidates)[1]
    exact_losses, all_matches, _ = acr_gcg._teacher_forced(plain, model, plain.prefix_cache, candidates)  # all
    assert exact_matches.tolist() == all_matches.tolist()
    screened = build_problem(model, [tokenizer.bos_token_id], [], target, allowed, search_width=64,
                             screen_model=screen_copy(model, kind), screen_rerank=3)
    losses, matches, exact = score_candidates(screened, candidates)
    assert matches.tolist() == exact_matches.tolist() and matches[0]
    assert 3 <= screened.exact_rechecks == int(exact.sum()) < len(candidates)  # every true match among them
    assert screened.forward_passes == plain.forward_passes == len(candidates) and plain.exact_rechecks == 0
    assert torch.allclose(losses[exact], exact_losses[exact], atol=1e-5)  # the model's own losses
    screened_to_end = torch.isfinite(losses)  # the rest provably could not rank among the best three
    assert torch.allclose(losses[screened_to_end], exact_losses[screened_to_end], atol=0.1)
    # The screen's three best are re-scored, so GCG's next prompt is chosen by exact losses.
    screen_only = build_problem(model, [tokenizer.bos_token_id], [], target, allowed, search_width=64,
                                screen_model=screened.screen.model, screen_margin=0.0, screen_rerank=1)
    screen = screen_only.screen
    screen_losses = acr_gcg._teacher_forced(screen_only, screen.model, screen.prefix_cache, candidates)[0]
    assert exact[screen_losses.topk(3, largest=False).indices].all()
    assert torch.allclose(screen_losses, exact_losses, atol=0.1) and not torch.equal(screen_losses, exact_losses)
    # The gradient that proposes swaps is the model's own, screen or not.
    assert torch.equal(acr_gcg.token_gradient(screened, candidates[1]), acr_gcg.token_gradient(plain, candidates[1]))
    # With no margin, only the screen's best and what it calls a match are checked: never more matches.
    _, strict_matches, _ = score_candidates(screen_only, candidates)
    assert not (strict_matches & ~exact_matches).any() and screen_only.exact_rechecks <= screened.exact_rechecks


def test_near_matches_are_rechecked_in_batches_until_one_is_confirmed(tiny):
    """Given ``confirm`` (real generation, in the search), the screen's near-matches are re-scored closest first,
    in batches of 4, 8, 16, ..., and re-scoring stops at the first batch with a confirmed match; if none is
    confirmed, every near-match is re-scored, as without ``confirm``, and each match is offered exactly once."""
    model, tokenizer = tiny
    target = tokenizer(QUOTES["caesar"], add_special_tokens=False)["input_ids"]
    allowed = allowed_token_mask(tokenizer, model.get_input_embeddings().weight.shape[0])
    candidates = _caesar_candidates(tokenizer, 40)
    screen_model = screen_copy(model, "bfloat16")

    def problem():  # a margin so wide that every candidate is a near-match
        return build_problem(model, [tokenizer.bos_token_id], [], target, allowed, search_width=64,
                             screen_model=screen_model, screen_margin=1e6, screen_rerank=3)

    whole = problem()
    losses, matches, exact = score_candidates(whole, candidates)
    assert exact.all() and whole.exact_rechecks == len(candidates) and matches[0]
    offered: list[list[int]] = []
    rejecting = problem()
    rejected = score_candidates(rejecting, candidates, confirm=lambda indices: offered.append(indices) is not None)
    assert [t.tolist() for t in rejected] == [t.tolist() for t in (losses, matches, exact)]
    assert rejecting.exact_rechecks == len(candidates)
    assert sorted(i for batch in offered for i in batch) == matches.nonzero().flatten().tolist()
    assert all(batch == sorted(batch, key=lambda i: float(losses[i])) for batch in offered)
    # Accepting the first match offered: only the batches up to it are re-scored, closest to a match first.
    screen = whole.screen
    screen_margins = acr_gcg._teacher_forced(whole, screen.model, screen.prefix_cache, candidates)[2]
    closest = screen_margins.argsort(descending=True, stable=True).tolist()
    batches = acr_gcg._recheck_batches(torch.tensor(closest), torch.tensor([], dtype=torch.long), batched=True)
    assert [b.numel() for b in batches] == [4, 8, 16, 16, 5]
    assert offered == [sorted(b[matches[b]].tolist(), key=lambda i: float(losses[i])) for b in batches
                       if matches[b].any()]
    accepting = problem()
    accepted: list[int] = []
    _, first_matches, first_exact = score_candidates(
        accepting, candidates, confirm=lambda indices: accepted.append(indices[0]) is None)
    rechecked = next(sum(b.numel() for b in batches[:i + 1]) for i, b in enumerate(batches) if matches[b].any())
    assert accepting.exact_rechecks == rechecked < len(candidates)
    assert sorted(first_exact.nonzero().flatten().tolist()) == sorted(closest[:rechecked])
    assert first_matches.tolist() == (matches & first_exact).tolist() and accepted[0] in closest[:rechecked]
    assert acr_gcg._recheck_batches(torch.arange(30), torch.tensor([40, 41]), batched=True)[-1].tolist() == \
        [28, 29, 40, 41]
    assert [b.numel() for b in acr_gcg._recheck_batches(torch.arange(30), torch.tensor([40]), batched=True)] == \
        [4, 8, 16, 3]
    assert [b.tolist() for b in acr_gcg._recheck_batches(torch.tensor([], dtype=torch.long), torch.tensor([5]),
                                                         batched=True)] == [[5]]
    assert acr_gcg._recheck_batches(torch.tensor([3, 1]), torch.tensor([2]), batched=False)[0].tolist() == [1, 2, 3]


@pytest.mark.parametrize("screened", [False, True])
def test_a_match_generation_rejects_is_counted_and_the_next_one_tried(tiny, screened):
    """Teacher-forced matches go to real generation lowest loss first; one it rejects is counted as a false
    match and the next is tried, with or without a screen."""
    model, tokenizer = tiny
    target = tokenizer(QUOTES["caesar"], add_special_tokens=False)["input_ids"]
    allowed = allowed_token_mask(tokenizer, model.get_input_embeddings().weight.shape[0])
    starts = _caesar_candidates(tokenizer, 40)
    screen = {"screen_model": screen_copy(model, "bfloat16"), "screen_margin": 1e6} if screened else {}
    problem = build_problem(model, [tokenizer.bos_token_id], [], target, allowed, search_width=64, **screen)
    plain = build_problem(model, [tokenizer.bos_token_id], [], target, allowed, search_width=64)
    losses, matches, _ = score_candidates(plain, starts)
    order = sorted(matches.nonzero().flatten().tolist(), key=lambda i: float(losses[i]))
    assert len(order) >= 2
    offered = []

    def verify(input_ids):
        offered.append(input_ids)
        return len(offered) == 2

    outcome = optimize_length(problem, starts, steps=3, search_width=8, topk=4, n_replace=1,
                              generator=torch.Generator().manual_seed(0), verify=verify)
    assert outcome.success and outcome.steps == 0 and outcome.false_matches == 1
    assert offered == [problem.input_ids(starts[i]) for i in order[:2]]
    assert outcome.prompt_ids.tolist() == starts[order[1]].tolist()


def test_best_ranked_are_rechecked_only_when_they_could_beat_the_current_prompt(tiny):
    """The screen's best-ranked candidates are re-scored (to choose GCG's move) only when their screened loss is
    within ``rerank_reach`` above the current prompt's: never a move lost within the screen's errors seen, and
    near-matches are re-checked whatever their loss, so no match is ever missed."""
    model, tokenizer = tiny
    target = tokenizer(QUOTES["caesar"], add_special_tokens=False)["input_ids"]
    allowed = allowed_token_mask(tokenizer, model.get_input_embeddings().weight.shape[0])
    candidates = _caesar_candidates(tokenizer, 40)
    far = candidates[9:]  # random prompts: none within the default margin of a match
    problem = build_problem(model, [tokenizer.bos_token_id], [], target, allowed, search_width=64,
                            screen_model=screen_copy(model, "bfloat16"), screen_rerank=3, screen_rerank_slack=0.1)
    screen = problem.screen
    # The screen's own scores, as score_candidates computes them (the best three to the end).
    screened, _, margins = acr_gcg._teacher_forced(problem, screen.model, screen.prefix_cache, far, keep=3,
                                                   reach=screen.reach)
    exact_losses = acr_gcg._teacher_forced(problem, model, problem.prefix_cache, far)[0]
    best3 = screened.topk(3, largest=False).indices
    assert (margins <= -screen.reach).all()
    # Current prompt far below them all: nothing could be a move, so the model scores nothing.
    losses, matches, exact = score_candidates(problem, far, below=float(screened.min()) - 1.0)
    assert problem.exact_rechecks == 0 and not exact.any() and not matches.any()
    assert acr_gcg._best_exact(losses, exact)[1] == float("inf")  # GCG does not move on screened losses
    # Current prompt just above the second best: the best two are re-scored, the third is not.
    ordered = screened[best3].sort().values
    assert ordered[1] < ordered[2]
    losses, _, exact = score_candidates(problem, far, below=float(ordered[1] + ordered[2]) / 2 - screen.rerank_reach)
    assert exact.nonzero().flatten().tolist() == sorted(best3[screened[best3].argsort()][:2].tolist())
    assert torch.allclose(losses[exact], exact_losses[exact], atol=1e-5)
    # With no current prompt (a length's starts), the best three always are; the screen's overestimate widens
    # the reach, as its margin errors widen the near-match reach.
    rechecked = problem.exact_rechecks
    _, _, exact = score_candidates(problem, far)
    assert sorted(exact.nonzero().flatten().tolist()) == sorted(best3.tolist())
    assert problem.exact_rechecks == rechecked + 3
    over = float((screened[best3] - exact_losses[best3]).max())
    assert screen.largest_overestimate >= over
    assert screen.rerank_reach == max(0.1, 1.5 * screen.largest_overestimate)
    # A match is never lost for lack of a loss low enough: near-matches are re-checked whatever the loss.
    losses, matches, exact = score_candidates(problem, candidates, below=-1.0)
    plain = build_problem(model, [tokenizer.bos_token_id], [], target, allowed, search_width=64)
    assert matches.tolist() == score_candidates(plain, candidates)[1].tolist() and matches[0]
    with pytest.raises(UsageError, match="screen_rerank_slack"):
        ACRConfig(screen_rerank_slack=float("inf"))
    with pytest.raises(UsageError, match="screen_rerank_slack"):
        ACRConfig(screen_rerank_slack=-0.1)


def test_sample_candidates_skips_prompts_already_scored_and_keeps_the_width():
    generator = torch.Generator().manual_seed(0)
    prompt, allowed = torch.tensor([5, 6, 7, 8]), torch.ones(50, dtype=torch.bool)
    grad = torch.randn(4, 50, generator=generator)
    first = sample_candidates(prompt, grad, allowed, search_width=16, topk=10, n_replace=1, generator=generator)
    seen = {tuple(row) for row in first.tolist()}
    again = sample_candidates(prompt, grad, allowed, search_width=16, topk=10, n_replace=1, generator=generator,
                              exclude=seen)
    rows = [tuple(row) for row in again.tolist()]
    assert len(first) == 16 and len(rows) == 16 and len(set(rows)) == 16  # the width, all distinct
    assert not seen & set(rows) and tuple(prompt.tolist()) not in rows
    assert all(sum(a != b for a, b in zip(row, prompt.tolist(), strict=True)) == 1 for row in rows)  # single swaps
    assert all(row[i] in (-grad[i]).topk(10).indices.tolist() for row in rows for i in range(4) if row[i] != prompt[i])


def test_gcg_scores_each_prompt_once_and_reuses_the_gradient_while_stuck(tiny, monkeypatch):
    """Never accepting a worse prompt, GCG can stay put: it then neither recomputes the gradient nor
    re-scores a prompt, and once every single swap is scored it swaps two positions -- here until all
    3 x 3 prompts of a 3-token vocabulary have been scored exactly once, well inside the step budget."""
    import acr.gcg

    model, tokenizer = tiny
    target = tokenizer(_random_strings(tokenizer, 1, 8)[0], add_special_tokens=False)["input_ids"]
    allowed = torch.zeros(model.get_input_embeddings().weight.shape[0], dtype=torch.bool)
    allowed[[10, 11, 12]] = True
    problem = build_problem(model, [tokenizer.bos_token_id], [], target, allowed, search_width=6)
    scored, gradients = [], []
    real_score, real_gradient = acr.gcg.score_candidates, acr.gcg.token_gradient
    monkeypatch.setattr(acr.gcg, "score_candidates",
                        lambda p, c, **kw: scored.extend(map(tuple, c.tolist())) or real_score(p, c, **kw))
    monkeypatch.setattr(acr.gcg, "token_gradient",
                        lambda p, ids: gradients.append(tuple(ids.tolist())) or real_gradient(p, ids))
    outcome = optimize_length(problem, torch.tensor([10, 10]), steps=40, search_width=6, topk=3, n_replace=1,
                              generator=torch.Generator().manual_seed(0), verify=lambda ids: False)
    assert not outcome.success and outcome.steps < 40
    assert len(scored) == len(set(scored)) == 9 == problem.forward_passes
    assert set(scored) == {(a, b) for a in (10, 11, 12) for b in (10, 11, 12)}
    assert len(gradients) == len(set(gradients))  # one gradient per prompt GCG stood on
    assert outcome.loss == pytest.approx(float(real_score(problem, torch.tensor([scored])[0])[0].min()), abs=1e-5)
    # A prompt shorter than n_replace is still optimized: both of its positions are swapped.
    before = problem.forward_passes
    optimize_length(problem, torch.tensor([10, 11]), steps=3, search_width=6, topk=3, n_replace=3,
                    generator=torch.Generator().manual_seed(0), verify=lambda ids: False)
    assert problem.forward_passes - before >= 1 + 4  # the start, then at least its four in the first step


def test_screen_choice(tiny, tmp_path, monkeypatch):
    model, tokenizer = tiny
    assert screen_for(model, "none") == (None, None) and screen_for(model, None) == (None, None)
    assert screen_for(model, "bfloat16") == ("bfloat16", None) and screen_for(model, "int8") == ("int8", None)
    assert screen_for(model, "float16") == ("float16", None)
    half = screen_copy(model, "bfloat16")
    assert screen_for(half, "auto")[0] is None and screen_for(half, "bfloat16") == (None, None)  # already 16-bit
    with pytest.raises(ValueError, match="screen dtype"):
        screen_for(model, "fp8")
    # auto measures every screen against the model itself, keeps the fastest only when it pays for its
    # re-checks, and caches the choice: the next run on this machine makes the same one without measuring.
    kind, measured = choose_screen(model, seq_len=12, target_len=6, rows=16, cache_dir=tmp_path)
    speeds = measured["candidates_per_second"]
    assert set(speeds) <= {"none", "bfloat16", "float16", "int8"} and speeds["none"] > 0 and not measured["cached"]
    assert kind == pick_screen(speeds, measured["fidelity"])
    again, cached = choose_screen(model, seq_len=12, target_len=6, rows=16, cache_dir=tmp_path)
    assert (again, cached["cached"], cached["candidates_per_second"]) == (kind, True, speeds)
    assert choose_screen(model, seq_len=13, target_len=6, rows=16, cache_dir=tmp_path)[1]["cached"] is False
    # A search with "auto" records the choice and the speeds behind it in its result.
    monkeypatch.setenv("EVALKIT_CACHE_DIR", str(tmp_path / "runs"))
    config = ACRConfig(**{**CONFIG.to_dict(), "steps_per_length": 2, "screen_dtype": "auto"})
    (result,) = compute_acr_many(model, tokenizer, _random_strings(tokenizer, 1, 4), config, progress=False)
    assert result.screen_speeds is not None and result.screen_speeds["none"] > 0
    assert result.screen_dtype == pick_screen(result.screen_speeds)


def test_the_pick_among_measured_screens():
    assert pick_screen({"none": 10, "bfloat16": 12, "int8": 12.5}) is None  # not worth the re-checks
    assert pick_screen({"none": 10, "bfloat16": 31, "float16": 11, "int8": 26}) == "bfloat16"
    assert pick_screen({"none": 10, "bfloat16": 31, "int8": 33}) == "bfloat16"  # a near tie: the faithful one
    assert pick_screen({"none": 10, "bfloat16": 0.0, "float16": 0.0, "int8": 24}) == "int8"  # AVX2-only CPUs
    assert pick_screen({"none": 10, "bfloat16": 20, "int8": 40}) == "int8"
    # a fast screen that ranks GCG's candidates unlike the model is not used
    assert pick_screen({"none": 10, "bfloat16": 20, "int8": 40}, {"bfloat16": 0.99, "int8": 0.6}) == "bfloat16"
    assert pick_screen({"none": 10, "bfloat16": 0.0, "int8": 40}, {"int8": 0.6}) is None


def test_a_screen_far_slower_than_float32_is_not_timed_on_the_model(tiny, monkeypatch):
    """The probe layer rules a slow screen out (bfloat16 emulated on an AVX2-only CPU) before any model copy."""
    import acr.screens

    model, _ = tiny
    copies = []
    real_copy = acr.screens.screen_copy

    def slow_bfloat16(m, kind):
        copies.append((type(m).__name__, kind))
        copy = real_copy(m, kind)
        if kind == "bfloat16" and isinstance(m, torch.nn.Sequential):  # the probe layer: make it 10x slower
            forward = copy.forward

            def slowed(x):
                import time

                start = time.perf_counter()
                out = forward(x)
                time.sleep(10 * (time.perf_counter() - start) + 0.05)
                return out

            copy.forward = slowed
        return copy

    monkeypatch.setattr(acr.screens, "screen_copy", slow_bfloat16)
    # int8 runs this tiny layer in about float32's 0.2-0.3 ms, but timings that short jitter past 2x on a busy
    # machine (they did in CI), so the line is drawn where only the slowed probe (50 ms more) crosses it.
    monkeypatch.setattr(acr.screens, "PROBE_SLOWDOWN", 20.0)
    speeds, fidelity = measure_screens(model, ["bfloat16", "int8"], seq_len=12, target_len=6, rows=16)
    assert speeds["bfloat16"] == 0.0 and "int8" in speeds and speeds["none"] > 0
    assert "bfloat16" not in fidelity and -1 <= fidelity["int8"] <= 1
    assert ("Sequential", "bfloat16") in copies and (type(model).__name__, "bfloat16") not in copies
    with pytest.raises(UsageError, match="screen_dtype"):
        ACRConfig(screen_dtype="fp8")
    with pytest.raises(UsageError, match="screen_margin"):
        ACRConfig(screen_margin=-1)
    with pytest.raises(UsageError, match="screen_rerank"):
        ACRConfig(screen_rerank=0)


def test_screen_copy_is_made_once_per_run_and_not_for_refused_targets(tiny, monkeypatch):
    import acr.search

    model, tokenizer = tiny
    copies = []
    real_copy = acr.search.screen_copy
    monkeypatch.setattr(acr.search, "screen_copy", lambda m, dtype: copies.append(dtype) or real_copy(m, dtype))
    config = ACRConfig(**{**CONFIG.to_dict(), "screen_dtype": "bfloat16", "steps_per_length": 2})
    with pytest.raises(UsageError, match="target 1"):
        compute_acr_many(model, tokenizer, [QUOTES["hamlet"], ""], config, progress=False)
    assert copies == []  # refused before any model was copied
    results = compute_acr_many(model, tokenizer, _random_strings(tokenizer, 2, 4), config, progress=False)
    assert copies == ["bfloat16"] and [r.screen_dtype for r in results] == ["bfloat16", "bfloat16"]


@pytest.mark.parametrize("screen", ["none", "bfloat16", "int8"])
def test_every_screen_finds_verified_prompts(tiny, screen, monkeypatch):
    import acr.search

    model, tokenizer = tiny
    generated = []
    real_verify = acr.search.verify_generation
    monkeypatch.setattr(acr.search, "verify_generation",
                        lambda m, ids, target: generated.append(tuple(ids)) or real_verify(m, ids, target))
    config = ACRConfig(**{**CONFIG.to_dict(), "screen_dtype": screen})
    result = compute_acr(model, tokenizer, QUOTES["hamlet"], config)
    # The reported prompt was generated from exactly once: its check in the search is the one reported.
    assert generated.count(tuple(result.input_ids)) == 1 and len(generated) == len(set(generated))
    assert result.success and result.memorized and result.verified_generation and result.acr > 1
    assert result.screen_dtype == (None if screen == "none" else screen)
    assert result.screen_forward == {"none": None, "bfloat16": "llama-shared-start", "int8": "transformers"}[screen]
    assert (result.exact_rechecks > 0) == (screen != "none")
    assert _greedy(model, result.input_ids, result.target_tokens) == result.target_ids


def test_special_tokens_are_excluded_unless_allowed(tiny):
    model, tokenizer = tiny
    rows = model.get_input_embeddings().weight.shape[0]
    default = allowed_token_mask(tokenizer, rows)
    assert not any(default[i] for i in tokenizer.all_special_ids)
    assert all(allowed_token_mask(tokenizer, rows, allow_special_tokens=True)[i] for i in tokenizer.all_special_ids)


def test_results_serialize_tabulate_summarize_and_plot(run):
    results = run[0]
    for result in results:
        assert json.loads(json.dumps(result.to_dict()))["target"] == result.target
        assert result.deflate_bytes == deflate_bytes(result.target) and result.target_bytes == len(result.target)
        assert result.beats_deflate == (result.success and result.prompt_bytes < result.deflate_bytes)
    frame = results_frame(results)
    assert len(frame) == 5 and frame["memorized"].tolist() == [True, True, True, False, False]
    assert frame["censored"].sum() == 2 and frame["acr"].isna().sum() == 2
    summary = summarize_results(results, seed=0)
    assert (summary["total"], summary["memorized"], summary["found"], summary["not_found"]) == (5, 3, 3, 2)
    assert summary["portion_memorized"] == pytest.approx(0.6)
    from evalkit.statistics.summary import mean_ci, proportion_ci

    assert summary["portion_memorized_ci95"] == list(proportion_ci(3, 5))  # Wilson
    found = [r.acr for r in results if r.success]
    assert summary["mean_acr"] == pytest.approx(sum(found) / 3)  # over found prompts only
    assert summary["mean_acr_ci95"] == pytest.approx(list(mean_ci(found)))
    assert summary == summarize_results([r.to_dict() for r in results], seed=0)  # dicts read back work too
    assert summary["candidates_per_second"] > 0

    import matplotlib

    matplotlib.use("Agg")
    ax = plot_acr(results)
    assert ax.get_ylabel().startswith("found ACR")
    import matplotlib.pyplot as plt

    plt.close(ax.figure)
    # Partial rows (hand-made, or older files without success/memorized) plot by what they do have.
    partial = [{"target_tokens": 10, "acr": 5.0, "censored": False, "memorized": True},
               {"target_tokens": 12, "acr": None, "censored": True}]
    ax = plot_acr(partial)
    labels = ax.get_legend_handles_labels()[1]
    assert labels[:2] == ["memorized", "no prompt found within the budget (no ACR)"]
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="result 0 has no target_tokens"):
        plot_acr([{"acr": 3}])


def test_completion_test_discoverable_memorization(tiny):
    model, tokenizer = tiny
    full = f"caesar : {QUOTES['caesar']}"
    hit = completion_test(model, tokenizer, full, prefix_fraction=0.5)
    assert hit["memorized"] and hit["match_fraction"] == 1.0 and hit["bos_added"]
    miss = completion_test(model, tokenizer, _random_strings(tokenizer, 1, 14)[0], prefix_tokens=4)
    assert not miss["memorized"] and miss["prefix_tokens"] == 4 and miss["suffix_tokens"] == 10


def test_validation_errors(tiny):
    model, tokenizer = tiny
    with pytest.raises(UsageError, match="empty"):
        compute_acr(model, tokenizer, "", CONFIG)
    with pytest.raises(UsageError, match="context of 64 tokens"):
        compute_acr(model, tokenizer, " ".join(["sun"] * 64), CONFIG)
    with pytest.raises(UsageError, match="get_input_embeddings"):
        compute_acr(object(), tokenizer, QUOTES["hamlet"], CONFIG)
    with pytest.raises(UsageError, match="target 1"):
        compute_acr_many(model, tokenizer, [QUOTES["hamlet"], ""], CONFIG, progress=False)
    with pytest.raises(UsageError, match="steps_per_length"):
        ACRConfig(steps_per_length=0)
    with pytest.raises(UsageError, match="chat template"):
        no_template = _build_tokenizer()
        no_template.chat_template = None
        compute_acr(model, no_template, QUOTES["hamlet"], ACRConfig(chat_template=True))


def test_chat_target_must_be_the_whole_reply(tiny):
    """Chat mode: the model must end its turn right after the target. The first half of the trained reply
    is emitted by the right prompt, but the model goes on talking: not a match unless the flag relaxes it."""
    model, tokenizer = tiny
    half = " ".join(CHAT_QUOTE[1].split()[:7])
    base = {**CONFIG.to_dict(), "chat_template": True, "initial_length": 1, "grow_step": 1,
            "max_prompt_tokens": 2}
    whole = compute_acr(model, tokenizer, CHAT_QUOTE[1], ACRConfig(**base))
    eot = tokenizer.convert_tokens_to_ids(";")
    assert whole.success and whole.end_of_turn_ids == [eot]
    assert _greedy(model, whole.input_ids, whole.target_tokens + 1) == [*whole.target_ids, eot]
    assert whole.target_tokens == len(whole.target_ids)  # the end of turn is required, not counted in |y|
    strict = compute_acr(model, tokenizer, half, ACRConfig(**base))
    assert not strict.success and strict.acr is None
    relaxed = compute_acr(model, tokenizer, half, ACRConfig(**{**base, "require_end_of_turn": False}))
    assert relaxed.success and relaxed.end_of_turn_ids == []


def test_require_retokenize_checks_the_rendered_chat_and_filters_candidates():
    """A vocabulary with a token whose text holds a space ("sun moon"): typing that text gives two tokens,
    so a prompt using it does not re-tokenize. Only such prompts are filtered out."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from acr.search import _prepare

    words = ["sun", "moon", "star", "river", "stone", "cloud", ":", ";", "user", "assistant", "sun moon"]
    vocab = {t: i for i, t in enumerate(["<pad>", "<s>", "</s>", "<unk>", *words])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                        unk_token="<unk>", pad_token="<pad>")
    tokenizer.chat_template = ("{{ bos_token }}{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} ; "
                               "{% endfor %}{% if add_generation_prompt %}assistant :{% endif %}")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                         max_position_embeddings=64, bos_token_id=1, eos_token_id=2)).eval()
    joined, sun, moon = vocab["sun moon"], vocab["sun"], vocab["moon"]
    for chat in (False, True):
        prep = _prepare(model, tokenizer, ACRConfig(chat_template=chat, require_retokenize=True), None)
        assert prep.retokenizes([sun, moon]) and not prep.retokenizes([joined, sun])
        assert prep.retokenize_filter(torch.tensor([[sun, moon], [moon, joined]])).tolist() == [True, False]
    tried = []
    config = ACRConfig(initial_length=2, grow_step=2, max_prompt_tokens=4, steps_per_length=3, search_width=16,
                       topk=16, seed=0, require_retokenize=True)
    prep = _prepare(model, tokenizer, config, None)
    original = prep.retokenize_filter

    def spy(rows):
        keep = original(rows)
        tried.extend(row for row, ok in zip(rows.tolist(), keep.tolist(), strict=True) if ok)
        return keep

    prep.retokenize_filter = spy
    from acr.search import _run_target, encode_target

    target = "star river stone cloud"
    result = _run_target(prep, target, encode_target(tokenizer, target))
    assert tried and all(joined not in row for row in tried)
    assert not result.success or result.retokenizes


def test_summary_of_one_target_without_a_prompt_found():
    """0 of 1 memorized: no mean ACR (there is no found prompt to average), a Wilson interval, not [0, 0]."""
    from acr.analysis import summary_line

    row = {"target": "x", "target_tokens": 7, "acr": None, "success": False, "censored": True, "memorized": False}
    summary = summarize_results([row])
    assert summary["mean_acr"] is None and summary["mean_acr_ci95"] is None and summary["found"] == 0
    low, high = summary["portion_memorized_ci95"]
    assert low == 0.0 and high > 0.7
    line = summary_line(summary)
    assert line.startswith("memorized 0 of 1") and "mean" not in line
    assert "no prompt found within the budget for 1" in line
