"""Choices measured once per machine (the screen, the linear kernels), cached on disk and in the process.

A choice is keyed on everything that can change it (CPU, torch version, thread count, model, shape, the rule
that decides), so every run on a machine makes the same choice (the same seed gives the same results), and a
run on another machine, or after an upgrade, measures again.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

CACHE_FILE = "acr-screens.json"  # one file for every measured choice; the key's "choice" field tells them apart
_MEASURED: dict[str, dict[str, Any]] = {}  # key -> entry, measured (or read) by this process
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu_features() -> dict[str, Any]:
    """The CPU's name and the vector features that decide the kernels' speed (from /proc/cpuinfo)."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        return {"name": platform.processor() or platform.machine(), "features": [], "cores": os.cpu_count()}
    flags = set(fields.get("flags", "").split())
    return {"name": fields.get("model name", platform.machine()), "family": fields.get("cpu family"),
            "model": fields.get("model"), "features": [f for f in CPU_FLAGS if f in flags], "cores": os.cpu_count()}


def machine_fields() -> dict[str, Any]:
    """What about this machine and torch build decides a measured choice."""
    import torch

    return {"cpu": cpu_features(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "capability": torch.backends.cpu.get_cpu_capability(),
            "quantized_engine": torch.backends.quantized.engine}


def cache_path(cache_dir: str | Path | None) -> Path:
    from evalkit.cachedir import cache_dir as default_cache_dir

    return Path(cache_dir or default_cache_dir()) / CACHE_FILE


def measured_once(key_fields: dict[str, Any], measure: Callable[[], dict[str, Any]],
                  cache_dir: str | Path | None = None) -> tuple[dict[str, Any], bool]:
    """``(entry, cached)``: the entry ``measure()`` returned for ``key_fields`` on this machine, measured now or
    read back from an earlier measurement (this process's, or the cache file's). The entry gets
    ``"measured": key_fields`` and ``"key"``; it is written to the cache atomically (a read-only cache
    directory only means the next process measures again)."""
    from evalkit.atomic import atomic_write_json
    from evalkit.hashing import fingerprint

    key = fingerprint(key_fields, length=16)
    if key in _MEASURED:
        return dict(_MEASURED[key]), True
    path = cache_path(cache_dir)
    try:
        cache = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cache = {}
    if isinstance(cache.get(key), dict) and "chosen" in cache[key]:
        _MEASURED[key] = {**cache[key], "key": key}
        return dict(_MEASURED[key]), True
    entry = {**measure(), "measured": key_fields}
    cache[key] = entry
    with contextlib.suppress(OSError):
        atomic_write_json(path, cache)
    _MEASURED[key] = {**entry, "key": key}
    return dict(_MEASURED[key]), False
