"""``evalkit compare --config FILE.yaml``: argparse wiring and terminal output (the work is in evalkit.compare)."""

from __future__ import annotations

import argparse


def add_compare_command(commands: argparse._SubParsersAction) -> None:
    compare = commands.add_parser(
        "compare", help="compare systems (base, fine-tuned, RAG, precomputed) on one question set",
        description="Run every system of the config on the same questions, score them the same way, compare every "
                    "pair with paired statistics (Holm-corrected) and check the config's require rules. Writes "
                    "comparison.json, report.html and a run directory per system. Exit 0 all rules hold, 1 a rule "
                    "failed, 2 bad config or input, 3 runtime failure. A re-run reuses finished generations and "
                    "judgements.")
    compare.add_argument("--config", required=True, metavar="FILE.yaml", help="what to compare (see the README)")
    compare.add_argument("--output-dir", metavar="DIR", help="overrides the config's output_dir")
    compare.add_argument("--junit", metavar="FILE.xml", help="also write the require rules as JUnit XML")
    compare.add_argument("--summary-md", metavar="FILE.md",
                         help="also write a Markdown summary (e.g. $GITHUB_STEP_SUMMARY)")
    compare.add_argument("--no-progress", action="store_true", help="no progress bars")
    from evalkit.cli.rayopts import add_ray_options

    add_ray_options(compare)  # model systems' generation (hf:) on Ray actors


def format_systems_table(comparison: dict) -> str:
    from evalkit.summary_table import text_table

    metrics = comparison["metrics"]
    systems = comparison["systems"]
    metrics = [m for m in metrics if any(m in s for s in systems.values())]
    rows = []
    errored = False
    for name, summaries in systems.items():
        cells = [name]
        for m in metrics:
            s = summaries.get(m)
            if s is None or s.get("mean") is None:
                cells.append("-")
                continue
            ci = s.get("ci95")
            errors = f" ({s['errors']} err)" if s.get("errors") else ""
            errored = errored or bool(errors)
            cells.append(f"{s['mean']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "") + errors)
        rows.append(cells)
    table = text_table(["system", *metrics], rows, right=set(range(1, len(metrics) + 1)))
    if errored:
        policy = comparison.get("on_error", "fail")
        how = {"fail": "counted at the metric's worst value", "zero": "counted as 0",
               "skip": "left out"}.get(policy, policy)
        table += f"\n(N err): records whose generation or scoring errored, {how} (on_error: {policy})"
    return table


def main(args: argparse.Namespace) -> int:
    from evalkit.cli.rayopts import ray_settings
    from evalkit.compare.config import load_compare_config
    from evalkit.compare.run import COMPARISON_FILE, rules_as_gate, run_compare

    config = load_compare_config(args.config)
    ray = ray_settings(args)
    result = run_compare(config, output_dir=args.output_dir, progress=not args.no_progress, ray=ray)
    comparison = result.comparison
    print(format_systems_table(comparison))
    print()
    for line in result.verdicts:
        print(line)
    gate = rules_as_gate(result)
    if result.rules:
        from evalkit.gate.output import format_gate_table

        print()
        print(format_gate_table(gate))
    if args.junit or args.summary_md:
        from evalkit.gate.output import write_junit, write_summary_md

        if args.junit:
            write_junit(args.junit, gate)
        if args.summary_md:
            write_summary_md(args.summary_md, gate)
    print(f"\nwrote {result.output_dir}/ ({COMPARISON_FILE}, report.html, systems/<name>/)")
    return result.exit_code
