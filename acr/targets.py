"""Where targets come from: files of strings, or random token strings as a never-seen baseline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from evalkit.errors import InputError, UsageError
from evalkit.jsonl import split_lines

FORMATS = (".txt", ".json", ".jsonl")


def _read_text(path: Path) -> str:
    """The file as UTF-8 text; binary or undecodable files are input errors, not garbled targets."""
    if not path.is_file():
        raise InputError("file not found", path=str(path))
    data = path.read_bytes()
    if b"\x00" in data:
        raise InputError("not a text file (contains NUL bytes)", path=str(path))
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise InputError(f"not UTF-8 text ({error.reason} at byte {error.start})", path=str(path),
                         line=line) from error


def _check_target(value: Any, *, path: str, line: int | None, field: str | None) -> str:
    if not isinstance(value, str):
        raise InputError(f"target must be a string, got {type(value).__name__}", path=path, line=line, field=field)
    if not value.strip():
        raise InputError("empty target", path=path, line=line, field=field)
    return value


def load_targets(path: str | Path, target_field: str = "text") -> list[str]:
    """Targets from ``.txt`` (one per line, blank lines skipped), ``.json`` (a list of strings, whitespace
    kept exactly) or ``.jsonl`` (one object per line, the string in ``target_field``).

    A target's exact characters matter (they decide its tokens), so nothing is stripped except the line
    break of a ``.txt``/``.jsonl`` line. Errors are :class:`evalkit.errors.InputError` naming the file,
    the 1-based line (or, for ``.json``, the list index as the field) and the field.
    """
    path = Path(path)
    name = str(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise InputError(f"unknown target file type '{suffix or '(none)'}'; use one of {', '.join(FORMATS)}",
                         path=name)
    text = _read_text(path)
    targets: list[str] = []
    if suffix == ".txt":
        targets = [line for _, line in split_lines(text) if line.strip()]
    elif suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise InputError(f"invalid JSON: {error.msg}", path=name, line=error.lineno) from error
        if not isinstance(data, list):
            raise InputError(f"a .json target file must hold a list of strings, not a {type(data).__name__}",
                             path=name)
        targets = [_check_target(v, path=name, line=None, field=f"[{i}]") for i, v in enumerate(data)]
    else:
        for number, line in split_lines(text):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise InputError(f"invalid JSON: {error.msg}", path=name, line=number) from error
            if not isinstance(record, dict):
                raise InputError(f"expected a JSON object, got {type(record).__name__}", path=name, line=number)
            if target_field not in record:
                raise InputError("missing target field", path=name, line=number, field=target_field)
            targets.append(_check_target(record[target_field], path=name, line=number, field=target_field))
    if not targets:
        raise InputError("no targets in file", path=name)
    return targets


def random_token_strings(tokenizer: Any, n: int, length: int, seed: int = 0) -> list[str]:
    """``n`` distinct strings of ``length`` random non-special tokens each: targets no model has memorized.

    Random ids are decoded to text; a string is kept only when it re-encodes stably -- encoding it gives
    exactly ``length`` tokens that decode back to the same text -- so its |y| is what was asked for and
    is the same however it is later tokenized. Seeded: same tokenizer, arguments and seed, same strings.
    """
    if n < 0 or length < 1:
        raise UsageError(f"need n >= 0 and length >= 1, got n={n}, length={length}")
    special = set(tokenizer.all_special_ids)
    pool = torch.tensor([i for i in range(len(tokenizer)) if i not in special], dtype=torch.long)
    if pool.numel() == 0:
        raise UsageError("the tokenizer has no non-special tokens")
    generator = torch.Generator().manual_seed(seed)
    out: list[str] = []
    seen: set[str] = set()
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 200 * max(1, n):
            raise UsageError(f"could not draw {n} stable random strings of {length} tokens "
                             f"(found {len(out)} in {attempts - 1} tries)")
        ids = pool[torch.randint(0, pool.numel(), (length,), generator=generator)].tolist()
        text = tokenizer.decode(ids)
        again = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(again) == length and tokenizer.decode(again) == text and text.strip() and text not in seen:
            seen.add(text)
            out.append(text)
    return out
