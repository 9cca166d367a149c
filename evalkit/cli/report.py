"""``evalkit report DIR [DIR ...] -o FILE.html``: one HTML report from finished output directories."""

from __future__ import annotations

import argparse


def add_report_command(commands: argparse._SubParsersAction) -> None:
    report = commands.add_parser(
        "report", help="one HTML report from finished runs, comparisons and ACR audits",
        description="Build one self-contained HTML report from finished output directories of evalkit run, "
                    "compare and acr run: one directory gives its own report; several are reported side by "
                    "side, and their runs (and the systems of comparisons) are compared pair by pair on the "
                    "records they share (paired tests, Holm, win rates). No model is loaded.")
    report.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="output directories, in the order to show")
    report.add_argument("-o", "--output", required=True, metavar="FILE.html", help="where to write the report")
    report.add_argument("--metrics", metavar="NAMES",
                        help="comma-separated metrics to compare (families or columns; default: every metric the "
                             "runs hold but BERTScore precision and recall)")
    report.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    report.add_argument("--on-error", choices=("fail", "zero", "skip"), default="fail",
                        help="how errored records count in comparisons (as in the gate; default fail)")
    report.add_argument("--seed", type=int, default=0, help="seed of the Monte Carlo permutation tests")


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from evalkit.errors import UsageError
    from evalkit.reports.sources import ACR, ACR_COMPARE, COMPARE, RUN, load_sources

    if not 0 < args.alpha < 1:
        raise UsageError(f"--alpha must be between 0 and 1, got {args.alpha}")
    out = Path(args.output)
    if out.is_dir():
        raise UsageError(f"-o {out} is a directory; give a file name such as {out / 'report.html'}")
    if not out.parent.exists():
        raise UsageError(f"-o {out}: directory {out.parent} does not exist")
    sources = load_sources(args.run_dirs)
    if len(sources) == 1:
        source = sources[0]
        if source.kind == RUN:
            from evalkit.reports.html import write_report

            write_report(out, source.data, source.records)
        elif source.kind == COMPARE:
            from evalkit.reports.compare_html import write_compare_report

            write_compare_report(out, source.data, source.records)
        elif source.kind == ACR:
            from evalkit.reports.acr_html import write_acr_report

            write_acr_report(out, source.data, source.records)
        else:
            from evalkit.reports.acr_html import write_acr_compare_report

            write_acr_compare_report(out, source.data, source.records, source.acr_runs)
        print(f"wrote {out}")
        return 0
    from evalkit.compare.finished import FinishedRun, compare_finished_runs
    from evalkit.reports.multi_html import write_multi_report

    runs = []
    for source in sources:
        if source.kind == RUN:
            runs.append(FinishedRun(source.label, source.data, source.records))
        elif source.kind == COMPARE:
            runs += [FinishedRun(f"{source.label}/{name}", results, records)
                     for name, (results, records) in source.systems.items()]
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    comparison = None
    if len(runs) >= 2:
        comparison = compare_finished_runs(runs, metrics=metrics, alpha=args.alpha, on_error=args.on_error,
                                           seed=args.seed)
    write_multi_report(out, sources, comparison, {r.name: list(r.records) for r in runs})
    counts = {k: sum(s.kind == k for s in sources) for k in (RUN, COMPARE, ACR, ACR_COMPARE)}
    kinds = ", ".join(f"{n} {k}{'s' if n > 1 else ''}" for k, n in counts.items() if n)
    print(f"wrote {out} ({kinds}{f'; {len(runs)} runs compared' if comparison else ''})")
    return 0
