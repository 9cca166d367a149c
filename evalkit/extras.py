"""Optional parts of evalkit and the packages they need: one clear line when one is missing.

The core install (statistics, the gate, ROUGE and METEOR, reports, finished-run tools) needs no torch. Local
models and BERTScore come with ``evalkit[hf]``, the AWS runners with ``evalkit[aws]``.
"""

from __future__ import annotations

import importlib.util

from evalkit.errors import ResourceMissingError

HF_MODULES = ("torch", "transformers")


def missing_modules(modules: tuple[str, ...]) -> list[str]:
    missing = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a module set to None in sys.modules, or a broken parent package
            found = False
        if not found:
            missing.append(name)
    return missing


def require(modules: tuple[str, ...], extra: str, what: str, alternative: str = "") -> None:
    """Raise a one-line ResourceMissingError naming the extra to install when any of ``modules`` is missing."""
    missing = missing_modules(modules)
    if missing:
        hint = f" ({alternative})" if alternative else ""
        raise ResourceMissingError(f"{what} needs {', '.join(missing)}: pip install 'evalkit[{extra}]'{hint}")
