"""Optional integrations a library imports eagerly, hidden while it is imported in a process evalkit owns.

``import nltk`` (ROUGE's stemmer, METEOR) imports scikit-learn (``nltk.classify``'s wrapper) and scipy.stats
(collocation tests) whenever they are installed: measured 1.0 s of the 3 s an ``evalkit run`` took to its
first score. transformers imports scikit-learn (for assisted generation) when its first import finds it installed.
No evalkit metric uses any of these. So where evalkit owns the process -- the CLI, and a metric's child
process (:mod:`evalkit.scoring.child_process`) -- :func:`enable` makes those modules absent
(``sys.modules[name] = None``, Python's documented way to block an import) for as long as that one library's
first import runs. Each library then takes the fallback it has for a missing optional dependency
(``nltk.metrics.association.fisher_exact`` raises NotImplementedError; transformers records scikit-learn as
unavailable, in that process); nothing evalkit computes changes. Afterwards the modules import normally again (evalkit's
statistics import scipy.stats later in the same run).

A notebook or script that calls evalkit's API never gets this: only the CLI's entry point and the child
process call :func:`enable`, so a user's own ``nltk`` keeps every integration.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import sys
from collections.abc import Iterator, Sequence
from typing import Any

# What each library imports only for features no evalkit metric uses.
UNUSED_BY_EVALKIT = {
    "nltk": ("sklearn", "scipy.stats"),
    "transformers": ("sklearn",),
}


@contextlib.contextmanager
def absent(names: Sequence[str]) -> Iterator[None]:
    """``names`` cannot be imported inside the block (those already imported are left alone)."""
    hidden = [name for name in names if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # import raises, find_spec returns None
    try:
        yield
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


class _Loader(importlib.abc.Loader):
    """The library's own loader, run with its unused integrations absent."""

    def __init__(self, loader: Any, hidden: Sequence[str]):
        self._loader, self._hidden = loader, hidden

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        module.__spec__.loader = module.__loader__ = self._loader  # the module sees its own loader
        with absent(self._hidden):
            self._loader.exec_module(module)


class _Finder(importlib.abc.MetaPathFinder):
    """Finds the libraries of :data:`UNUSED_BY_EVALKIT` as the other finders do, with a hiding loader."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        hidden = UNUSED_BY_EVALKIT.get(fullname)
        if hidden is None:
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _Loader(spec.loader, hidden)
                return spec
        return None


def enable() -> None:
    """From now on, in this process, the libraries of :data:`UNUSED_BY_EVALKIT` not imported yet are imported
    without their unused integrations."""
    if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
