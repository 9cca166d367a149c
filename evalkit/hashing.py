"""Content fingerprints: one canonical JSON form and one hash for every key evalkit derives from settings.

Used by the run store (call keys, runner identities), by a run's settings fingerprint and by the ACR
resume key, so two settings that are equal always hash equal, whatever their key order.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces, UTF-8 kept; values JSON cannot hold are written with ``str``."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def fingerprint(value: Any, length: int = 64) -> str:
    """sha256 (hex, the first ``length`` characters) of ``value`` in canonical JSON."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()[:length]
