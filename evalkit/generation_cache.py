"""Generations saved as they finish, so an interrupted run resumes where it stopped.

``generations.jsonl`` in the output directory gets one line per generated record, appended and
flushed batch by batch. Its first line fingerprints what decides the outputs (model, generation
settings, prompt template); a later run in the same directory reuses lines whose fingerprint and
exact prompt match, and regenerates the rest.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from evalkit import jsonl
from evalkit.atomic import atomic_write_jsonl
from evalkit.jsonl import split_lines

CACHE_FILE = "generations.jsonl"


def fingerprint(settings: dict[str, Any]) -> str:
    """Short sha256 of settings (canonical JSON): the key of a cache, and of a run's settings."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_cache_header(output_dir: Path) -> dict[str, Any] | None:
    """The first line of ``output_dir``'s generations file (fingerprint and settings), or None."""
    path = output_dir / CACHE_FILE
    if not path.is_file():
        return None
    with open(path, encoding="utf-8", errors="replace", newline="") as fh:
        first = fh.readline()
    return _parse(first) or {}


class GenerationCache:
    def __init__(self, output_dir: Path, settings: dict[str, Any]):
        self.path = output_dir / CACHE_FILE
        self.fingerprint = fingerprint(settings)
        self._settings = settings
        self.entries: dict[str, dict[str, Any]] = self._read()
        self._rewritten = False

    def _read(self) -> dict[str, dict[str, Any]]:
        if not self.path.is_file():
            return {}
        entries: dict[str, dict[str, Any]] = {}
        lines = split_lines(self.path.read_text(encoding="utf-8", errors="replace"))
        _, first = next(lines, (0, ""))
        header = _parse(first)
        if not header or header.get("fingerprint") != self.fingerprint:
            return {}  # other model or settings: start over (the file is rewritten on first save)
        for _, line in lines:
            entry = _parse(line)  # a line cut by an interruption is ignored
            if entry and "id" in entry and "prompt" in entry:
                entries[entry["id"]] = entry
        return entries

    def lookup(self, record_id: str, prompt: str) -> dict[str, Any] | None:
        entry = self.entries.get(record_id)
        if entry and entry["prompt"] == prompt and entry.get("error") is None:
            return entry
        return None

    def save(self, entries: list[dict[str, Any]]) -> None:
        """Persist finished generations. The first save of a run rewrites the file atomically (header
        plus what was reused), which also drops a line cut short by an earlier interruption."""
        for entry in entries:
            self.entries[entry["id"]] = entry
        if not self._rewritten:
            header = {"fingerprint": self.fingerprint, "settings": self._settings}
            atomic_write_jsonl(self.path, [header, *self.entries.values()])
            self._rewritten = True
            return
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.writelines(jsonl.dumps(e) + "\n" for e in entries)
            fh.flush()
            os.fsync(fh.fileno())


def _parse(line: str) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None
