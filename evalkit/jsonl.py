"""JSON Lines, read and written one way everywhere (datasets, run files, caches, ACR targets and results).

Lines end at ``\\n`` only (a ``\\r`` before it, from a CRLF file, is dropped). Never ``str.splitlines()``:
it also breaks at U+2028, U+2029, U+0085, ``\\x0b``, ``\\x0c`` and ``\\x1c``-``\\x1e``, and U+2028, U+2029
and U+0085 are valid, unescaped, inside JSON strings -- splitting there cuts a record in two.

What evalkit writes escapes those three characters (``\\u2028``...; the same string once decoded), so
its files also survive readers that do split on them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

# Valid raw inside JSON strings, but line breaks to str.splitlines() and to some editors and tools.
_LINE_BREAKS_IN_STRINGS = {"\u2028": "\\u2028", "\u2029": "\\u2029", "\u0085": "\\u0085"}


def dumps(obj: Any) -> str:
    """One JSON line (no newline): UTF-8 text kept readable, NaN refused, in-string line breaks escaped."""
    text = json.dumps(obj, ensure_ascii=False, allow_nan=False)
    for raw, escaped in _LINE_BREAKS_IN_STRINGS.items():
        if raw in text:  # only ever inside string literals: JSON has no other place for them
            text = text.replace(raw, escaped)
    return text


def split_lines(text: str) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` for every line of ``text``, 1-based, split at ``\\n`` only."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for number, line in enumerate(lines, start=1):
        yield number, line[:-1] if line.endswith("\r") else line
