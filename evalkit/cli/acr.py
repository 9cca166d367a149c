"""``evalkit acr run`` and ``evalkit acr compare``: the Adversarial Compression Ratio from the command line.

    evalkit acr run --model hf:smollm2 --targets quotes.json --output-dir runs/acr [--seed 0] ...
    evalkit acr compare --model hf:original --model hf:unlearned --targets quotes.json --output-dir runs/cmp

``run`` writes DIR/results.jsonl (one line per finished target, fsynced as it finishes), DIR/summary.json
and DIR/report.html; re-running with the same DIR computes only the targets not yet in results.jsonl
(see :mod:`acr.runfiles`). ``compare`` runs both models in DIR/model_a and DIR/model_b (so it resumes
too), adds the completion test for each model, and writes DIR/compare.jsonl and DIR/compare.json with
a paired memorized / not-memorized table with an exact McNemar test, and found-ACR differences B - A
(with a Student-t CI of their mean) on the targets where both models found a prompt.

Only argparse is imported at module level: torch, transformers, numpy and pandas load inside the commands.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import sys
import time
from pathlib import Path
from typing import Any

from evalkit.cli.argtypes import non_negative_int, positive_int
from evalkit.cli.rayopts import add_ray_options, ray_settings
from evalkit.errors import UsageError
from evalkit.summary_table import acr_budget_text, text_table

GRADIENT_PREFIXES = ("hf",)  # runners that load a local model ACR can take gradients through
NEEDS_GRADIENTS = "ACR needs a local model with gradients (hf:...)"
COMPARE_FILE = "compare.jsonl"
COMPARE_SUMMARY_FILE = "compare.json"


def _tau(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 1.0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected TAU >= 1, got {text}: below 1 a prompt longer than the string "
                                         "would count as memorizing it")
    return value


def _add_common(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("targets")
    data.add_argument("--targets", required=True, metavar="FILE",
                      help=".txt (one target a line), .json (list of strings, whitespace kept) or .jsonl")
    data.add_argument("--target-field", default="text", help="string field of a .jsonl line (default: text)")
    data.add_argument("--max-targets", type=positive_int, metavar="N", help="only the first N targets")
    search = parser.add_argument_group("search")
    search.add_argument("--seed", type=int, default=0, help="seed of every target's search (default 0)")
    search.add_argument("--max-prompt-tokens", type=positive_int, metavar="N",
                        help="longest prompt tried (default: the target's length, i.e. tau = 1)")
    search.add_argument("--initial-length", type=positive_int, default=5, metavar="N",
                        help="first prompt length tried (default 5)")
    search.add_argument("--steps", type=positive_int, default=200, metavar="N",
                        help="GCG steps per prompt length (default 200)")
    search.add_argument("--search-width", type=positive_int, default=128, metavar="N",
                        help="candidate prompts scored per step (default 128)")
    search.add_argument("--topk", type=positive_int, default=256, metavar="N",
                        help="candidate tokens per position (default 256)")
    search.add_argument("--restarts", type=non_negative_int, default=0, metavar="N",
                        help="extra random restarts at a failed length (default 0)")
    search.add_argument("--screen-dtype", choices=["auto", "bfloat16", "float16", "int8", "none"], default="auto",
                        help="the cheaper model copy that scores candidates first (int8: dynamically quantized "
                             "linear layers, CPU); the model itself takes the gradient, re-scores the best-ranked "
                             "and near-matching candidates and decides success (default auto: the fastest "
                             "measured on this machine for a float32 model, cached per machine; none: score with "
                             "the model itself)")
    search.add_argument("--linear-kernel", choices=["auto", "torch", "onednn"], default="auto",
                        help="how the model's own linear layers multiply while it scores candidates (CPU, float32): "
                             "torch's kernel, or oneDNN's with the weights packed once (the same float32 products "
                             "summed in another order; the gradient and the generate that verifies run unpacked); "
                             "default auto: packed where measured faster on this machine, cached per machine")
    search.add_argument("--chat-template", action="store_true",
                        help="wrap the free prompt in the model's chat template (scaffold not counted); the target "
                             "must then be the model's whole reply, end-of-turn token included")
    search.add_argument("--no-require-end-of-turn", action="store_true",
                        help="with --chat-template: the reply may go on after the target (it need only start with "
                             "it)")
    search.add_argument("--system-prompt", help="system turn of the chat template (needs --chat-template)")
    search.add_argument("--allow-non-ascii", action="store_true",
                        help="let prompts use tokens whose text is not printable ASCII (default: ASCII only, as "
                             "nanoGCG)")
    search.add_argument("--require-retokenize", action="store_true",
                        help="only try prompts whose text, typed as is (inside the chat template), gives the same "
                             "tokens again")
    search.add_argument("--threshold", type=_tau, default=1.0, metavar="TAU",
                        help="memorized when the found ACR is above TAU (default 1; TAU >= 1)")
    model = parser.add_argument_group("model")
    model.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    model.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto")
    out = parser.add_argument_group("output")
    out.add_argument("--no-report", action="store_true", help="skip report.html")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_acr_commands(commands: argparse._SubParsersAction) -> None:
    """Register ``acr run`` and ``acr compare`` on the top-level subparsers."""
    acr = commands.add_parser("acr", help="memorization: Adversarial Compression Ratio (ACR) of target strings",
                              description="Adversarial Compression Ratio: a string is memorized when a prompt "
                                          "shorter than it makes the model emit it exactly (ACR > 1).")
    actions = acr.add_subparsers(dest="acr_command", metavar="ACTION", parser_class=type(acr))
    run = actions.add_parser("run", help="ACR of every target under one model",
                             description="Find the shortest prompt that makes the model emit each target; "
                                         "write results.jsonl, summary.json and report.html to --output-dir. "
                                         "Re-running with the same --output-dir resumes.")
    run.add_argument("--model", required=True, help="model spec: hf:smollm2, hf:<id or local path>")
    run.add_argument("--output-dir", required=True, metavar="DIR", help="run directory (re-use it to resume)")
    _add_common(run)
    add_ray_options(run, "search the targets on Ray actors, one model each and one target per call")
    compare = actions.add_parser("compare", help="ACR and completion test of two models, target by target",
                                 description="Run ACR for model A and model B (e.g. original vs unlearned) "
                                             "on the same targets; memorized A vs B with an exact McNemar test, "
                                             "found-ACR differences B - A where both found a prompt, and the "
                                             "completion test for both.")
    compare.add_argument("--model", required=True, action="append", metavar="SPEC",
                         help="model spec; give it twice: A then B")
    compare.add_argument("--output-dir", metavar="DIR",
                         help="default: reports/<timestamp>-acr-compare; per-model runs go to DIR/model_a, "
                              "DIR/model_b (re-use DIR to resume)")
    _add_common(compare)


def main(args: argparse.Namespace) -> int:
    """Dispatch ``evalkit acr ACTION``."""
    if args.acr_command == "run":
        return run_acr(args)
    if args.acr_command == "compare":
        return compare_acr(args)
    raise UsageError("evalkit acr needs an action: run or compare (see evalkit acr --help)")


# ---------------------------------------------------------------------------------------------- helpers


def _check_spec(spec: str) -> None:
    prefix, sep, target = spec.partition(":")
    if not sep or prefix not in GRADIENT_PREFIXES or not target.strip():
        raise UsageError(f"{NEEDS_GRADIENTS}; got {spec!r}")
    from evalkit.extras import HF_MODULES, require

    require(HF_MODULES, "hf", "ACR")


def _config(args: argparse.Namespace):
    from acr import ACRConfig

    if args.system_prompt is not None and not args.chat_template:
        raise UsageError("--system-prompt needs --chat-template")
    if args.no_require_end_of_turn and not args.chat_template:
        raise UsageError("--no-require-end-of-turn needs --chat-template")
    return ACRConfig(max_prompt_tokens=args.max_prompt_tokens, initial_length=args.initial_length,
                     steps_per_length=args.steps, search_width=args.search_width, topk=args.topk,
                     restarts=args.restarts, seed=args.seed, screen_dtype=args.screen_dtype,
                     linear_kernel=args.linear_kernel,
                     allow_non_ascii=args.allow_non_ascii, require_retokenize=args.require_retokenize,
                     chat_template=args.chat_template, system_prompt=args.system_prompt,
                     require_end_of_turn=not args.no_require_end_of_turn, threshold=args.threshold)


def _load_targets(args: argparse.Namespace) -> list[str]:
    from acr.targets import load_targets

    targets = load_targets(args.targets, target_field=args.target_field)
    return targets[: args.max_targets] if args.max_targets else targets


def _runner_options(args: argparse.Namespace):
    from evalkit.runners.base import RunnerOptions

    return RunnerOptions(device=args.device, dtype=args.dtype, use_chat_template=args.chat_template, seed=args.seed,
                         progress=not args.no_progress)


def _load_model(spec: str, options: Any):
    """The runner for ``spec``; refuses anything without a local, differentiable model."""
    _check_spec(spec)
    from evalkit.runners.base import create_runner

    runner = create_runner(spec, options)
    if getattr(runner, "model", None) is None or getattr(runner, "tokenizer", None) is None:
        raise UsageError(f"{NEEDS_GRADIENTS}; {spec!r} has no local model")
    return runner


class _Searcher:
    """One model for ACR searches: in this process, or inside a Ray actor (``evalkit acr run --ray``, one
    target per call)."""

    def __init__(self, spec: str, options: Any, config: Any) -> None:
        self.spec, self.config = spec, config
        self.runner = _load_model(spec, options)
        self.screen: tuple[str | None, dict[str, Any] | None] | None = None
        self.linear_kernels: tuple[list[str], dict[str, Any] | None] | None = None
        self._search: Any = None  # acr.search.ACRSearch, made on the first target and kept for the rest

    def info(self) -> dict[str, Any]:
        """The model id and what really runs: "auto" dtypes, devices, screens and linear kernels resolve
        differently on other machines, and their results must not be mixed on resume. Resolves the screen and
        the kernels (once)."""
        from acr.screens import screen_forward
        from acr.search import resolve_linear_kernels, resolve_screen

        if self.screen is None:
            self.screen = resolve_screen(self.runner.model, self.runner.tokenizer, self.config)
        if self.linear_kernels is None:
            self.linear_kernels = resolve_linear_kernels(self.runner.model, self.runner.tokenizer, self.config)
        runner = self.runner
        describe = runner.describe() if callable(getattr(runner, "describe", None)) else {"spec": self.spec}
        resolved = {"dtype": str(runner.model.dtype).removeprefix("torch."), "device": str(runner.device),
                    "screen_dtype": self.screen[0]}
        forward = screen_forward(runner.model, self.screen[0])
        if forward not in (None, "transformers"):  # as packing: a run with transformers' forward keeps its fingerprint
            resolved["screen_forward"] = forward
        if self.screen[0] is not None:  # only screened searches re-check near-matches
            from acr.gcg import RECHECKS

            resolved["screen_rechecks"] = RECHECKS
        if self.linear_kernels[0]:  # only when packed: a run without packing keeps its earlier fingerprint
            resolved["linear_kernels"] = list(self.linear_kernels[0])
        return {"model_id": _model_id(runner, self.spec), "resolved": resolved, "describe": describe,
                "screen": self.screen, "linear_kernels": self.linear_kernels}

    def use_screen(self, screen: tuple[str | None, dict[str, Any] | None],
                   linear_kernels: tuple[list[str], dict[str, Any] | None] | None = None) -> None:
        """Search with the screen and linear kernels the run resolved (on its first worker), not ones measured
        here."""
        self.screen = screen
        if linear_kernels is not None:
            self.linear_kernels = linear_kernels
        self._search = None

    def validate(self, targets: list[str], path: str) -> tuple[int, dict[str, Any] | None]:
        """(targets shorter than the prompt cap, None), or (0, the InputError's fields)."""
        from evalkit.errors import InputError

        try:
            return _validate_targets(self.runner, targets, self.config, path), None
        except InputError as error:
            return 0, {"message": error.reason, "path": error.path, "field": error.field}

    def compute(self, target: str) -> dict[str, Any]:
        """One target (a Ray call), searched with the state prepared on this worker's first call: the screen
        copy and packed weights are made once per worker, not once per target."""
        (result,) = self.search().run([target], progress=False)
        return result.to_dict()

    def search(self) -> Any:
        """This model's :class:`acr.search.ACRSearch`, prepared once with the run's screen and kernels."""
        if self._search is None:
            from acr.search import ACRSearch

            self._search = ACRSearch(self.runner.model, self.runner.tokenizer, self.config,
                                     model_name=_model_id(self.runner, self.spec), screen=self.screen,
                                     linear_kernels=self.linear_kernels)
        return self._search


def _model_id(runner: Any, spec: str) -> str:
    """A stable name for resume matching: ``hf:<resolved local path>`` or the alias/hub id as given."""
    source = getattr(runner, "source", None) or {}
    if source.get("kind") == "local":
        path = source["path"] + (f"/{source['gguf_file']}" if source.get("gguf_file") else "")
        return f"hf:{path}"
    return spec


def _searchers(spec: str, args: argparse.Namespace, config: Any, ray: Any, targets: list[str]):
    """``ray.workers`` searchers as Ray actors, the targets checked by the first (exit 2 on a bad one)."""
    from evalkit.errors import InputError
    from evalkit.raycluster import ActorPool

    pool = ActorPool(_Searcher, (spec, _runner_options(args), config), ray)
    short, problem = pool.call_on(0, "validate", targets, str(args.targets))
    if problem is not None:
        pool.close()
        raise InputError(problem["message"], path=problem["path"], field=problem["field"])
    _note_short_targets(short, config)
    return pool


def _search_on_ray(pool: Any, todo: list[str], keep: Any, *, progress: bool) -> None:
    """One target per Ray call, each kept (appended to results.jsonl) the moment it returns."""
    from evalkit.progress import progress_counter

    bar = progress_counter(len(todo), desc="ACR (Ray)", enabled=progress and bool(todo))
    try:
        for _, row in pool.map_unordered("compute", todo):
            keep(row)
            bar.update(1)
    finally:
        bar.close()


def _validate_targets(runner: Any, targets: list[str], config: Any, path: str) -> int:
    """Every target must encode to tokens and fit the model's context with a one-token prompt; returns how
    many are shorter than --max-prompt-tokens."""
    from acr.search import build_scaffold, encode_target, end_of_turn_ids
    from evalkit.errors import InputError
    from evalkit.lm import context_limit

    before, after, _, _ = build_scaffold(runner.tokenizer, config)
    after = after + end_of_turn_ids(runner.tokenizer, config)  # the end of turn the reply must emit
    limit = context_limit(runner.model, runner.tokenizer)
    shorter_than_cap = 0
    for index, target in enumerate(targets):
        try:
            ids = encode_target(runner.tokenizer, target)
        except UsageError as error:
            raise InputError(str(error), path=path, field=f"target {index + 1}") from None
        if limit is not None and len(before) + len(after) + len(ids) + 1 > limit:
            raise InputError(f"target has {len(ids)} tokens; with a prompt it exceeds the model's context of "
                             f"{limit} tokens", path=path, field=f"target {index + 1}")
        shorter_than_cap += config.max_prompt_tokens is not None and len(ids) < config.max_prompt_tokens
    return shorter_than_cap


def _note_short_targets(count: int, config: Any) -> None:
    if count:
        print(f"note: {count} target(s) are shorter than --max-prompt-tokens {config.max_prompt_tokens}; "
              "their search stops at |y| tokens (a prompt that long cannot show memorization)", file=sys.stderr)


def _versions() -> dict[str, str]:
    import importlib.metadata as md
    import platform

    from evalkit import __version__

    out = {"evalkit": __version__, "python": sys.version.split()[0], "platform": platform.platform()}
    for name in ("torch", "transformers", "tokenizers", "numpy"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[name] = md.version(name)
    return out


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _acr_for_model(spec: str, args: argparse.Namespace, targets: list[str], config: Any, directory: Path,
                   *, after: Any = None) -> dict[str, Any]:
    """:func:`_acr_in` while holding ``directory`` (one process per run directory)."""
    from evalkit.runners.store import run_lock

    with run_lock(directory):
        return _acr_in(spec, args, targets, config, directory, after=after)


def _acr_in(spec: str, args: argparse.Namespace, targets: list[str], config: Any, directory: Path,
            *, after: Any = None) -> dict[str, Any]:
    """Load ``spec``, compute the targets not yet in ``directory``, write summary.json (+ report.html).

    ``after(runner, rows)``, when given, runs while the model is still loaded (the compare command's
    completion tests). Returns ``{"summary", "rows", "runner", "after"}``.
    """
    from acr import summarize_results
    from acr.runfiles import (
        REPORT_FILE,
        RESULTS_FILE,
        ResultsFile,
        config_fingerprint,
        file_sha256,
        ordered_rows,
        plan_resume,
        write_summary,
    )

    started = time.perf_counter()
    created = _now()
    ray = getattr(args, "ray_settings", None)
    runner = pool = None
    if ray is None:
        searcher = _Searcher(spec, _runner_options(args), config)
        runner = searcher.runner
        _note_short_targets(_validate_targets(runner, targets, config, args.targets), config)
        info = searcher.info()
    else:
        pool = _searchers(spec, args, config, ray, targets)
        info = pool.call_on(0, "info")
        pool.on_each("use_screen", info["screen"], info["linear_kernels"])  # as the fingerprint says
        info["describe"] = {**info["describe"], "ray": ray.to_dict()}
    load_s = time.perf_counter() - started
    model_id, resolved = info["model_id"], info["resolved"]
    fingerprint = config_fingerprint({**config.to_dict(), "resolved": resolved})

    try:
        directory.mkdir(parents=True, exist_ok=True)
        results_file = ResultsFile(directory)
        existing = results_file.load()
        done, todo = plan_resume(existing, targets, model=model_id, seed=config.seed, fingerprint=fingerprint,
                                 where=str(directory))
        resumed = len(done)
        if resumed:
            note = " (dropped a half-written last line)" if results_file.dropped_partial else ""
            print(f"resuming {directory}: {resumed} target(s) already done, {len(todo)} to compute{note}",
                  file=sys.stderr)

        def keep(result: Any) -> None:
            row = result if isinstance(result, dict) else result.to_dict()
            row["config_fingerprint"] = fingerprint
            results_file.append(row)
            done[row["target"]] = row

        acr_started = time.perf_counter()
        if todo and pool is None:
            searcher.search().run(todo, progress=not args.no_progress, on_result=keep)
        elif pool is not None:
            _search_on_ray(pool, todo, keep, progress=not args.no_progress)
        acr_s = time.perf_counter() - acr_started
    finally:
        if pool is not None:
            pool.close()
    rows = ordered_rows(done, targets)
    extra = after(runner, rows) if after is not None else None

    stats = summarize_results(rows, seed=config.seed)
    counts = {"total": stats["total"], "found": stats["found"], "not_found": stats["not_found"],
              "memorized": stats["memorized"], "resumed": resumed, "computed": len(todo),
              "targets_in_file": len(targets), "duplicates": len(targets) - len(dict.fromkeys(targets))}
    describe = info["describe"]
    summary = {
        **stats,
        "resumed": resumed,
        "computed": len(todo),
        "counts": counts,
        "model": spec,
        "model_id": model_id,
        "targets": {"path": str(args.targets), "sha256": file_sha256(args.targets),
                    "target_field": args.target_field, "n_targets": len(targets),
                    "max_targets": args.max_targets},
        "seed": config.seed,
        "config": config.to_dict(),
        "resolved": resolved,
        "screen_measurement": info["screen"][1],  # "auto": candidates/s and fidelity of each screen, cached or not
        "linear_kernel_measurement": info["linear_kernels"][1],  # "auto": GFLOP/s of each kernel per weight shape
        "config_fingerprint": fingerprint,
        "runner": describe,
        "versions": _versions(),
        "created_at": created,
        "timings": {"load_s": round(load_s, 3), "acr_s": round(acr_s, 3),
                    "total_s": round(time.perf_counter() - started, 3)},
        "files": {"results": RESULTS_FILE, "report": None if args.no_report else REPORT_FILE},
    }
    write_summary(directory, summary)
    if not args.no_report:
        from evalkit.reports.acr_html import write_acr_report

        write_acr_report(directory / REPORT_FILE, summary, rows)
    return {"summary": summary, "rows": rows, "runner": runner, "after": extra}


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _ci(pair: Any) -> str:
    return f"[{_fmt(pair[0])}, {_fmt(pair[1])}]" if pair else "-"


def _clip(text: str, width: int = 40) -> str:
    """Untrusted text for one terminal cell: control characters escaped, clipped to ``width``."""
    safe = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)
    return safe if len(safe) <= width else safe[: width - 1] + "…"


# ---------------------------------------------------------------------------------------------- commands


def _acr_cell(row: dict[str, Any], suffix: str = "") -> str:
    """A found ACR is a lower bound on the true ACR ("≥ 2.17"); without a found prompt there is none."""
    value = row.get(f"acr{suffix}")
    return "-" if value is None else f"≥{value:.2f}"


def _result_cell(row: dict[str, Any]) -> str:
    if row.get("success"):
        return "found" + ("" if row.get("retokenizes") else " (prompt text does not re-tokenize)")
    return f"no prompt found within the budget: {acr_budget_text(row.get('budget'))}"


def run_acr(args: argparse.Namespace) -> int:
    """``evalkit acr run``."""
    _check_spec(args.model)  # before any heavy import: a bedrock:/API spec fails in milliseconds
    args.ray_settings = ray_settings(args)
    from acr.analysis import summary_line

    config = _config(args)
    targets = _load_targets(args)
    directory = Path(args.output_dir)
    out = _acr_for_model(args.model, args, targets, config, directory)
    s = out["summary"]
    rows = [[_clip(r["target"]), _fmt(r["target_tokens"]), _fmt(r["prompt_tokens"]) if r["success"] else "-",
             _acr_cell(r), _fmt(r["memorized"]), _result_cell(r)] for r in out["rows"]]
    print(text_table(["target", "|y|", "|x|", "ACR (found)", "memorized", "result"], rows, rule=True))
    print(f"\n{summary_line(s)}; memorized and re-tokenizing {s['memorized_retokenizes']}; "
          f"resumed {s['resumed']}, computed {s['computed']}")
    print("A found ACR is a lower bound on the true ACR; no prompt found within the budget proves nothing.")
    files = "results.jsonl, summary.json" + ("" if args.no_report else ", report.html")
    print(f"wrote {directory}/ ({files})")
    return 0


def compare_acr(args: argparse.Namespace) -> int:
    """``evalkit acr compare``."""
    if len(args.model) != 2:
        raise UsageError(f"acr compare needs exactly two --model options (A then B), got {len(args.model)}")
    for spec in args.model:
        _check_spec(spec)
    config = _config(args)
    targets = _load_targets(args)
    directory = Path(args.output_dir or f"reports/{dt.datetime.now():%Y%m%d-%H%M%S}-acr-compare")

    from acr import completion_test

    def completions(runner: Any, rows: list[dict[str, Any]]) -> dict[str, dict[str, Any] | None]:
        out: dict[str, dict[str, Any] | None] = {}
        for row in rows:
            if row["target_tokens"] < 2:
                out[row["target"]] = None  # nothing to complete
                continue
            test = completion_test(runner.model, runner.tokenizer, row["target"])
            out[row["target"]] = {k: test[k] for k in ("memorized", "match_fraction", "prefix_tokens",
                                                      "suffix_tokens", "generated_text")}
        return out

    runs = {}
    for label, spec in zip(("a", "b"), args.model, strict=True):
        runs[label] = _acr_for_model(spec, args, targets, config, directory / f"model_{label}", after=completions)
        runs[label]["runner"] = None  # free the model before the next one loads

    from evalkit.atomic import atomic_write_json, atomic_write_jsonl
    from evalkit.statistics.summary import MEAN_CI_METHOD, mcnemar_exact, mean_ci

    by = {label: {r["target"]: r for r in run["rows"]} for label, run in runs.items()}
    records = []
    for index, target in enumerate(dict.fromkeys(targets)):
        a, b = by["a"][target], by["b"][target]
        ca, cb = runs["a"]["after"][target], runs["b"]["after"][target]
        both = a["success"] and b["success"] and a["acr"] is not None and b["acr"] is not None
        records.append({
            "index": index, "target": target, "target_tokens": a["target_tokens"],
            "acr_a": a["acr"], "acr_b": b["acr"], "acr_diff": b["acr"] - a["acr"] if both else None,
            "prompt_tokens_a": a["prompt_tokens"], "prompt_tokens_b": b["prompt_tokens"],
            "prompt_text_a": a["prompt_text"], "prompt_text_b": b["prompt_text"],
            "memorized_a": a["memorized"], "memorized_b": b["memorized"],
            "found_a": a["success"], "found_b": b["success"],
            "censored_a": a["censored"], "censored_b": b["censored"],
            "completion_memorized_a": None if ca is None else ca["memorized"],
            "completion_memorized_b": None if cb is None else cb["memorized"],
            "completion_match_a": None if ca is None else ca["match_fraction"],
            "completion_match_b": None if cb is None else cb["match_fraction"],
            "completion_a": ca, "completion_b": cb,
        })
    diffs = [r["acr_diff"] for r in records if r["acr_diff"] is not None]

    def count(key: str) -> int:
        return sum(1 for r in records if r[key])

    def table(key: str) -> dict[str, int]:
        """Paired yes/no outcomes of A and B: both, only A, only B, neither."""
        a, b = f"{key}_a", f"{key}_b"
        return {"both": sum(1 for r in records if r[a] and r[b]),
                "only_a": sum(1 for r in records if r[a] and not r[b]),
                "only_b": sum(1 for r in records if r[b] and not r[a]),
                "neither": sum(1 for r in records if not r[a] and not r[b])}

    memorized, completion = table("memorized"), table("completion_memorized")
    sa, sb = runs["a"]["summary"], runs["b"]["summary"]
    summary = {
        "model_a": args.model[0], "model_b": args.model[1],
        "model_id_a": sa["model_id"], "model_id_b": sb["model_id"],
        "targets": sa["targets"], "seed": config.seed, "config": config.to_dict(),
        "config_fingerprint_a": sa["config_fingerprint"], "config_fingerprint_b": sb["config_fingerprint"],
        "n": len(records),
        "memorized_a": count("memorized_a"), "memorized_b": count("memorized_b"),
        "memorized_table": memorized,
        "memorized_mcnemar_p": mcnemar_exact(memorized["only_a"], memorized["only_b"]),
        "completion_memorized_a": count("completion_memorized_a"),
        "completion_memorized_b": count("completion_memorized_b"),
        "completion_table": completion,
        "completion_mcnemar_p": mcnemar_exact(completion["only_a"], completion["only_b"]),
        "portion_memorized_a": sa["portion_memorized"], "portion_memorized_a_ci95": sa["portion_memorized_ci95"],
        "portion_memorized_b": sb["portion_memorized"], "portion_memorized_b_ci95": sb["portion_memorized_ci95"],
        "found_a": sa["found"], "found_b": sb["found"],
        "mean_acr_a": sa["mean_acr"], "mean_acr_a_ci95": sa["mean_acr_ci95"],
        "mean_acr_b": sb["mean_acr"], "mean_acr_b_ci95": sb["mean_acr_ci95"],
        "both_found": len(diffs),
        "mean_acr_diff": sum(diffs) / len(diffs) if diffs else None,
        "mean_acr_diff_ci95": list(ci) if (ci := mean_ci(diffs)) else None,
        "mean_acr_diff_ci_method": MEAN_CI_METHOD,
        "note": ("memorized: exact McNemar test on the targets where A and B disagree; acr_diff = acr_b - acr_a, "
                 "only where both models have a found prompt (each found ACR is a lower bound on the true ACR)"),
        "runs": {"a": str(directory / "model_a"), "b": str(directory / "model_b")},
        "versions": sa["versions"], "created_at": _now(),
    }
    atomic_write_jsonl(directory / COMPARE_FILE, records)
    atomic_write_json(directory / COMPARE_SUMMARY_FILE, summary)
    if not args.no_report:
        from evalkit.reports.acr_html import write_acr_compare_report

        write_acr_compare_report(directory / "report.html", summary, records,
                                 {label: (run["summary"], run["rows"]) for label, run in runs.items()})

    rows = [[_clip(r["target"], 36), _acr_cell(r, "_a"), _acr_cell(r, "_b"), _fmt(r["acr_diff"]),
             f"{_fmt(r['memorized_a'])}/{_fmt(r['memorized_b'])}",
             f"{_fmt(r['completion_memorized_a'])}/{_fmt(r['completion_memorized_b'])}"] for r in records]
    print(text_table(["target", "ACR A", "ACR B", "B-A", "memorized A/B", "completion A/B"], rows, rule=True))
    print(f"\nA = {_clip(args.model[0], 80)}\nB = {_clip(args.model[1], 80)}")
    print(text_table(["memorized", "B yes", "B no"],
                     [["A yes", str(memorized["both"]), str(memorized["only_a"])],
                      ["A no", str(memorized["only_b"]), str(memorized["neither"])]], right={1, 2}))
    print(f"memorized A {summary['memorized_a']}, B {summary['memorized_b']} of {len(records)}: exact McNemar "
          f"p={summary['memorized_mcnemar_p']:.4f}; completion test A {summary['completion_memorized_a']}, "
          f"B {summary['completion_memorized_b']} (McNemar p={summary['completion_mcnemar_p']:.4f})")
    if diffs:
        print(f"found ACR B-A on the {len(diffs)} target(s) where both found a prompt: mean "
              f"{_fmt(summary['mean_acr_diff'])} {_ci(summary['mean_acr_diff_ci95'])}")
    else:
        print("found ACR B-A: no target where both models have a found prompt")
    print(f"wrote {directory}/ ({COMPARE_FILE}, {COMPARE_SUMMARY_FILE}, model_a/, model_b/)")
    return 0
