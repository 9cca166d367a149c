"""Where evalkit keeps what it can rebuild: ``$EVALKIT_CACHE_DIR``, default ``~/.cache/evalkit``."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """File hashes of local models, RAG indexes, the parsed WordNet, measured ACR screens."""
    return Path(os.environ.get("EVALKIT_CACHE_DIR") or Path.home() / ".cache" / "evalkit")
