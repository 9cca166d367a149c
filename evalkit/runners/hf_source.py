"""Where an ``hf:`` model is loaded from, decided without importing torch or touching the network.

``hf:TARGET`` is an alias (``hf:smollm2``), a local model directory, a PEFT adapter directory (LoRA and the
like: ``adapter_config.json``; its base model, ``base_model_name_or_path``, resolves by these same rules, a path
relative to the adapter directory included), a local ``.gguf`` file, or a hub id already in the local Hugging
Face cache (resolved to its snapshot directory, so loading never asks the
hub). Anything else is a one-line :class:`~evalkit.errors.ResourceMissingError` at once: offline is the
normal state, and a model that is not here must not cost a minute of hub retries.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from evalkit.errors import ResourceMissingError, UsageError
from evalkit.resources.models import MODEL_ALIASES, cached_hub_snapshot, resolve_model_alias
from evalkit.runners.base import RUNNER_CHECKS

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def resolve_source(target: str) -> dict[str, Any]:
    """Where ``target`` (alias, local dir, local .gguf file or cached hub id) is loaded from.

    Returns ``{"kind": "alias"|"local"|"hub"|"adapter", "path": str, "gguf_file": str|None, "alias": str|None,
    "hub_id": str|None, "adapter_path": str|None}``; ``path`` is always a local directory (for an adapter: its
    base model's).
    """
    target = target.strip()
    if not target:
        raise UsageError("empty model name after 'hf:'; try hf:smollm2 or hf:/path/to/model")
    alias = resolve_model_alias(target)
    if alias is not None:
        return {"kind": "alias", "path": alias["path"], "gguf_file": alias["gguf_file"],
                "alias": alias["alias"], "hub_id": None, "adapter_path": None}
    local = Path(target).expanduser()
    if local.is_file():
        if local.suffix.lower() != ".gguf":
            raise UsageError(f"model file {local} is not a .gguf file; pass a model directory or a .gguf file")
        return {"kind": "local", "path": str(local.parent.resolve()), "gguf_file": local.name, "alias": None,
                "hub_id": None, "adapter_path": None}
    if local.is_dir() and (local / "adapter_config.json").is_file() and not (local / "config.json").is_file():
        return _adapter_source(local)
    if local.is_dir():
        if not (local / "config.json").is_file():
            ggufs = sorted(p.name for p in local.glob("*.gguf"))
            if len(ggufs) == 1:
                return {"kind": "local", "path": str(local.resolve()), "gguf_file": ggufs[0], "alias": None,
                        "hub_id": None, "adapter_path": None}
            what = f"{len(ggufs)} .gguf files (pass one: hf:{local}/FILE.gguf)" if ggufs else "no config.json"
            raise ResourceMissingError(
                f"{local} is not a transformers model directory ({what}); "
                "pass a directory saved with save_pretrained"
            )
        return {"kind": "local", "path": str(local.resolve()), "gguf_file": None, "alias": None, "hub_id": None,
                "adapter_path": None}
    if not _HUB_ID.match(target) or target.startswith((".", "~")):
        raise ResourceMissingError(f"model path {target} does not exist; pass an existing local model directory")
    snapshot = cached_hub_snapshot(target)
    if snapshot is None:
        raise ResourceMissingError(hub_missing_message(target))
    return {"kind": "hub", "path": str(snapshot), "gguf_file": None, "alias": None, "hub_id": target,
            "adapter_path": None}


def _adapter_source(directory: Path) -> dict[str, Any]:
    import json

    config_file = directory / "adapter_config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ResourceMissingError(f"{config_file}: not a readable adapter config ({exc})") from None
    base = config.get("base_model_name_or_path") if isinstance(config, dict) else None
    if not isinstance(base, str) or not base.strip():
        raise ResourceMissingError(f"{config_file} names no base model (base_model_name_or_path)")
    relative = directory / base
    try:
        base_source = resolve_source(str(relative) if not Path(base).is_absolute() and relative.exists() else base)
    except ResourceMissingError as exc:
        raise ResourceMissingError(f"{config_file}: base model {base!r} (a path is read relative to the adapter "
                                   f"directory): {exc}") from None
    if base_source.get("adapter_path"):
        raise UsageError(f"{directory}: the base model of an adapter cannot be another adapter ({base})")
    return {**base_source, "kind": "adapter", "adapter_path": str(directory.resolve()), "base": base}


def hub_missing_message(target: str) -> str:
    try:
        from huggingface_hub.constants import HF_HUB_CACHE as cache
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        cache = "the Hugging Face cache"
    aliases = ", ".join(f"hf:{a}" for a in sorted(MODEL_ALIASES))
    return (
        f"model '{target}' is neither a local path nor in the Hugging Face cache ({cache}); "
        f"pass a local model directory (hf:/path/to/model) or an alias ({aliases}), "
        f"or fetch it into the cache with network access (huggingface-cli download {target}) "
        "or point HF_HOME at a cache that has it"
    )


@RUNNER_CHECKS.register("hf")
def check_hf_target(prefix: str, target: str, options: Any = None) -> None:
    """The ``hf:`` target can be loaded from this machine (resolution only; nothing is loaded)."""
    from evalkit.extras import HF_MODULES, require
    from evalkit.runners.config import check_backend_keys

    require(HF_MODULES, "hf", "the hf: runner (local models)")
    check_backend_keys("hf", getattr(options, "backend", None) or {})
    resolve_source(target)
