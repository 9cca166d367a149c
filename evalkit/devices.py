"""Device choice shared by generation and scoring: ``auto`` means CUDA when present, else CPU."""

from __future__ import annotations

import re

from evalkit.errors import UsageError


def check_device(name: str | None) -> None:
    """:func:`resolve_device`'s checks without importing torch where the name alone decides (``auto``, ``cpu``):
    a run's up-front checks stay fast. ``cuda`` names still ask torch whether CUDA is there."""
    value = (name or "auto").strip().lower()
    if value not in ("auto", "cpu"):
        resolve_device(name)


def resolve_device(name: str | None) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; ``cpu``, ``cuda`` and ``cuda:N`` as given."""
    import torch

    value = (name or "auto").strip().lower()
    if value == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if value == "cpu":
        return "cpu"
    if re.fullmatch(r"cuda(:\d+)?", value):
        if not torch.cuda.is_available():
            raise UsageError(f"device '{name}' requested but CUDA is not available; use --device cpu or auto")
        return value
    raise UsageError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N")
