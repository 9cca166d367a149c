"""METEOR's WordNet (evalkit.resources.wordnet): NLTK's reader without the OMW self-map, kept parsed in the
cache directory. It must answer every lookup as ``nltk.corpus.wordnet`` does, and the cache must be keyed on
the data and NLTK, checked before it is read, and rebuilt when it is not what was written."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from evalkit.resources import nltk_data as nd
from evalkit.resources import wordnet as fast_wordnet


@pytest.fixture(scope="module")
def wordnet_root() -> Path:
    return nd.ensure_wordnet()


@pytest.fixture(scope="module")
def lemma_names_reader(wordnet_root, tmp_path_factory):
    """METEOR's reader over a lemma names table built here (as `evalkit resources install` builds it)."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EVALKIT_CACHE_DIR", str(cache))
        patch.setattr(fast_wordnet, "_LOADED", {})
        written = fast_wordnet.install_cache(wordnet_root)
        assert Path(written["lemma_names"]).parent == cache and written["lemma_names_bytes"] > 1_000_000
        reader = fast_wordnet.lemma_names_wordnet(fast_wordnet.english_wordnet(wordnet_root), wordnet_root)
    assert type(reader).__name__ == "LemmaNamesWordNet"
    return reader


def test_every_lemma_and_every_word_of_the_data_looks_up_as_in_nltk(wordnet_root, news_records, lemma_names_reader):
    """Every one of WordNet's 147k lemmas, and every word of the test articles (inflected forms go through
    morphy), gets the same synsets, and so the same lemma names METEOR matches on; METEOR's reader over the
    lemma names table gives the same names, synset by synset."""
    from nltk.corpus import wordnet as stock

    reader = nd.wordnet_reader()
    assert type(reader).__name__ == "EnglishWordNet" and reader.map30 is None
    words = sorted(stock._lemma_pos_offset_map)
    assert len(words) > 140_000
    words += sorted({w.lower() for r in news_records for w in re.findall(r"[A-Za-z]+", r["document"] + r["summary"])})
    words += ["Dogs", "RUNNING", "better", "geese", "ran", "xyzzy", ""]
    mismatched = [w for w in words if [s.name() for s in stock.synsets(w)] != [s.name() for s in reader.synsets(w)]]
    assert mismatched == []
    names = {w: [s.lemma_names() for s in stock.synsets(w)] for w in words}
    assert [w for w in words if [[lemma.name() for lemma in s.lemmas()] for s in lemma_names_reader.synsets(w)]
            != names[w]] == []  # what METEOR reads of each synset
    assert sum(len(n) for n in names.values()) > 200_000  # the comparison covered every synset's names
    for word in ("running", "geese", "better", "dog"):
        assert [s.lemma_names() for s in reader.synsets(word)] == [s.lemma_names() for s in stock.synsets(word)]


def test_the_parsed_cache_is_keyed_checked_and_rebuilt(wordnet_root, tmp_path, monkeypatch):
    import nltk.data

    monkeypatch.setenv("EVALKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(nltk.data, "path", [*nltk.data.path, str(tmp_path)])  # NLTK reads only under its path
    root = tmp_path / "wordnet"
    shutil.copytree(wordnet_root, root)
    monkeypatch.setattr(fast_wordnet, "_LOADED", {})
    written = fast_wordnet.install_cache(root)
    path = Path(written["path"])
    assert path.parent == tmp_path / "cache" and path.stat().st_size == written["bytes"] > 1_000_000
    # Installing again finds both files valid and rewrites neither.
    stamps = [p.stat().st_mtime_ns for p in (path, Path(written["lemma_names"]))]
    assert fast_wordnet.install_cache(root) == written
    assert [p.stat().st_mtime_ns for p in (path, Path(written["lemma_names"]))] == stamps
    dogs = [s.name() for s in fast_wordnet.english_wordnet(root).synsets("dog")]
    # A fresh process reads it back from the file, not from memory.
    monkeypatch.setattr(fast_wordnet, "_LOADED", {})
    read_back = fast_wordnet._read(path)
    assert read_back is not None and [s.name() for s in read_back.synsets("dog")] == dogs
    # Cut short: not read (its sha256 line no longer matches), parsed again and rewritten.
    path.write_bytes(path.read_bytes()[:-100])
    assert fast_wordnet._read(path) is None
    assert [s.name() for s in fast_wordnet.english_wordnet(root).synsets("dog")] == dogs
    assert fast_wordnet._read(path) is not None
    # The lemma names table is checked the same way; without it METEOR's synsets are NLTK's own.
    names_path = Path(written["lemma_names"])
    reader = fast_wordnet.english_wordnet(root)
    (dog, *_) = fast_wordnet.lemma_names_wordnet(reader, root).synsets("dog")
    assert [lemma.name() for lemma in dog.lemmas()] == ["dog", "domestic_dog", "Canis_familiaris"]
    names_path.write_bytes(names_path.read_bytes()[:-100])
    monkeypatch.setattr(fast_wordnet, "_LOADED", {})
    assert fast_wordnet.lemma_names_wordnet(reader, root) is None
    names_path.unlink()
    monkeypatch.setattr(fast_wordnet, "_LOADED", {})
    assert fast_wordnet.lemma_names_wordnet(reader, root) is None
    # Changed data: other cache files (the key names every file's size and modification time).
    index = root / "index.noun"
    os.utime(index, ns=(index.stat().st_atime_ns, index.stat().st_mtime_ns + 1_000_000_000))
    assert fast_wordnet.cache_file(root) != path
    assert fast_wordnet.cache_file(root, "wordnet-names") != names_path


def test_install_writes_the_parsed_cache(wordnet_root, tmp_path, monkeypatch):
    """`evalkit resources install` on an installed WordNet parses it once, so the first run does not."""
    monkeypatch.setenv("EVALKIT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(fast_wordnet, "_LOADED", {})
    report = nd.install_all()
    assert report["wordnet"]["already_present"]
    assert Path(report["wordnet"]["parsed_cache"]) == fast_wordnet.cache_file(Path(report["wordnet"]["path"]))
    assert fast_wordnet._read(Path(report["wordnet"]["parsed_cache"])) is not None
    assert Path(report["wordnet"]["lemma_names"]) == fast_wordnet.cache_file(Path(report["wordnet"]["path"]),
                                                                             "wordnet-names")
    assert isinstance(fast_wordnet._read_pickle(Path(report["wordnet"]["lemma_names"])), dict)
