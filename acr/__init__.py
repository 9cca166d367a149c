"""Adversarial Compression Ratio (Schwarzschild et al., 2024): is a string memorized by a model?

A string y is memorized when some prompt x shorter than y makes the model emit exactly y under greedy
decoding; ACR(M, y) = |y| / |x*| in tokens for the shortest such x*, and y is memorized when ACR > 1.

    from acr import ACRConfig, ACRSearch, compute_acr, compute_acr_many, results_frame, summarize_results, plot_acr

    config = ACRConfig(steps_per_length=200, search_width=128, topk=256, seed=0)
    result = compute_acr(model, tokenizer, "To be, or not to be, that is the question.", config)
    result.acr, result.memorized, result.prompt_text   # prompt verified by model.generate
    results = compute_acr_many(model, tokenizer, targets, config, on_result=lambda r: print(r.to_json()))
    search = ACRSearch(model, tokenizer, config)      # prepared once (screen copy, packed weights) ...
    search.run(first_batch); search.run(second_batch) # ... for any number of calls
    summarize_results(results)                      # mean found ACR (t CI), portion memorized (Wilson CI)
    results_frame(results); plot_acr(results)        # pandas table, matplotlib figure

    completion_test(model, tokenizer, target)       # cheaper check: does the first half complete the rest?
    load_targets("quotes.jsonl", target_field="text")

A found prompt's ACR is a lower bound on the true ACR (the shortest prompt is at most that long). When the
search finds none within its budget, the row has no ACR ("no prompt found within the budget"; ``censored``):
that proves nothing about the true shortest prompt, and the target is never counted as memorized.
"""

from acr.analysis import plot_acr, results_frame, summarize_results
from acr.config import ACRConfig
from acr.results import ACRResult
from acr.search import ACRSearch, compute_acr, compute_acr_many
from acr.targets import load_targets, random_token_strings
from acr.verify import completion_test

__all__ = [
    "ACRConfig",
    "ACRResult",
    "ACRSearch",
    "compute_acr",
    "compute_acr_many",
    "completion_test",
    "load_targets",
    "plot_acr",
    "random_token_strings",
    "results_frame",
    "summarize_results",
]
