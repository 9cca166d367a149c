"""The ``evalkit compare --config FILE.yaml`` file: what to compare, on what, and what must hold.

    task: qa                      # or summarization
    dataset: {path: questions.jsonl, input_field: question, target_field: answer, target_delimiter: "<OR>",
              gold_field: gold, human_score_field: rating}
    systems:
      - {name: baseline, model: hf:smollm2}
      - {name: finetuned, model: hf:path/to/checkpoint}      # any runner spec; a PEFT adapter directory too
      - {name: rag, model: hf:smollm2, retriever: {documents: kb/, top_k: 3, chunk_size: 400, chunk_overlap: 50,
                                                   embedding_model: minilm}}
      - {name: vendor, outputs: vendor_outputs.jsonl, output_field: output}   # precomputed, matched by id
    metrics: [semantic_similarity, bertscore, rougeL, meteor, refusal, judge]
    judge: {model: hf:smollm2}
    require: ["finetuned > baseline on semantic_similarity", "finetuned >= rag on semantic_similarity"]
    output_dir: reports/compare-domain-qa

Relative paths (dataset, documents, outputs, model_config, output_dir, and ``hf:`` model directories) are
relative to the config file's directory. Every key is checked before anything loads: an unknown key, a value
of the wrong type, a missing file or directory, an empty question set or precomputed outputs that do not match
the questions are an InputError naming the file, line and key (exit 2).

Optional keys: ``seed``, ``max_samples``, ``alpha`` (0.05), ``on_error`` (fail | zero | skip, as in the gate),
``generation`` (defaults for every model system: max_new_tokens, batch_size, device, dtype, temperature, ...; a
system's own keys win), ``embedding_model`` (semantic_similarity and refusal), ``bertscore`` (model,
num_layers, idf, rescale_with_baseline, baseline_path). A system may also set ``prompt_template``,
``model_config`` and any generation key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalkit.data.dataset import DatasetSpec
from evalkit.errors import InputError
from evalkit.rag.retriever import RetrieverSpec
from evalkit.yamlfile import Key, key_text, load_yaml_with_lines

GENERATION_KEYS = ("max_new_tokens", "batch_size", "device", "dtype", "use_chat_template", "temperature", "top_p",
                   "system_prompt", "stop_sequences", "concurrency", "max_rps", "timeout_s", "max_attempts",
                   "truncate")
TOP_KEYS = ("task", "dataset", "systems", "metrics", "judge", "require", "output_dir", "seed", "max_samples",
            "alpha", "on_error", "generation", "embedding_model", "bertscore")
DATASET_KEYS = ("path", "input_field", "target_field", "target_delimiter", "id_field", "gold_field",
                "human_score_field", "split")
SYSTEM_KEYS = ("name", "model", "outputs", "output_field", "id_field", "retriever", "prompt_template",
               "model_config", *GENERATION_KEYS)
RETRIEVER_KEYS = ("documents", "top_k", "chunk_size", "chunk_overlap", "embedding_model", "prompt_template")
JUDGE_KEYS = ("model", "max_new_tokens", "prompt_template", "model_config", "concurrency")
BERTSCORE_KEYS = ("model", "num_layers", "idf", "rescale_with_baseline", "baseline_path")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


@dataclass
class SystemSpec:
    name: str
    model: str | None = None
    outputs: str | None = None  # precomputed outputs file
    output_field: str = "output"
    id_field: str = "id"
    retriever: RetrieverSpec | None = None
    prompt_template: str | None = None
    model_config: str | None = None
    generation: dict[str, Any] = field(default_factory=dict)
    line: int | None = None  # where the system is defined in the config file

    @property
    def kind(self) -> str:
        return "precomputed" if self.outputs else ("rag" if self.retriever else "model")


@dataclass
class CompareConfig:
    path: str
    task: str
    dataset: DatasetSpec
    systems: list[SystemSpec]
    metrics: list[str]  # as written: metric families and/or score columns
    judge: dict[str, Any] | None = None
    require: list[str] = field(default_factory=list)
    output_dir: str | None = None
    seed: int = 0
    max_samples: int | None = None
    alpha: float = 0.05
    on_error: str = "fail"
    generation: dict[str, Any] = field(default_factory=dict)
    embedding_model: str | None = None
    bertscore: dict[str, Any] = field(default_factory=dict)
    lines: dict[Key, int] = field(default_factory=dict, repr=False)

    def line_of(self, *key: Any) -> int | None:
        return self.lines.get(tuple(key))

    def error(self, message: str, *key: Any) -> InputError:
        """An InputError at ``key`` of this config file."""
        return InputError(message, path=self.path, line=self.line_of(*key), field=key_text(tuple(key)) or None)


class _Reader:
    def __init__(self, path: Path, lines: dict[Key, int]):
        self.file, self.lines, self.base = path, lines, path.resolve().parent

    def fail(self, key: Key, message: str) -> InputError:
        line = self.lines.get(key)
        while line is None and key:
            key = key[:-1]
            line = self.lines.get(key)
        return InputError(message, path=str(self.file), line=line, field=key_text(key) or None)

    def mapping(self, value: Any, key: Key, known: tuple[str, ...], what: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a mapping for {what}, got {type(value).__name__}")
        for k in value:
            if str(k) not in known:
                raise self.fail((*key, str(k)), f"unknown key '{k}' in {what}; known: {', '.join(known)}")
        return {str(k): v for k, v in value.items()}

    def text(self, value: Any, key: Key, *, optional: bool = False) -> str | None:
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, f"expected a non-empty string, got {value!r}")
        return value

    def integer(self, value: Any, key: Key, *, minimum: int = 0) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(key, f"expected an integer >= {minimum}, got {value!r}")
        return value

    def number(self, value: Any, key: Key) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(key, f"expected a number, got {value!r}")
        return float(value)

    def path(self, value: Any, key: Key) -> str:
        text = self.text(value, key)
        candidate = Path(text).expanduser()
        return str(candidate if candidate.is_absolute() else self.base / candidate)

    def existing(self, value: Any, key: Key, *, directory: bool = False) -> str:
        resolved = self.path(value, key)
        ok = Path(resolved).is_dir() if directory else Path(resolved).is_file()
        if not ok:
            what = "directory" if directory else "file"
            raise self.fail(key, f"{what} not found: {resolved}")
        return resolved

    def model_spec(self, value: Any, key: Key) -> str:
        """A runner spec; ``hf:`` with a directory relative to the config file becomes that directory."""
        spec = self.text(value, key).strip()
        prefix, sep, target = spec.partition(":")
        if sep and prefix == "hf" and not Path(target).is_absolute() and (self.base / target).is_dir():
            return f"hf:{self.base / target}"
        return spec

    def generation(self, values: dict[str, Any], key: Key) -> dict[str, Any]:
        from evalkit.runners.config import convert_option

        out = {}
        for k in GENERATION_KEYS:
            if k in values and values[k] is not None:
                out[k] = convert_option(k, values[k], str(self.file), self.lines.get((*key, k)))
        return out


def load_compare_config(path: str | Path) -> CompareConfig:
    """Read and check the file's structure and values (files and directories it names must exist)."""
    from evalkit.statistics.paired import ON_ERROR_POLICIES
    from evalkit.tasks import TASKS

    path = Path(path)
    data, lines = load_yaml_with_lines(path)
    r = _Reader(path, lines)
    if data is None:
        raise r.fail((), "the config file is empty; it needs task, dataset, systems and metrics")
    top = r.mapping(data, (), TOP_KEYS, "the compare config")
    for required in ("dataset", "systems"):
        if required not in top:
            raise r.fail((), f"missing key '{required}'")
    task = r.text(top.get("task", "qa"), ("task",))
    if task not in TASKS.names():
        raise r.fail(("task",), f"unknown task '{task}'; known: {', '.join(TASKS.names())}")
    task_def = TASKS.get(task)

    ds = r.mapping(top["dataset"], ("dataset",), DATASET_KEYS, "dataset")
    if "path" not in ds:
        raise r.fail(("dataset",), "missing key 'path' (the question set)")
    dataset_path = r.path(ds["path"], ("dataset", "path"))
    if not Path(dataset_path).exists():
        raise r.fail(("dataset", "path"), f"dataset not found: {dataset_path}")
    fields = {k: r.text(ds.get(k), ("dataset", k), optional=True) for k in DATASET_KEYS if k != "path"}
    dataset = DatasetSpec(path=dataset_path, input_field=fields["input_field"] or task_def.input_field,
                          target_field=fields["target_field"] or task_def.target_field,
                          id_field=fields["id_field"] or "id", target_delimiter=fields["target_delimiter"],
                          split=fields["split"], gold_field=fields["gold_field"],
                          human_score_field=fields["human_score_field"])

    generation = r.generation(r.mapping(top.get("generation") or {}, ("generation",), GENERATION_KEYS,
                                        "generation"), ("generation",))
    systems_raw = top["systems"]
    if not isinstance(systems_raw, list) or not systems_raw:
        raise r.fail(("systems",), "expected a non-empty list of systems")
    systems: list[SystemSpec] = []
    for i, raw in enumerate(systems_raw):
        systems.append(_system(r, raw, ("systems", i)))
    seen: dict[str, int] = {}
    for i, system in enumerate(systems):
        if system.name in seen:
            raise r.fail(("systems", i, "name"),
                         f"duplicate system name '{system.name}' (also systems[{seen[system.name]}])")
        seen[system.name] = i

    metrics_raw = top.get("metrics", list(task_def.metrics))
    if not isinstance(metrics_raw, list) or not metrics_raw:
        raise r.fail(("metrics",), "expected a non-empty list of metric names")
    metrics = [r.text(m, ("metrics", i)).strip() for i, m in enumerate(metrics_raw)]

    judge = None
    if top.get("judge") is not None:
        judge = r.mapping(top["judge"], ("judge",), JUDGE_KEYS, "judge")
        if "model" in judge:
            judge["model"] = r.model_spec(judge["model"], ("judge", "model"))
        if "model_config" in judge:
            judge["model_config"] = r.existing(judge["model_config"], ("judge", "model_config"))
        if "max_new_tokens" in judge:
            judge["max_new_tokens"] = r.integer(judge["max_new_tokens"], ("judge", "max_new_tokens"), minimum=1)
        if "concurrency" in judge:
            judge["concurrency"] = r.integer(judge["concurrency"], ("judge", "concurrency"), minimum=1)
        if "prompt_template" in judge:
            r.text(judge["prompt_template"], ("judge", "prompt_template"))
    require_raw = top.get("require") or []
    if not isinstance(require_raw, list):
        raise r.fail(("require",), "expected a list of rules such as 'finetuned > baseline on semantic_similarity'")
    require = [r.text(rule, ("require", i)) for i, rule in enumerate(require_raw)]
    on_error = r.text(top.get("on_error", "fail"), ("on_error",))
    if on_error not in ON_ERROR_POLICIES:
        raise r.fail(("on_error",), f"expected one of {', '.join(ON_ERROR_POLICIES)}, got {on_error!r}")
    alpha = r.number(top.get("alpha", 0.05), ("alpha",))
    if not 0 < alpha <= 0.5:
        raise r.fail(("alpha",), f"expected a significance level in (0, 0.5], got {alpha}")
    bertscore = r.mapping(top.get("bertscore") or {}, ("bertscore",), BERTSCORE_KEYS, "bertscore")
    max_samples = top.get("max_samples")
    return CompareConfig(
        path=str(path), task=task, dataset=dataset, systems=systems, metrics=metrics, judge=judge,
        require=require,
        output_dir=r.path(top["output_dir"], ("output_dir",)) if top.get("output_dir") is not None else None,
        seed=r.integer(top.get("seed", 0), ("seed",)),
        max_samples=None if max_samples is None else r.integer(max_samples, ("max_samples",), minimum=1),
        alpha=alpha, on_error=on_error, generation=generation,
        embedding_model=r.text(top.get("embedding_model"), ("embedding_model",), optional=True),
        bertscore=bertscore, lines=lines)


