"""The run store: every model call's result and every score, kept the moment it returns, keyed on what really ran.

One SQLite file per output directory (``calls.sqlite``), in WAL mode with ``synchronous=FULL``: each
result is one committed transaction, so a process killed at any point (``kill -9`` included) loses at
most the calls still in flight, and a re-run finds every finished one. Why SQLite: it is in the standard
library, a single file users can open with any SQLite tool, safe for many small writes from several
threads (one connection behind a lock) and from several processes (WAL plus a busy timeout: what a Ray
run needs), and a lookup by key is an index probe, not a file scan.

A call's key is the sha256 of the runner's resolved **identity** (weights fingerprint, model id and region,
endpoint and variant ...), its generation **parameters** and the **payload** sent (prompt or messages and
system prompt). Entries of another identity are never overwritten or reused; only successful calls are
reused (a call that errored is made again on the next run).

:func:`run_lock` keeps a second process out of an output directory while one is using it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from evalkit.errors import UsageError
from evalkit.hashing import canonical_json, fingerprint
from evalkit.runners.base import Request, Result

STORE_FILE = "calls.sqlite"
LOCK_FILE = ".evalkit.lock"
SCHEMA_VERSION = 1


def call_key(identity_fp: str, params: Mapping[str, Any], request: Request) -> str:
    """The store key of one call: what ran (identity), how (parameters) and on what (payload)."""
    return fingerprint({"identity": identity_fp, "params": dict(params), "payload": request.payload()})


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class RunStore:
    """``calls.sqlite`` of one output directory. Thread-safe; every :meth:`put` is durable on return."""

    def __init__(self, directory: str | Path):
        self.path = Path(directory) / STORE_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, timeout=60, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript("""
            CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS calls (
                key TEXT PRIMARY KEY, identity TEXT NOT NULL, record_id TEXT, payload TEXT NOT NULL,
                result TEXT NOT NULL, ok INTEGER NOT NULL, created_at TEXT NOT NULL);
            CREATE INDEX IF NOT EXISTS calls_identity ON calls (identity);
            CREATE TABLE IF NOT EXISTS scores (
                key TEXT PRIMARY KEY, metric TEXT NOT NULL, record_id TEXT, scores TEXT NOT NULL,
                created_at TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS runners (
                identity TEXT PRIMARY KEY, spec TEXT NOT NULL, identity_json TEXT NOT NULL,
                describe_json TEXT, first_seen TEXT NOT NULL, last_seen TEXT NOT NULL);
        """)
        self._conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- calls ------------------------------------------------------------------------------------

    def get_many(self, keys: Sequence[str]) -> dict[str, Result]:
        """The successful results stored under ``keys`` (those that have one), marked ``cached``."""
        found: dict[str, Result] = {}
        unique = list(dict.fromkeys(keys))
        with self._lock:
            for start in range(0, len(unique), 500):
                chunk = unique[start:start + 500]
                marks = ",".join("?" * len(chunk))
                for key, text in self._conn.execute(
                        f"SELECT key, result FROM calls WHERE ok = 1 AND key IN ({marks})", chunk):
                    result = Result.from_dict(json.loads(text))
                    result.cached = True
                    found[key] = result
        return found

    def put(self, key: str, identity_fp: str, request: Request, result: Result) -> None:
        """Store one finished call (a success replaces nothing of another key; a retry of a failed call
        replaces its earlier failure)."""
        row = (key, identity_fp, request.id, canonical_json(request.payload()),
               json.dumps(result.to_dict(), ensure_ascii=False), int(result.ok), _now())
        with self._lock:
            self._conn.execute("INSERT OR REPLACE INTO calls VALUES (?, ?, ?, ?, ?, ?, ?)", row)

    def count(self, identity_fp: str | None = None, *, ok: bool | None = None) -> int:
        query, args = "SELECT COUNT(*) FROM calls WHERE 1=1", []
        if identity_fp is not None:
            query += " AND identity = ?"
            args.append(identity_fp)
        if ok is not None:
            query += " AND ok = ?"
            args.append(int(ok))
        with self._lock:
            return int(self._conn.execute(query, args).fetchone()[0])

    # -- scores -----------------------------------------------------------------------------------
    # A metric's scores of one record, keyed on the metric's identity (settings, model files, prepared state)
    # and everything the metric may read about the record: a re-run scores only what it has not scored.

    def get_scores(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """column -> score fields (value, explanation), for the keys that have stored scores."""
        found: dict[str, dict[str, Any]] = {}
        unique = list(dict.fromkeys(keys))
        with self._lock:
            for start in range(0, len(unique), 500):
                chunk = unique[start:start + 500]
                marks = ",".join("?" * len(chunk))
                for key, text in self._conn.execute(f"SELECT key, scores FROM scores WHERE key IN ({marks})", chunk):
                    found[key] = json.loads(text)
        return found

    def put_scores(self, metric: str, rows: Sequence[tuple[str, str | None, Mapping[str, Any]]]) -> None:
        """Store ``(key, record id, column -> score fields)`` rows in one durable transaction."""
        now = _now()
        values = [(key, metric, record_id, json.dumps(scores, ensure_ascii=False), now)
                  for key, record_id, scores in rows]
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                self._conn.executemany("INSERT OR REPLACE INTO scores VALUES (?, ?, ?, ?, ?)", values)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def count_scores(self, metric: str | None = None) -> int:
        query, args = ("SELECT COUNT(*) FROM scores", []) if metric is None else \
            ("SELECT COUNT(*) FROM scores WHERE metric = ?", [metric])
        with self._lock:
            return int(self._conn.execute(query, args).fetchone()[0])

    # -- runners ----------------------------------------------------------------------------------

    def remember_runner(self, spec: str, identity_fp: str, identity: Mapping[str, Any],
                        describe: Mapping[str, Any] | None) -> None:
        now = _now()
        with self._lock:
            self._conn.execute(
                "INSERT INTO runners VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(identity) DO UPDATE SET "
                "spec = excluded.spec, describe_json = COALESCE(excluded.describe_json, runners.describe_json), "
                "last_seen = excluded.last_seen",
                (identity_fp, spec, canonical_json(identity), None if describe is None else canonical_json(describe),
                 now, now))

    def other_identities(self, spec: str, identity_fp: str) -> list[dict[str, Any]]:
        """Identities this directory saw for the same spec that differ from ``identity_fp`` (newest first)."""
        with self._lock:
            rows = self._conn.execute("SELECT identity, identity_json FROM runners WHERE spec = ? AND identity != ? "
                                      "ORDER BY last_seen DESC", (spec, identity_fp)).fetchall()
        return [{"fingerprint": fp, **json.loads(text)} for fp, text in rows]


@contextlib.contextmanager
def run_lock(directory: str | Path) -> Iterator[None]:
    """Hold the output directory for this process; a second process gets a clear UsageError."""
    from filelock import FileLock, Timeout

    path = Path(directory) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise UsageError(f"{directory} is in use by another evalkit process (lock {path}); wait for it to finish, "
                         "or choose another --output-dir") from None
    try:
        yield
    finally:
        lock.release()
