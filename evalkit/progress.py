"""One progress-bar policy for the whole package: tqdm on stderr, off when asked or not a terminal."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
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
