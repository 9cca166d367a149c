"""YAML files read with the line of every key, so a bad value is reported as FILE:LINE (field 'a.b[2].c')."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evalkit.errors import InputError

Key = tuple[Any, ...]  # ("systems", 2, "retriever", "top_k")


def key_text(key: Key) -> str:
    """``("systems", 2, "retriever")`` -> ``systems[2].retriever``."""
    text = ""
    for part in key:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def load_yaml_with_lines(path: str | Path) -> tuple[Any, dict[Key, int]]:
    """(data, key path -> 1-based line) of a YAML file; InputError (exit 2) naming the file and line when it is
    missing or malformed."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise InputError("config file not found" if not path.exists() else "config: not a file", path=str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text (byte {exc.start})", path=str(path)) from None
    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        raise InputError(f"malformed YAML: {getattr(error, 'problem', None) or error}", path=str(path),
                         line=mark.line + 1 if mark else None) from None
    lines: dict[Key, int] = {}
    if node is not None:
        _walk(node, (), lines)
    return data, lines


def _walk(node: Any, key: Key, lines: dict[Key, int]) -> None:
    import yaml

    lines.setdefault(key, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            child = (*key, str(k.value))
            lines[child] = k.start_mark.line + 1
            _walk(v, child, lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _walk(v, (*key, i), lines)