def _system(r: _Reader, raw: Any, key: Key) -> SystemSpec:
    values = r.mapping(raw, key, SYSTEM_KEYS, f"system {key_text(key)}")
    if "name" not in values:
        raise r.fail(key, "missing key 'name'")
    name = r.text(values["name"], (*key, "name")).strip()
    if not _NAME.match(name):
        raise r.fail((*key, "name"), f"system name {name!r}: use letters, digits, '_', '.' and '-' (it names a "
                                     "directory)")
    has_model, has_outputs = values.get("model") is not None, values.get("outputs") is not None
    if has_model == has_outputs:
        raise r.fail(key, f"system '{name}' needs exactly one of 'model' (a runner spec) or 'outputs' (a file of "
                          "precomputed outputs)")
    system = SystemSpec(name=name, line=r.lines.get(key))
    if has_model:
        system.model = r.model_spec(values["model"], (*key, "model"))
        system.generation = r.generation(values, key)
        if values.get("model_config") is not None:
            system.model_config = r.existing(values["model_config"], (*key, "model_config"))
        if values.get("prompt_template") is not None:
            system.prompt_template = r.text(values["prompt_template"], (*key, "prompt_template"))
    else:
        for k in ("retriever", "prompt_template", "model_config", *GENERATION_KEYS):
            if values.get(k) is not None:
                raise r.fail((*key, k), f"'{k}' applies to model systems; '{name}' has precomputed outputs")
        system.outputs = r.existing(values["outputs"], (*key, "outputs"))
        system.output_field = r.text(values.get("output_field", "output"), (*key, "output_field"))
        system.id_field = r.text(values.get("id_field", "id"), (*key, "id_field"))
    if values.get("retriever") is not None:
        rk = (*key, "retriever")
        spec = r.mapping(values["retriever"], rk, RETRIEVER_KEYS, "retriever")
        if "documents" not in spec:
            raise r.fail(rk, "missing key 'documents' (the knowledge-base directory)")
        embedding = r.text(spec.get("embedding_model"), (*rk, "embedding_model"), optional=True)
        if embedding is not None and embedding.strip().lower() not in ("minilm", "all-minilm-l6-v2") and \
                (r.base / embedding).is_dir():
            embedding = str(r.base / embedding)
        system.retriever = RetrieverSpec(
            documents=r.existing(spec["documents"], (*rk, "documents"), directory=True),
            top_k=r.integer(spec.get("top_k", 3), (*rk, "top_k"), minimum=1),
            chunk_size=r.integer(spec.get("chunk_size", 400), (*rk, "chunk_size"), minimum=50),
            chunk_overlap=r.integer(spec.get("chunk_overlap", 50), (*rk, "chunk_overlap")),
            embedding_model=embedding,
            prompt_template=r.text(spec.get("prompt_template"), (*rk, "prompt_template"), optional=True))
    return system
