"""WordNet for METEOR in a fraction of NLTK's load time, with the same lookups.

``nltk.corpus.wordnet`` costs seconds on every run (NLTK 3.9+), in two parts:

* ``WordNetCorpusReader.map_wn()`` maps WordNet 3.0 onto the loaded WordNet -- which is 3.0 too, so it
  maps it onto itself, reading ``index.sense`` twice. The map (``map30``, with ``nomap`` and ``splits``) is
  read only where Open Multilingual Wordnet data are loaded (``_load_lang_data``), never by an English
  ``synsets()`` lookup, the one call METEOR makes. :class:`EnglishWordNet` skips it.
* Parsing the index and exception files into memory. The parsed reader is kept in a pickle in the cache
  directory (``$EVALKIT_CACHE_DIR``, default ``~/.cache/evalkit``), named after NLTK's version, this
  module's format and every WordNet file's name, size and modification time (so a new NLTK or new data
  makes a new one), with a sha256 of its bytes checked before it is read. ``evalkit resources install``
  writes it; otherwise the first run that needs it does.

The data files themselves are still read by NLTK, by byte offset, on each lookup: the synsets METEOR sees
are NLTK's own objects. ``tests/test_wordnet_fast.py`` checks every lemma of WordNet against the stock reader.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import pickle
import warnings
from pathlib import Path
from typing import Any

FORMAT = 1
_LOADED: dict[str, Any] = {}  # cache key -> reader, once per process


@functools.cache
def _reader_class() -> type:
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class EnglishWordNet(WordNetCorpusReader):
        """NLTK's WordNet reader without the self-map of WordNet 3.0 that only multilingual lookups read."""

        def map_wn(self, version: str = "wordnet") -> None:  # noqa: ARG002 -- NLTK's signature
            return None

    return EnglishWordNet


def _files_key(root: Path) -> dict[str, Any]:
    import nltk

    files = sorted(p for p in root.iterdir() if p.is_file())
    return {"format": FORMAT, "nltk": nltk.__version__, "root": str(root),
            "files": [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]}


def cache_file(root: Path) -> Path:
    from evalkit.cachedir import cache_dir

    key = hashlib.sha256(json.dumps(_files_key(root), sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir() / f"wordnet-{key}.pickle"


def _build(root: Path) -> Any:
    from nltk.data import FileSystemPathPointer

    with warnings.catch_warnings():  # "multilingual functions are not available": METEOR needs none
        warnings.simplefilter("ignore")
        return _reader_class()(FileSystemPathPointer(str(root)), None)


def _write(reader: Any, path: Path) -> None:
    """The reader's parsed state, pickled, then a sha256 line: written to a temporary file and renamed."""
    import tempfile

    state = dict(vars(reader))
    state["_data_file_map"] = {}  # open data files are reopened on the first lookup
    payload = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(hashlib.sha256(payload).hexdigest().encode() + b"\n")
            fh.write(payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read(path: Path) -> Any | None:
    """The pickled reader, or None when the file is missing, cut short or not what was written."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    digest, _, payload = data.partition(b"\n")
    if hashlib.sha256(payload).hexdigest().encode() != digest:
        return None
    try:
        state = pickle.loads(payload)
    except Exception:  # noqa: BLE001 -- a cache that cannot be read is rebuilt
        return None
    reader = object.__new__(_reader_class())
    reader.__dict__.update(state)
    return reader


def english_wordnet(root: Path, *, write: bool = True) -> Any:
    """A WordNet reader for English lookups on the WordNet in ``root``: from the cache when it is there,
    else parsed (and, with ``write``, cached for the next run)."""
    path = cache_file(root)
    key = str(path)
    if key in _LOADED:
        return _LOADED[key]
    reader = _read(path)
    if reader is None:
        reader = _build(root)
        if write:
            with contextlib.suppress(OSError):  # a read-only cache directory costs time, not correctness
                _write(reader, path)
    _LOADED[key] = reader
    return reader


def install_cache(root: Path) -> dict[str, Any]:
    """Parse WordNet and write the cache (``evalkit resources install``); what was written."""
    path = cache_file(root)
    _LOADED.pop(str(path), None)
    reader = _build(root)
    _write(reader, path)
    _LOADED[str(path)] = reader
    return {"path": str(path), "bytes": path.stat().st_size}
