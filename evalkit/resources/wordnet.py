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

The data files themselves are still read by NLTK, by byte offset, on each lookup, and each synset line is
parsed whole (gloss, pointers, frames): about half of METEOR's first-run scoring time (1,000 news pairs:
2.2 s, 1.1 s with the table below), for the one thing METEOR reads of a synset, its lemmas' names. So
``evalkit resources install`` also writes, next to the parsed reader and under the same key and checks, a
table of every synset's lemma names as NLTK parses them (:func:`install_cache`; 11 s, 4.4 MB). Where it is
installed, METEOR's reader (:func:`lemma_names_wordnet`) is NLTK's ``synsets()`` -- lower-casing, morphy,
the index -- with each synset read from that table as a stand-in that has only ``lemmas()`` and their
``name()``. Without the table (not installed, or another NLTK or WordNet), the synsets are NLTK's own
objects, as before. ``tests/test_wordnet_fast.py`` checks every lemma of WordNet against the stock reader,
names included.
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
_LOADED: dict[str, Any] = {}  # cache key -> reader (or lemma names table), once per process


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


def cache_file(root: Path, kind: str = "wordnet") -> Path:
    """The parsed reader's file (``kind="wordnet"``) or the lemma names table's (``"wordnet-names"``)."""
    from evalkit.cachedir import cache_dir

    key = hashlib.sha256(json.dumps(_files_key(root), sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir() / f"{kind}-{key}.pickle"


def _build(root: Path) -> Any:
    from nltk.data import FileSystemPathPointer

    with warnings.catch_warnings():  # "multilingual functions are not available": METEOR needs none
        warnings.simplefilter("ignore")
        return _reader_class()(FileSystemPathPointer(str(root)), None)


def _write(reader: Any, path: Path) -> None:
    """The reader's parsed state (see :func:`_write_pickle`)."""
    state = dict(vars(reader))
    state["_data_file_map"] = {}  # open data files are reopened on the first lookup
    _write_pickle(state, path)


def _write_pickle(value: Any, path: Path) -> None:
    """A sha256 line, then ``value`` pickled: written to a temporary file and renamed."""
    import tempfile

    payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
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


def _read_pickle(path: Path) -> Any | None:
    """What :func:`_write_pickle` wrote, or None when the file is missing, cut short or not what was written."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    digest, _, payload = data.partition(b"\n")
    if hashlib.sha256(payload).hexdigest().encode() != digest:
        return None
    try:
        return pickle.loads(payload)
    except Exception:  # noqa: BLE001 -- a cache that cannot be read is rebuilt
        return None


def _read(path: Path) -> Any | None:
    """The pickled reader, or None when the file is missing, cut short or not what was written."""
    state = _read_pickle(path)
    if not isinstance(state, dict):
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
    """Parse WordNet and write the cache and the lemma names table (``evalkit resources install``), each unless
    a valid one for this NLTK and these data files is there already; what is there."""
    path, names_path = cache_file(root), cache_file(root, "wordnet-names")
    _LOADED.pop(str(path), None)
    _LOADED.pop(str(names_path), None)
    reader = _read(path)
    if reader is None:
        reader = _build(root)
        _write(reader, path)
    if not isinstance(_read_pickle(names_path), dict):
        _write_pickle(_lemma_names(reader), names_path)
        reader._synset_offset_cache.clear()  # the 128k synsets just parsed: looked up again when needed
    _LOADED[str(path)] = reader
    return {"path": str(path), "bytes": path.stat().st_size, "lemma_names": str(names_path),
            "lemma_names_bytes": names_path.stat().st_size}


def _lemma_names(reader: Any) -> dict[tuple[str, int], tuple[str, ...]]:
    """Every synset's lemma names as ``reader`` parses them, keyed as ``synsets()`` looks synsets up."""
    table: dict[tuple[str, int], tuple[str, ...]] = {}
    for by_pos in reader._lemma_pos_offset_map.values():
        for pos, offsets in by_pos.items():
            for offset in offsets:
                if (pos, offset) not in table:
                    table[(pos, offset)] = tuple(reader.synset_from_pos_and_offset(pos, offset).lemma_names())
    return table


class _Lemma:
    __slots__ = ("_name",)

    def __init__(self, name: str):
        self._name = name

    def name(self) -> str:
        return self._name


class _LemmaNames:
    """A synset as METEOR reads it: ``lemmas()``, each with its ``name()``."""

    __slots__ = ("_lemmas",)

    def __init__(self, names: tuple[str, ...]):
        self._lemmas = tuple(_Lemma(name) for name in names)

    def lemmas(self) -> tuple[_Lemma, ...]:
        return self._lemmas


@functools.cache
def _names_reader_class() -> type:
    class LemmaNamesWordNet(_reader_class()):  # type: ignore[misc]
        """English ``synsets()`` whose synsets are read from the lemma names table (NLTK's parse of the line
        where the table lacks one)."""

        def synset_from_pos_and_offset(self, pos: str, offset: int) -> Any:
            names = self._evalkit_lemma_names.get((pos, offset))
            return _LemmaNames(names) if names is not None else super().synset_from_pos_and_offset(pos, offset)

    return LemmaNamesWordNet


def lemma_names_wordnet(reader: Any, root: Path) -> Any | None:
    """``reader`` answering ``synsets()`` from the installed lemma names table of the WordNet in ``root``, or
    None when no table for this NLTK and WordNet is installed (see the module docstring)."""
    path = cache_file(root, "wordnet-names")
    if str(path) not in _LOADED:
        _LOADED[str(path)] = _read_pickle(path)
    table = _LOADED[str(path)]
    if not isinstance(table, dict):
        return None
    names = object.__new__(_names_reader_class())
    names.__dict__.update(vars(reader))
    names._evalkit_lemma_names = table
    return names
