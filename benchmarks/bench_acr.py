"""ACR search speed: evalkit's GCG vs nanoGCG 0.3.0 driving the same length search, side by side in one run.

    .venv/bin/python benchmarks/bench_acr.py [--model hf:smollm2] [--targets FILE] [--max-targets N]
        [--steps 30] [--search-width 64] [--topk 256] [--seeds 0 1 2] [--threads 2] [--also-exact]
        [--json OUT]

Needs nanoGCG: ``make install`` puts ``nanogcg==0.3.0`` in with ``--no-deps`` (its transformers pin,
<=4.47.1, is what constraints.txt installs; its other dependencies are already here).

Both sides run :func:`acr.search.search_prompt_length` (MiniPrompt: grow from 5 tokens by 5, then shrink)
on the same float32 model, the same targets and seeds, steps per length, search width, top-k and allowed
tokens (ASCII, no special tokens: nanoGCG's default filter). Only the optimizer at one length differs:

* evalkit: :func:`acr.gcg.optimize_length` with its defaults (``screen_dtype="auto"``: the fastest screen
  measured on this machine -- bfloat16, float16 or int8 -- or none, scores candidates first; the float32
  model takes the gradient, re-scores the screen's best four and its near-matches, moves by exact losses
  and decides success; ``linear_kernel="auto"``: while the model itself scores candidates, its linear
  layers run through oneDNN with the weights packed once, on the weight shapes where that was measured
  faster on this machine -- float32 either way, see :mod:`acr.kernels`);
* nanoGCG: ``nanogcg.GCG.run`` per length, through :mod:`benchmarks.nanogcg_adapter`;
* with --also-exact, evalkit again with ``screen_dtype="none"`` (float32 throughout), to show how much of
  the speed-up is the screen.

Every reported prompt is checked the same way (greedy ``generate`` from the exact input ids). Per-model
setup (token filters, the screen copy) is made once per side and seed and not timed, as in a multi-target
run. Printed per target and seed: the shortest prompt found and when, wall seconds, candidate evaluations
per second, and the share of the machine's measured matmul rate (float32 and bfloat16) that the search's
useful FLOPs reach (FLOPs of one gradient and one candidate forward are counted with torch's
FlopCounterMode at each prompt length tried; nanoGCG's extra logits over the prompt positions are not
counted as useful). The comparison for a target is the time each side took to hold a verified prompt
of at most nanoGCG's final length (the whole search's time when nanoGCG found none).

GCG is stochastic: one seed's outcome on one target swings widely for either side (nanoGCG found 5- and
29-token prompts for the same target with two seeds), so the verdict is taken over all targets and
seeds, and both sides are charged alike: the time to a verified prompt no longer than nanoGCG's is
summed over every run, with evalkit's whole search time on a run where it never got there (and
nanoGCG's whole search time where nanoGCG found nothing). Exit status 0 when that sum is at least 3x
shorter for evalkit and evalkit found no fewer prompts; otherwise 1. Also printed: total wall time of
each side, prompts found, and the mean found ACR over the prompts each side found (one convention with
``acr.summarize_results``). Runs where evalkit's prompt ended longer are listed, never hidden.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Predictable strings SmolLM2 can be driven to emit within a CPU budget (evalkit found 2-, 4- and 3-token
# prompts for them at 30 steps per length, seed 0), and real quotes from datasets/famous_quotes.json (the
# shortest ones: longer quotes need budgets beyond a side-by-side CPU run; pass any with --targets).
COUNTING_TARGETS = [
    "1, 2, 3, 4, 5, 6, 7, 8, 9, 10",
    "Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday",
    "A, B, C, D, E, F, G, H, I, J, K",
]
QUOTES = ["To be, or not to be, that is the question.", "Neither a borrower nor a lender be."]
DEFAULT_TARGETS = [*COUNTING_TARGETS, *QUOTES]


def matmul_rates(threads: int, budget_s: float = 2.0) -> dict[str, float]:
    """Best measured GFLOP/s of a dense matmul, float32 and bfloat16, at shapes like a 135M model's.

    Bounded in time: each dtype gets about ``budget_s`` seconds; a shape whose single product already takes
    a large part of that (bfloat16 emulated in software on an AVX2-only CPU: about 2 GFLOP/s) is timed once
    and the larger shapes are skipped, so the whole measurement takes seconds on every CPU."""
    import torch

    torch.set_num_threads(threads)
    rates = {}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        best, spent = 0.0, 0.0
        for m, k, n in ((1024, 576, 1536), (1024, 1536, 576), (2048, 2048, 2048)):
            if spent > budget_s / 2:
                break
            a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
            start = time.perf_counter()
            a @ b  # warm-up, and a first timing
            once = time.perf_counter() - start
            spent += once
            repeats = int(min(10, max(0, (budget_s / 3 - once) / max(once, 1e-6))))
            if repeats:
                start = time.perf_counter()
                for _ in range(repeats):
                    a @ b
                elapsed = time.perf_counter() - start
                spent += elapsed
                best = max(best, 2 * m * k * n * repeats / elapsed / 1e9)
            else:
                best = max(best, 2 * m * k * n / once / 1e9)
        rates[name] = best
    return rates


class FlopTable:
    """Useful FLOPs of one gradient and of one candidate forward, per prompt length, counted once each."""

    def __init__(self, model: Any, prefix: list[int], target_ids: list[int], allowed: Any):
        self.model, self.prefix, self.target_ids, self.allowed = model, prefix, target_ids, allowed
        self.cache: dict[int, tuple[float, float]] = {}

    def at(self, length: int) -> tuple[float, float]:
        if length not in self.cache:
            import torch
            from torch.utils.flop_counter import FlopCounterMode

            from acr.gcg import build_problem, score_candidates, token_gradient

            problem = build_problem(self.model, self.prefix, [], self.target_ids, self.allowed, search_width=1)
            prompt = torch.full((length,), int(self.allowed.nonzero()[0]))
            with FlopCounterMode(display=False) as grad_count:
                token_gradient(problem, prompt)
            with FlopCounterMode(display=False) as eval_count:
                score_candidates(problem, prompt.unsqueeze(0))
            self.cache[length] = (grad_count.get_total_flops(), eval_count.get_total_flops())
        return self.cache[length]

    def useful(self, lengths_tried: list[dict[str, Any]]) -> float:
        total = 0.0
        for entry in lengths_tried:
            grad, one = self.at(entry["length"])
            total += entry["steps"] * grad + entry["candidates"] * one
        return total


def run_side(prep: Any, target: str, optimizer: Any = None) -> tuple[Any, float]:
    """One target through the shared length search with one optimizer: (ACRResult, seconds).

    ``prep`` is the side's per-model setup (token filter, screen copy), made once per side as
    ``compute_acr_many`` makes it once per run, and not timed; the seconds cover everything per target
    (prefix caches, search, final verification).
    """
    from acr.search import _prompt_cap, _run_target, encode_target, optimize_length

    start = time.perf_counter()
    target_ids = encode_target(prep.tokenizer, target)
    _prompt_cap(prep, target_ids)
    result = _run_target(prep, target, target_ids, optimizer or optimize_length)
    return result, time.perf_counter() - start


def seconds_to_reach(attempts: list[dict[str, Any]], total: float, length: int) -> float | None:
    """Seconds until the search first held a verified prompt of at most ``length`` tokens (None: never).

    Setup outside the length attempts is charged up front; then attempts count in the order they ran.
    """
    elapsed = total - sum(entry["seconds"] for entry in attempts)
    for entry in attempts:
        elapsed += entry["seconds"]
        if entry["success"] and entry["length"] <= length:
            return elapsed
    return None


def _row(result: Any, total: float, flops: FlopTable, rates: dict[str, float]) -> dict[str, Any]:
    useful = flops.useful(result.lengths_tried)
    per_second = useful / total / 1e9
    return {
        "success": result.success, "prompt_tokens": result.prompt_tokens if result.success else None,
        "acr": result.acr, "censored": result.censored, "budget": result.budget,
        "steps": result.steps, "candidates": result.forward_passes, "wall_seconds": total,
        "seconds_to_final_prompt": seconds_to_reach(result.lengths_tried, total, result.prompt_tokens)
        if result.success else None,
        "candidates_per_second": result.forward_passes / total,
        "useful_gflop_per_second": per_second,
        "share_of_float32_matmul": per_second / rates["float32"],
        "share_of_bfloat16_matmul": per_second / rates["bfloat16"],
        "prompt_text": result.prompt_text if result.success else None,
        "verified_generation": result.verified_generation, "exact_rechecks": result.exact_rechecks,
        "pruned": result.pruned,
        "lengths_tried": result.lengths_tried,
    }


def compare(row: dict[str, Any]) -> dict[str, Any]:
    """evalkit vs nanoGCG on one target: time to nanoGCG's prompt length (or total time when it found none).

    Both sides are charged alike: where evalkit never held a prompt that short, its whole search time is
    what it cost (``evalkit_seconds``), and the run counts as not reached."""
    ours, theirs = row["evalkit"], row["nanogcg"]
    if theirs["success"]:
        length = theirs["prompt_tokens"]
        mine = seconds_to_reach(ours["lengths_tried"], ours["wall_seconds"], length)
        charged = mine if mine is not None else ours["wall_seconds"]
        return {"basis": f"to a prompt of <= {length} tokens", "nanogcg_seconds": theirs["seconds_to_final_prompt"],
                "evalkit_seconds": charged, "same_or_shorter": mine is not None,
                "speedup": theirs["seconds_to_final_prompt"] / charged}
    return {"basis": "whole search (nanoGCG found none)", "nanogcg_seconds": theirs["wall_seconds"],
            "evalkit_seconds": ours["wall_seconds"], "same_or_shorter": True,
            "speedup": theirs["wall_seconds"] / ours["wall_seconds"]}


def _compare_target(target: str, seed: int, sides: dict[str, Any], prepared: dict[str, Any], model: Any,
                    tokenizer: Any, allowed: Any, not_allowed: Any, rates: dict[str, float]) -> dict[str, Any]:
    """Every side's length search on one target with one seed, printed as it goes."""
    from benchmarks.nanogcg_adapter import NanoGCGAtLength

    target_ids = tokenizer(target, add_special_tokens=False)["input_ids"]
    flops = FlopTable(model, prepared["evalkit"].before, target_ids, allowed)
    row = {"target": target, "seed": seed, "target_tokens": len(target_ids)}
    for side in sides:
        optimizer = NanoGCGAtLength(model, tokenizer, target, not_allowed=not_allowed) \
            if side == "nanogcg" else None
        result, total = run_side(prepared[side], target, optimizer)
        row[side] = _row(result, total, flops, rates)
        if optimizer is not None:
            row[side]["stopped_without_match"] = optimizer.stopped_without_match
        r = row[side]
        found = f"{r['prompt_tokens']}-token prompt in {r['seconds_to_final_prompt']:.1f} s" if r["success"] \
            else "no prompt found within the budget"
        print(f"  {target[:36]!r:38} {side:13} {found:26} {r['wall_seconds']:6.1f} s in all  "
              f"{r['candidates']:5d} cand {r['candidates_per_second']:5.1f}/s  "
              f"{100 * r['share_of_float32_matmul']:5.1f}% f32 / {100 * r['share_of_bfloat16_matmul']:4.1f}% "
              "bf16 matmul", flush=True)
    row["comparison"] = compare(row)
    c = row["comparison"]
    reached = "" if c["same_or_shorter"] else " (evalkit never got there: its whole search charged)"
    print(f"  -> seed {seed}: {c['basis']}: nanoGCG {c['nanogcg_seconds']:.1f} s, evalkit "
          f"{c['evalkit_seconds']:.1f} s{reached}: {c['speedup']:.2f}x", flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="hf:smollm2")
    parser.add_argument("--targets", help="targets file (.txt/.json/.jsonl); default: three built-in strings")
    parser.add_argument("--max-targets", type=int)
    parser.add_argument("--steps", type=int, default=30, help="GCG steps per prompt length (default 30)")
    parser.add_argument("--search-width", type=int, default=64)
    parser.add_argument("--topk", type=int, default=256)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="each target is searched once per seed by each side (default: 0 1 2)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--also-exact", action="store_true", help="also run evalkit without a screen")
    parser.add_argument("--json", type=Path, help="write every number here as JSON")
    parser.add_argument("--emulate-avx2", action="store_true",
                        help="approximate an AVX2-only CPU on this one: torch, MKL and oneDNN limited to AVX2 "
                             "(ATEN_CPU_CAPABILITY, MKL_ENABLE_INSTRUCTIONS, ONEDNN_MAX_CPU_ISA) and int8 through "
                             "oneDNN (FBGEMM would still use AVX-512 VNNI here); a stand-in, not a measurement of "
                             "such a machine")
    args = parser.parse_args(argv)
    if args.emulate_avx2 and os.environ.get("ATEN_CPU_CAPABILITY") != "avx2":
        env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
               "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)  # the limits must be set before torch loads

    from importlib.metadata import version

    import torch
    from nanogcg.utils import get_nonascii_toks

    if args.emulate_avx2:
        torch.backends.quantized.engine = "onednn"

    from acr import ACRConfig
    from acr.gcg import allowed_token_mask
    from acr.measured import cpu_features
    from acr.screens import screen_forward
    from acr.search import _prepare
    from acr.targets import load_targets
    from evalkit.runners.base import RunnerOptions, create_runner

    torch.set_num_threads(args.threads)
    targets = load_targets(args.targets) if args.targets else list(DEFAULT_TARGETS)
    targets = targets[: args.max_targets] if args.max_targets else targets
    start = time.perf_counter()
    rates = matmul_rates(args.threads)
    rates_seconds = time.perf_counter() - start
    runner = create_runner(args.model, RunnerOptions(device="cpu", dtype="float32", use_chat_template=False,
                                                     progress=False))
    model, tokenizer = runner.model, runner.tokenizer
    # The prompt space is ACRConfig's default (printable ASCII, no special tokens): the same as the CLI's and
    # the API's, and as nanoGCG's own filter.
    common = {"steps_per_length": args.steps, "search_width": args.search_width, "topk": args.topk}
    sides = {"evalkit": {}, "nanogcg": {"screen_dtype": "none", "linear_kernel": "torch"}}
    if args.also_exact:
        sides["evalkit_exact"] = {"screen_dtype": "none"}
    allowed = allowed_token_mask(tokenizer, model.get_input_embeddings().weight.shape[0],
                                 allow_non_ascii=ACRConfig().allow_non_ascii)
    not_allowed = get_nonascii_toks(tokenizer, device=model.device)  # nanoGCG's own filter, built once

    cpu = cpu_features()
    print(f"CPU: {cpu['name']} (family {cpu.get('family')}, model {cpu.get('model')}); features: "
          f"{', '.join(cpu['features']) or 'no AVX2'}; torch capability {torch.backends.cpu.get_cpu_capability()}; "
          f"int8 engine {torch.backends.quantized.engine}"
          f"{'; EMULATING an AVX2-only CPU (see --emulate-avx2)' if args.emulate_avx2 else ''}")
    print(f"model {args.model} (float32, CPU, {args.threads} threads); nanogcg {version('nanogcg')}; "
          f"steps/length {args.steps}, search width {args.search_width}, top-k {args.topk}, seeds {args.seeds}")
    print(f"measured matmul ({rates_seconds:.1f} s): float32 {rates['float32']:.0f} GFLOP/s, bfloat16 "
          f"{rates['bfloat16']:.0f} GFLOP/s")
    rows = []
    screens: list[dict[str, Any]] = []
    for seed in args.seeds:
        prepared = {side: _prepare(model, tokenizer, ACRConfig(**common, **extra, seed=seed), "smollm2")
                    for side, extra in sides.items()}
        for prep in prepared.values():
            prep.screen_model()  # per-run setup: made here, untimed, as for the other side's token filter
            prep.packed_linears()
        chosen = prepared["evalkit"]
        measured = chosen.screen_measurement or {}
        forward = screen_forward(model, chosen.screen_dtype)
        print(f"seed {seed}: evalkit's screen: {chosen.screen_dtype or 'none (the model itself)'}"
              f"{f' ({forward} forward)' if forward else ''}; measured "
              f"candidates/s {measured.get('candidates_per_second')}, fidelity {measured.get('fidelity')}"
              f"{' (cached choice)' if measured.get('cached') else ''}", flush=True)
        kernels = chosen.linear_measurement or {}
        rates_text = {shape: f"{r['torch']}/{r['onednn']}" for shape, r in (kernels.get("gflops") or {}).items()}
        print(f"        linear layers packed for oneDNN: {', '.join(chosen.linear_kernels) or 'none'}; measured "
              f"GFLOP/s torch/oneDNN per weight shape {rates_text or kernels.get('reason')}"
              f"{' (cached choice)' if kernels.get('cached') else ''}", flush=True)
        screens.append({"seed": seed, "screen": chosen.screen_dtype, "forward": forward, "measurement": measured,
                        "linear_kernels": chosen.linear_kernels, "linear_measurement": kernels})
        for target in targets:
            rows.append(_compare_target(target, seed, sides, prepared, model, tokenizer, allowed, not_allowed,
                                        rates))


    print()
    summary: dict[str, Any] = {"targets": len(rows), "matmul_gflops": rates, "cpu": cpu, "screens": screens,
                               "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
                               "quantized_engine": torch.backends.quantized.engine,
                               "emulated_avx2": args.emulate_avx2}
    for side in sides:
        wall = sum(row[side]["wall_seconds"] for row in rows)
        cand = sum(row[side]["candidates"] for row in rows)
        useful = sum(row[side]["useful_gflop_per_second"] * row[side]["wall_seconds"] for row in rows)
        summary[side] = {"wall_seconds": wall, "candidates": cand, "candidates_per_second": cand / wall,
                         "found": sum(row[side]["success"] for row in rows),
                         "share_of_float32_matmul": useful / wall / rates["float32"],
                         "share_of_bfloat16_matmul": useful / wall / rates["bfloat16"]}
        s = summary[side]
        print(f"{side:13} found {s['found']}/{len(rows)}  {wall:7.1f} s  {s['candidates_per_second']:5.1f} "
              f"candidates/s  useful FLOPs: {100 * s['share_of_float32_matmul']:.1f}% of the float32 / "
              f"{100 * s['share_of_bfloat16_matmul']:.1f}% of the bfloat16 matmul rate")
    comparisons = [row["comparison"] for row in rows]
    reached = all(c["same_or_shorter"] for c in comparisons)
    speedups = [c["speedup"] for c in comparisons if c["speedup"]]
    summary["same_or_shorter_on_every_target"] = reached
    summary["speedup_geometric_mean"] = statistics.geometric_mean(speedups) if speedups else None
    summary["speedup_min"] = min(speedups) if speedups else None
    summary["mean_found_acr"] = {}
    for side in sides:
        found = [row[side]["acr"] for row in rows if row[side]["success"]]
        summary["mean_found_acr"][side] = {"mean": statistics.mean(found) if found else None, "found": len(found)}
    summary["seconds_to_same_or_shorter"] = {  # every run counted on both sides
        "nanogcg": sum(c["nanogcg_seconds"] for c in comparisons),
        "evalkit": sum(c["evalkit_seconds"] for c in comparisons)}
    summary["total_wall_seconds"] = {side: summary[side]["wall_seconds"] for side in sides}
    summary["speedup_candidates_per_second"] = (summary["evalkit"]["candidates_per_second"]
                                                / summary["nanogcg"]["candidates_per_second"])
    totals = summary["seconds_to_same_or_shorter"]
    wall = summary["total_wall_seconds"]
    print(f"total wall time: nanoGCG {wall['nanogcg']:.1f} s, evalkit {wall['evalkit']:.1f} s "
          f"({wall['nanogcg'] / wall['evalkit']:.2f}x)")
    print(f"time to the same or a shorter prompt than nanoGCG's, every run charged (evalkit's whole search where it "
          f"never got there): nanoGCG {totals['nanogcg']:.1f} s, evalkit {totals['evalkit']:.1f} s "
          f"({totals['nanogcg'] / totals['evalkit']:.2f}x); per run geometric mean "
          f"{summary['speedup_geometric_mean']:.2f}x, lowest {summary['speedup_min']:.2f}x; candidates/s "
          f"{summary['speedup_candidates_per_second']:.2f}x")
    print("evalkit reached the same or a shorter prompt on every target and seed" if reached else
          "evalkit's prompt ended longer than nanoGCG's on: "
          + ", ".join(f"{row['target']!r} (seed {row['seed']})" for row in rows
                      if not row["comparison"]["same_or_shorter"]))
    acr = summary["mean_found_acr"]

    def mean_text(side: str) -> str:
        m = acr[side]
        return f"{m['mean']:.2f} over {m['found']} found" if m["mean"] is not None else "no prompt found"

    summary["passed"] = (totals["nanogcg"] >= 3 * totals["evalkit"]
                         and summary["evalkit"]["found"] >= summary["nanogcg"]["found"])
    print(f"mean found ACR: evalkit {mean_text('evalkit')}, nanoGCG {mean_text('nanogcg')}; target (>= 3x to the "
          f"same or shorter prompts over all runs, no fewer prompts found): "
          f"{'met' if summary['passed'] else 'NOT met'}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows,
                                         "summary": summary}, indent=2, default=str))
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
