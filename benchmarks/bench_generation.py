"""Batched generation (HFRunner) vs one-prompt-at-a-time ``model.generate``, same model, same run.

    .venv/bin/python benchmarks/bench_generation.py [--n 16] [--max-new-tokens 32] [--batch-size 16]
        [--repeats 1] [--inline | --dataset PATH]

Prompts: the first N ``document`` fields of datasets/news_summaries.jsonl when that file exists (or
--dataset PATH), else built-in news-style paragraphs (--inline forces these). Both ways must give
identical completions; the script exits 1 when they do not.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_DATASET = ROOT / "datasets" / "news_summaries.jsonl"
INSTRUCTION = "Summarize the following news article in one sentence.\n\n"

INLINE_DOCUMENTS = [
    "The city council voted 7-2 on Tuesday to add 40 miles of protected bike lanes over the next five "
    "years. Supporters pointed to a doubling of cycling trips since 2019 and a string of crashes on busy "
    "avenues; opponents said the plan would remove hundreds of parking spaces from commercial streets.",
    "Heavy rain flooded low-lying streets in the capital overnight, stranding commuters and closing two "
    "subway lines. The weather service said more than 120 millimetres fell in six hours, a record for "
    "the month.",
    "The central bank left its benchmark interest rate unchanged at 4.25 percent on Thursday. Officials "
    "said inflation remains above the 2 percent target but is easing faster than expected, and signalled "
    "that cuts could come later this year if the labour market continues to cool.",
    "Researchers in Norway described a new species of snailfish collected at a depth of 7,000 metres. "
    "The fish survives pressures once thought too high for vertebrates, and the team says its proteins "
    "could help explain how life adapts to the deepest trenches.",
    "A family-run bakery in a small river town won the national bread prize for its sourdough, beating "
    "more than 300 entrants. The owners said they would use the prize money to train apprentices.",
    "Shares of the country's largest carmaker fell 8 percent after it cut its annual sales forecast, "
    "blaming weak demand for electric vehicles in Europe and rising battery costs.",
    "The national football team qualified for the World Cup for the first time in 24 years after a 2-1 "
    "win away from home, with the decisive goal scored in stoppage time by an 19-year-old substitute.",
    "Health officials reported a sharp rise in measles cases in three northern provinces and urged "
    "parents to check their children's vaccination records. Most of the 212 confirmed cases involve "
    "unvaccinated children under five.",
    "A wildfire that began in dry scrubland near the coast has burned more than 5,000 hectares and forced "
    "the evacuation of four villages. Firefighters expect calmer winds on Sunday to help contain it.",
    "The education ministry announced that all public secondary schools will ban mobile phones in "
    "classrooms from next September, citing studies linking phone use to lower test scores.",
    "Engineers completed the final span of a 2.3-kilometre bridge linking the island to the mainland, "
    "two years behind schedule and 30 percent over budget. Traffic is expected to start crossing in spring.",
    "The parliament passed a law requiring large online platforms to publish how their recommendation "
    "algorithms work and to let users switch to a chronological feed.",
    "Farmers in the southern plains say a third year of drought has cut wheat harvests by nearly half, "
    "and the agriculture ministry has promised emergency payments to the worst-hit districts.",
    "A museum returned 14 bronze sculptures to their country of origin after a three-year review found "
    "they had been taken during a colonial military expedition in the 19th century.",
    "The mayor unveiled a plan to turn a disused railway line into a 6-kilometre elevated park, modelled "
    "on projects in New York and Paris, with construction to start next year.",
    "A cyberattack disrupted the ticketing systems of the national railway for most of Monday, causing "
    "long queues at stations. The company said no customer payment data had been stolen.",
    "Astronomers using a new survey telescope reported more than 2,000 previously unknown asteroids in "
    "its first month of observations, including several whose orbits bring them near Earth.",
    "The country's biggest supermarket chain said it will stop selling eggs from caged hens by 2027 after "
    "a campaign by animal welfare groups gathered more than a million signatures.",
    "Power was restored to 80,000 homes after a storm brought down lines across the eastern region. The "
    "grid operator said the remaining outages should be fixed within 48 hours.",
    "A court ruled that the government must redo the environmental assessment of a planned coal mine, "
    "saying the original study ignored the effect on groundwater used by nearby farms.",
]


def load_documents(n: int, dataset: Path | None, inline: bool) -> tuple[list[str], str]:
    path = dataset or DEFAULT_DATASET
    if not inline and path.is_file():
        docs = []
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    docs.append(str(json.loads(line)["document"]))
                if len(docs) >= n:
                    break
        if docs:
            return docs, f"{path} (first {len(docs)})"
    if dataset is not None and not inline:
        raise SystemExit(f"dataset {dataset} not found or empty")
    docs = (INLINE_DOCUMENTS * (n // len(INLINE_DOCUMENTS) + 1))[:n]
    return docs, f"built-in news paragraphs ({len(docs)})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2", help="hf runner target (default: smollm2)")
    parser.add_argument("--n", type=int, default=16, help="number of prompts (default 16)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16, help="HFRunner batch size (default 16)")
    parser.add_argument("--dataset", type=Path, default=None,
                        help=f"JSONL with a 'document' field (default {DEFAULT_DATASET.relative_to(ROOT)} "
                             "when it exists)")
    parser.add_argument("--inline", action="store_true", help="use the built-in prompts even if a dataset exists")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="time each way this many times (alternating) and keep the fastest (default 1)")
    args = parser.parse_args(argv)

    import torch

    from evalkit.runners.base import RunnerOptions
    from evalkit.runners.hf import HFRunner

    if args.threads:
        torch.set_num_threads(args.threads)
    docs, source = load_documents(args.n, args.dataset, args.inline)
    prompts = [INSTRUCTION + doc for doc in docs]

    runner = HFRunner(args.model, RunnerOptions(batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                                                progress=False))
    tok, model = runner.tokenizer, runner.model
    lengths = [len(runner.prompt_token_ids(p)) for p in prompts]
    print(f"model      {runner.spec} ({runner.num_parameters / 1e6:.1f}M params, loaded in "
          f"{runner.load_seconds:.1f}s), device {runner.device}, dtype {runner.describe()['dtype']}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"prompts    {source}; prompt tokens min/mean/max {min(lengths)}/"
          f"{sum(lengths) / len(lengths):.0f}/{max(lengths)}; chat template {runner.uses_chat_template}")
    print(f"generation greedy, max_new_tokens {args.max_new_tokens}, stop ids {runner.stop_token_ids}, "
          f"best of {max(1, args.repeats)}")

    def naive(prompt: str) -> str:
        """The usual loop: tokenize one prompt, generate, decode. No padding, batch of one."""
        enc = tok(runner.render_prompt(prompt), add_special_tokens=not runner.uses_chat_template,
                  return_tensors="pt", return_token_type_ids=False).to(runner.device)
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=args.max_new_tokens, do_sample=False,
                                 eos_token_id=runner.stop_token_ids, pad_token_id=runner.pad_token_id)
        return tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip()

    naive(prompts[0])  # warm-up, not timed (first-call allocations)

    naive_s = batched_s = float("inf")
    one_by_one: list[str] = []
    batched: list[str] = []
    for _ in range(max(1, args.repeats)):  # alternate the two ways: a noisy neighbour hits both alike
        started = time.perf_counter()
        run = [naive(p) for p in prompts]
        naive_s = min(naive_s, time.perf_counter() - started)
        if one_by_one and run != one_by_one:
            print("one-at-a-time outputs changed between repeats")
            return 1
        one_by_one = run

        started = time.perf_counter()
        run = runner.generate(prompts)
        batched_s = min(batched_s, time.perf_counter() - started)
        if batched and run != batched:
            print("batched outputs changed between repeats")
            return 1
        batched = run

    new_tokens = sum(len(tok(o, add_special_tokens=False)["input_ids"]) for o in batched)
    rows = [
        ("one-at-a-time model.generate", 1, naive_s),
        ("HFRunner.generate (batched)", args.batch_size, batched_s),
    ]
    print()
    print(f"{'method':<32}{'batch':>6}{'seconds':>10}{'s/prompt':>10}{'tokens/s':>10}")
    for name, batch, seconds in rows:
        print(f"{name:<32}{batch:>6}{seconds:>10.2f}{seconds / len(prompts):>10.3f}{new_tokens / seconds:>10.1f}")
    ratio = naive_s / batched_s
    identical = batched == one_by_one
    print(f"\nspeed-up   {ratio:.2f}x (target >= 3x)")
    same = sum(a == b for a, b in zip(batched, one_by_one, strict=True))
    print(f"identical  {identical} ({same}/{len(prompts)} outputs)")
    if not identical:
        for i, (a, b) in enumerate(zip(batched, one_by_one, strict=True)):
            if a != b:
                print(f"  #{i} batched: {a!r}\n  #{i} single:  {b!r}")
        return 1
    print(f"example    {batched[0]!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
