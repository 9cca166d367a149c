"""Optional integrations a library imports eagerly, kept out of the processes evalkit owns.

``import nltk`` (ROUGE's stemmer, METEOR) imports scikit-learn (``nltk.classify``'s wrapper) and scipy.stats
(collocation tests) whenever they are installed: measured 1.0 s of the 3 s an ``evalkit run`` took to its
first score. transformers imports scikit-learn (for assisted generation) when its first import finds it installed.
bert-score imports pandas, ``matplotlib.pyplot`` and matplotlib's axes toolkit at module level for its rescale
baselines and its plotting helper. No evalkit metric uses any of these while it loads. So where evalkit owns the
process -- the CLI, and a metric's child process (:mod:`evalkit.scoring.child_process`) -- :func:`enable`
installs an import finder that runs each listed library's first import under its :class:`Rule`:

- ``absent``: the modules cannot be imported while the library's own import runs (``sys.modules[name] = None``,
  Python's documented way to block an import). Each library then takes the fallback it has for a missing
  optional dependency (``nltk.metrics.association.fisher_exact`` raises NotImplementedError; transformers records
  scikit-learn as unavailable, in that process); nothing evalkit computes changes. Afterwards the modules import
  normally again (evalkit's statistics import scipy.stats later in the same run).
- ``deferred``: the library gets a stand-in module that imports the real one the first time any attribute of it
  is used (``pd.read_csv`` when bert-score reads a rescale baseline), so what the library does is unchanged. A
  name taken from it with ``from module import name`` while the library imports becomes a function that calls
  the real one (bert-score's ``make_axes_locatable``). Once the library is imported, the stand-ins leave
  ``sys.modules``: any other import gets the real module.
- ``torch_distributed=False``: ``torch.distributed.is_available()`` answers False while that module imports.

A process that only scores (a metric's child process: ``enable(scoring_process=True)``) also loads transformers
without accelerate (device maps, offloading) and without torch's distributed tensors (tensor parallelism):
measured 0.8-1.5 s of the child's 4.4-6.2 s start-up, the import of sympy included. The CLI itself keeps both,
for the model runners that use them.

A notebook or script that calls evalkit's API never gets any of this: only the CLI's entry point and the child
process call :func:`enable`, so a user's own libraries keep every integration.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.util
import sys
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Rule:
    """How one library's first import runs (see the module docstring)."""

    absent: tuple[str, ...] = ()
    deferred: tuple[str, ...] = ()
    torch_distributed: bool = True
    first: tuple[str, ...] = ()  # imported before the rule applies: the library's heavy dependencies import as usual


# What each library imports only for features no evalkit metric uses, in every process evalkit owns.
UNUSED_BY_EVALKIT = {
    "nltk": Rule(absent=("sklearn", "scipy.stats")),
    "transformers": Rule(absent=("sklearn",)),
    "bert_score": Rule(deferred=("pandas", "matplotlib.pyplot", "mpl_toolkits.axes_grid1"),
                       first=("transformers.modeling_utils", "transformers.models.auto.modeling_auto",
                              "transformers.models.auto.tokenization_auto")),
}
# ... and also in a process that only scores (no device maps, no tensor parallelism there).
UNUSED_WHEN_SCORING = {
    "transformers": Rule(absent=("sklearn", "accelerate")),
    "transformers.pytorch_utils": Rule(torch_distributed=False),
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


class _Deferred(types.ModuleType):
    """Stands in for module ``name``: the real module is imported when an attribute is first used."""

    def __init__(self, name: str, spec: Any):
        super().__init__(name)
        self.__spec__ = spec  # the real module's: importlib.util.find_spec still answers truly
        self._evalkit_importing = True  # the library that asked for it is still being imported

    def __getattr__(self, attr: str) -> Any:  # only attributes the stand-in itself lacks
        name = self.__name__
        if self.__dict__.get("_evalkit_importing"):
            if attr == "__path__":  # the import system asking whether to import submodules for `from name import`
                raise AttributeError(attr)
            if not attr.startswith("__"):
                return _forward(name, attr)  # `from name import attr` in the library: called through on use
        if sys.modules.get(name) is self:
            del sys.modules[name]
        return getattr(importlib.import_module(name), attr)


def _forward(module: str, attr: str) -> Callable[..., Any]:
    def forward(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), attr)(*args, **kwargs)

    forward.__name__ = forward.__qualname__ = attr
    forward.__doc__ = f"Calls {module}.{attr}, imported on first use."
    return forward


@contextlib.contextmanager
def deferred(names: Sequence[str]) -> Iterator[None]:
    """Inside the block, importing one of ``names`` not imported yet (and installed) gives a :class:`_Deferred`
    stand-in; afterwards the stand-ins leave ``sys.modules`` (the library keeps its references)."""
    standins = {}
    for name in names:
        if name in sys.modules:
            continue
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is not None:  # not installed: the library's import fails as it would
            standins[name] = sys.modules[name] = _Deferred(name, spec)
    try:
        yield
    finally:
        for name, standin in standins.items():
            standin._evalkit_importing = False
            if sys.modules.get(name) is standin:
                del sys.modules[name]


@contextlib.contextmanager
def _torch_distributed(available: bool) -> Iterator[None]:
    """Inside the block, ``torch.distributed.is_available()`` says ``available`` (torch left alone when True)."""
    if available or importlib.util.find_spec("torch") is None:
        yield
        return
    import torch.distributed

    real = torch.distributed.is_available
    torch.distributed.is_available = lambda: False
    try:
        yield
    finally:
        torch.distributed.is_available = real


class _Loader(importlib.abc.Loader):
    """The library's own loader, run under its rule."""

    def __init__(self, loader: Any, rule: Rule):
        self._loader, self._rule = loader, rule

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        module.__spec__.loader = module.__loader__ = self._loader  # the module sees its own loader
        rule = self._rule
        for name in rule.first:
            with contextlib.suppress(ImportError):  # another version of the dependency: imported where used
                importlib.import_module(name)
        with absent(rule.absent), deferred(rule.deferred), _torch_distributed(rule.torch_distributed):
            self._loader.exec_module(module)


class _Finder(importlib.abc.MetaPathFinder):
    """Finds the libraries of its rules as the other finders do, with a loader that applies the rule."""

    def __init__(self, rules: dict[str, Rule]):
        self.rules = rules

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        rule = self.rules.get(fullname)
        if rule is None:
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _Loader(spec.loader, rule)
                return spec
        return None


def enable(*, scoring_process: bool = False) -> None:
    """From now on, in this process, the libraries of :data:`UNUSED_BY_EVALKIT` (and, in a process that only
    scores, :data:`UNUSED_WHEN_SCORING`) not imported yet are imported under their rules."""
    rules = {**UNUSED_BY_EVALKIT, **(UNUSED_WHEN_SCORING if scoring_process else {})}
    for finder in sys.meta_path:
        if isinstance(finder, _Finder):
            finder.rules = {**finder.rules, **rules}
            return
    sys.meta_path.insert(0, _Finder(rules))
