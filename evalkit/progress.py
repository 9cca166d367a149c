"""One progress-bar policy for the whole package: tqdm on stderr, off when asked or not a terminal."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")


def progress_bar(items: Iterable[T], *, total: int | None = None, desc: str = "",
                 enabled: bool = True) -> Iterator[T]:
    if not enabled:
        return iter(items)
    from tqdm.auto import tqdm

    return iter(tqdm(items, total=total, desc=desc, leave=False, dynamic_ncols=True))


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress_counter(total: int, *, desc: str = "", enabled: bool = True):
    """A bar advanced by hand with ``update(n)``; a silent stand-in when disabled."""
    if not enabled:
        return _NoProgress()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)


@contextmanager
def quiet_library_progress(quiet: bool = True) -> Iterator[None]:
    """Silence the progress bars libraries draw on their own while models and data load: transformers and
    huggingface_hub (their switch), datasets (its switch) and the bare ``tqdm`` of transformers' GGUF
    loader (patched for the duration). Every switch is restored afterwards."""
    if not quiet:
        yield
        return
    restore: list[Callable[[], None]] = []
    try:
        from transformers.utils import logging as hf_logging

        if hf_logging.is_progress_bar_enabled():
            hf_logging.disable_progress_bar()
            restore.append(hf_logging.enable_progress_bar)
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass
    datasets_bars = sys.modules.get("datasets.utils.tqdm")  # only once datasets is in use
    if datasets_bars is not None and not datasets_bars.are_progress_bars_disabled():
        datasets_bars.disable_progress_bars()
        restore.append(datasets_bars.enable_progress_bars)
    gguf = sys.modules.get("transformers.modeling_gguf_pytorch_utils")
    if gguf is None:
        try:
            import transformers.modeling_gguf_pytorch_utils as gguf
        except ImportError:  # pragma: no cover - older transformers
            gguf = None
    if gguf is not None and hasattr(gguf, "tqdm"):
        original = gguf.tqdm
        gguf.tqdm = functools.partial(original, disable=True)
        restore.append(lambda: setattr(gguf, "tqdm", original))
    try:
        yield
    finally:
        for undo in reversed(restore):
            undo()
