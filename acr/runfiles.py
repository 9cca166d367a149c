"""The files of an ACR run directory, and resuming an interrupted run.

``DIR/results.jsonl``
    One line per finished target: :meth:`acr.results.ACRResult.to_dict` plus ``config_fingerprint``.
    Appended, flushed and fsynced as each target finishes, so an interrupted run loses no finished target.
``DIR/summary.json``
    :func:`acr.summarize_results` (mean found ACR with a Student-t CI, portion memorized with a Wilson CI,
    counts) plus run metadata (the resolved dtype, device and screen dtype among it); written atomically.
``DIR/report.html``
    The HTML report (written by the command).

Resuming: a row is reused when its target text, model, seed and config fingerprint all match the
current run (the fingerprint covers the config and what it resolved to on this machine: model dtype,
device, screen dtype and how it ran, linear kernels); every other target is computed. An interruption can
leave a half-written last line; it is dropped (the file is rewritten atomically without it) before the run
goes on. Rows of a *different* run (other model, seed or config) are never mixed in: the directory is refused instead.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from evalkit import jsonl
from evalkit.atomic import atomic_write_json, atomic_write_jsonl
from evalkit.errors import InputError, UsageError
from evalkit.hashing import fingerprint

RESULTS_FILE = "results.jsonl"
SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.html"

# ACRConfig fields that cannot change a result: excluded from the fingerprint.
# batch_size changes no result; linear_kernel is the request, and what it resolved to is fingerprinted
# (``resolved["linear_kernels"]``, present when some layer is packed).
_NOT_FINGERPRINTED = ("batch_size", "linear_kernel")


def config_fingerprint(config: Mapping[str, Any]) -> str:
    """Short sha256 of the result-relevant config fields (canonical JSON, sorted keys)."""
    return fingerprint({k: v for k, v in config.items() if k not in _NOT_FINGERPRINTED}, length=16)


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def row_key(row: Mapping[str, Any]) -> tuple[Any, ...]:
    """What identifies one finished target: target text, model, seed, config fingerprint."""
    return (row.get("target"), row.get("model"), row.get("seed"), row.get("config_fingerprint"))


class ResultsFile:
    """``results.jsonl`` of one run directory: read (repairing a torn last line) and append durably."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.path = self.directory / RESULTS_FILE
        self.dropped_partial = False  # True when load() removed a half-written last line

    def load(self) -> list[dict[str, Any]]:
        """The rows already written. A last line cut short by an interruption is dropped and the file
        rewritten atomically without it; a bad line anywhere else is an :class:`InputError`."""
        if not self.path.exists():
            return []
        if not self.path.is_file():
            raise InputError("not a file", path=str(self.path))
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        complete, tail = lines[:-1], lines[-1]  # tail: bytes after the last newline (b"" when clean)
        rows: list[dict[str, Any]] = []
        for number, raw in enumerate(complete, start=1):
            if not raw.strip():
                continue
            row = self._parse(raw)
            if row is None:
                if number == len(complete) and not tail.strip():
                    self.dropped_partial = True  # torn write that still got its newline: treat as torn
                    continue
                raise InputError("corrupt line in an ACR results file; remove it or use a fresh --output-dir",
                                 path=str(self.path), line=number)
            rows.append(row)
        if tail.strip():
            row = self._parse(tail)
            if row is None:
                self.dropped_partial = True
            else:
                rows.append(row)  # complete JSON that lost only its newline
                self.dropped_partial = True  # rewrite to restore the newline
        if self.dropped_partial:
            atomic_write_jsonl(self.path, rows)
        return rows

    @staticmethod
    def _parse(raw: bytes) -> dict[str, Any] | None:
        try:
            row = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None
        return row if isinstance(row, dict) else None

    def append(self, row: Mapping[str, Any]) -> None:
        """Append one row and make it durable (flush + fsync) before returning."""
        self.directory.mkdir(parents=True, exist_ok=True)
        line = jsonl.dumps(row) + "\n"
        with open(self.path, "a", encoding="utf-8", newline="") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())


def plan_resume(rows: Sequence[Mapping[str, Any]], targets: Sequence[str], *, model: str, seed: int,
                fingerprint: str, where: str) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """``(done, todo)``: rows already finished for this run, keyed by target text, and the distinct
    targets still to compute, in file order.

    Raises :class:`UsageError` when the directory holds rows of a different run (model, seed or
    config), so two runs are never mixed in one results file.
    """
    done: dict[str, dict[str, Any]] = {}
    for row in rows:
        key = row_key(row)
        if key[1:] != (model, seed, fingerprint):
            raise UsageError(
                f"{where} holds ACR results of a different run (model {row.get('model')!r}, seed "
                f"{row.get('seed')!r}, config {row.get('config_fingerprint')!r}; this run: model {model!r}, "
                f"seed {seed!r}, config {fingerprint!r}); use another --output-dir")
        done.setdefault(str(row.get("target")), dict(row))
    todo = list(dict.fromkeys(t for t in targets if t not in done))
    return done, todo


def ordered_rows(done: Mapping[str, Mapping[str, Any]], targets: Iterable[str]) -> list[dict[str, Any]]:
    """One row per distinct target, in target-file order (rows of targets no longer listed are left out)."""
    return [dict(done[t]) for t in dict.fromkeys(targets) if t in done]


def write_summary(directory: str | os.PathLike, summary: Mapping[str, Any]) -> Path:
    path = Path(directory) / SUMMARY_FILE
    atomic_write_json(path, dict(summary))
    return path


def read_summary(directory: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(directory) / SUMMARY_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))
