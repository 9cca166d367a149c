"""``--model-config FILE.yaml``: runner options in a file, merged under the command-line flags.

    model: bedrock:anthropic.claude-3-haiku-20240307-v1:0   # used when --model is not given
    max_new_tokens: 256
    temperature: 0.0
    system_prompt: You are a careful summarizer.
    concurrency: 8
    max_rps: 5
    timeout_s: 60
    max_attempts: 8
    # backend-specific (see the README section of each backend)
    content_template: '{"inputs": $prompt, "parameters": {"max_new_tokens": 256}}'
    output_path: "[0].generated_text"

Keys are the fields of :class:`~evalkit.runners.base.RunnerOptions` and the backend keys below; anything else
is refused with the file, line and key. A flag given on the command line wins over the file.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from evalkit.errors import InputError, UsageError
from evalkit.runners.base import RunnerOptions

# backend settings each runner prefix takes (checked before anything runs)
RUNNER_BACKEND_KEYS: dict[str, tuple[str, ...]] = {
    "hf": (),
    "bedrock": ("additional_model_request_fields",),
    "bedrock-invoke": ("content_template", "output_path", "family", "anthropic_api"),
    "sagemaker": ("content_template", "output_path", "content_type", "accept", "target_variant",
                  "inference_component", "custom_attributes"),
}
BACKEND_KEYS = tuple(dict.fromkeys(k for keys in RUNNER_BACKEND_KEYS.values() for k in keys))


def check_backend_keys(prefix: str, backend: dict[str, Any]) -> None:
    """Backend settings the runner ``prefix`` does not take are a usage error naming them."""
    known = RUNNER_BACKEND_KEYS.get(prefix)
    unknown = sorted(set(backend) - set(known)) if known is not None else []
    if unknown:
        raise UsageError(f"{prefix}: unknown model-config key(s) {', '.join(unknown)}; known for {prefix}: "
                         f"{', '.join(known) or 'none'}")
_NOT_IN_FILES = ("backend", "progress", "seed")
OPTION_KEYS = tuple(f.name for f in fields(RunnerOptions) if f.name not in _NOT_IN_FILES)
_INTS = {"batch_size", "max_new_tokens", "concurrency", "max_attempts"}
_FLOATS = {"temperature", "top_p", "max_rps", "timeout_s", "retry_base_delay_s", "retry_max_delay_s"}
_BOOLS = {"use_chat_template", "fail_fast", "truncate"}
_STRINGS = {"device", "dtype", "system_prompt"}


def _key_lines(text: str) -> dict[str, int]:
    """Top-level key -> 1-based line, from the YAML node tree."""
    import yaml

    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return {}
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {str(k.value): k.start_mark.line + 1 for k, _ in node.value}


def convert_option(key: str, value: Any, path: str, line: int | None) -> Any:
    def bad(expected: str) -> InputError:
        return InputError(f"expected {expected}, got {value!r}", path=path, line=line, field=key)

    if value is None:
        return None
    if key in _INTS:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise bad("a positive integer")
        return value
    if key in _FLOATS:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise bad("a number >= 0")
        return float(value)
    if key in _BOOLS:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if key in _STRINGS:
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if key == "stop_sequences":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise bad("a list of non-empty strings")
        return tuple(value)
    return value


def load_model_config(path: str | Path) -> tuple[str | None, dict[str, Any]]:
    """``(model spec or None, RunnerOptions field values incl. backend)`` from a YAML file."""
    import yaml

    path = Path(path)
    name = str(path)
    if not path.is_file():
        raise InputError("model config file not found", path=name)
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        raise InputError(f"malformed YAML: {getattr(error, 'problem', error)}", path=name,
                         line=mark.line + 1 if mark else None) from None
    if data is None:
        return None, {}
    if not isinstance(data, dict):
        raise InputError(f"expected a mapping of options, got {type(data).__name__}", path=name, line=1)
    lines = _key_lines(text)
    model: str | None = None
    values: dict[str, Any] = {}
    backend: dict[str, Any] = {}
    for key, value in data.items():
        key = str(key)
        line = lines.get(key)
        if key == "model":
            if not isinstance(value, str) or not value.strip():
                raise InputError("expected a model spec such as bedrock:<model id>", path=name, line=line, field=key)
            model = value.strip()
        elif key in OPTION_KEYS:
            values[key] = convert_option(key, value, name, line)
        elif key in BACKEND_KEYS:
            backend[key] = value
        else:
            raise InputError(f"unknown key; known: model, {', '.join(OPTION_KEYS)}, {', '.join(BACKEND_KEYS)}",
                             path=name, line=line, field=key)
    if backend:
        values["backend"] = backend
    return model, {k: v for k, v in values.items() if v is not None}


def build_runner_options(model_config: str | Path | None = None, **overrides: Any) -> tuple[str | None, RunnerOptions]:
    """``RunnerOptions`` from the defaults, then ``model_config``, then ``overrides`` (None values are "not
    given"); also the model spec the file names, if any."""
    model, values = load_model_config(model_config) if model_config else (None, {})
    values.update({k: v for k, v in overrides.items() if v is not None})
    if "stop_sequences" in values:
        values["stop_sequences"] = tuple(values["stop_sequences"])
    return model, RunnerOptions(**values)
