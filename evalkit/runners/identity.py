"""Fingerprints of local model files: what makes "the same model" mean the same weights.

A local model's identity includes the sha256 of every file that can change its output -- weights,
config, generation config, tokenizer files and the chat template that lives in them. The model
directory is walked (hidden files and docs such as README or LICENSE skipped), each file hashed in
1 MiB blocks, and the names and digests hashed together.

Hashing costs one read of the checkpoint: sha256 runs at about 1.2 GB/s on this project's CPU (SHA
extensions), so a 7B model in bfloat16 (about 14.5 GB) costs some 12 s when its files are in the page
cache, and disk speed when they are not. Each file's digest is therefore memoized by (real path, size,
modification time, inode) in ``$EVALKIT_CACHE_DIR`` (default ``~/.cache/evalkit``), so only the first run
after a file changes pays for it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

from evalkit.cachedir import cache_dir
from evalkit.hashing import fingerprint

MEMO_FILE = "file-sha256.json"
_SKIPPED_NAMES = ("readme", "license", "licence", "notice", "citation")


def model_files(path: str | Path, single_file: str | None = None) -> list[Path]:
    """The files that decide a local model's output: ``single_file`` in ``path`` (a .gguf), or every file
    under the directory ``path`` but hidden ones and docs."""
    root = Path(path)
    if single_file:
        return [root / single_file]
    files = []
    for file in sorted(root.rglob("*")):
        relative = file.relative_to(root)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if file.name.lower().startswith(_SKIPPED_NAMES) or not file.is_file():
            continue
        files.append(file)
    return files


def file_sha256(path: Path, memo: dict[str, dict] | None = None) -> str:
    real = os.path.realpath(path)
    stat = os.stat(real)
    key = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "ino": stat.st_ino}
    if memo is not None and memo.get(real, {}).get("key") == key:
        return memo[real]["sha256"]
    digest = hashlib.sha256()
    with open(real, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    value = digest.hexdigest()
    if memo is not None:
        memo[real] = {"key": key, "sha256": value}
    return value


def files_fingerprint(files: Iterable[Path], root: str | Path) -> dict[str, object]:
    """``{"sha256": ..., "files": n, "bytes": total}`` over the files' names (relative to ``root``) and contents."""
    memo_path = cache_dir() / MEMO_FILE
    memo = _read_memo(memo_path)
    before = dict(memo)
    entries, total = [], 0
    for file in files:
        entries.append([str(Path(file).relative_to(root)) if Path(file).is_relative_to(root) else Path(file).name,
                        file_sha256(Path(file), memo)])
        total += os.path.getsize(file)
    if memo != before:
        _write_memo(memo_path, memo)
    return {"sha256": fingerprint(entries), "files": len(entries), "bytes": total}


def _read_memo(path: Path) -> dict[str, dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_memo(path: Path, memo: dict[str, dict]) -> None:
    from evalkit.atomic import atomic_write_json

    with contextlib.suppress(OSError):  # a read-only home only costs the next run a re-hash
        atomic_write_json(path, memo)
