"""Knowledge-base documents and their chunks.

A documents directory holds text (``.txt``), markdown (``.md``, ``.markdown``) and JSONL (``.jsonl``: one
document per line, an object with a ``text`` field and optionally ``id`` and ``title``) files, in any
sub-folders; other files are refused by name, so nothing is skipped silently (hidden files are ignored).

Chunking is by characters (``chunk_size``, ``chunk_overlap``), cutting preferably at paragraph, then line,
then sentence, then word boundaries. Markdown is first cut at its headings, and each chunk starts with the
heading path of its section ("Billing > Refunds"), which both a retriever and a reader need.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from evalkit.errors import InputError
from evalkit.jsonl import split_lines

TEXT_SUFFIXES = {".txt": "text", ".md": "markdown", ".markdown": "markdown", ".jsonl": "jsonl"}
_SEPARATORS = ("\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " ")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


@dataclass(frozen=True)
class Document:
    id: str  # the path relative to the documents directory (JSONL: path:line or path#id)
    text: str
    title: str | None = None
    format: str = "text"


@dataclass(frozen=True)
class Chunk:
    id: str  # "<document id>#<n>"
    document: str
    text: str

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "document": self.document, "text": self.text}


def document_files(directory: str | Path) -> list[Path]:
    """The documents directory's files, sorted; InputError for a missing or empty directory or another type."""
    root = Path(directory)
    if not root.is_dir():
        raise InputError("documents directory not found" if not root.exists() else "documents: not a directory",
                         path=str(root))
    files = []
    for file in sorted(root.rglob("*")):
        relative = file.relative_to(root)
        if any(part.startswith(".") for part in relative.parts) or not file.is_file():
            continue
        if file.suffix.lower() not in TEXT_SUFFIXES:
            raise InputError(f"unsupported document type '{file.suffix or file.name}' (expected "
                             f"{', '.join(sorted(TEXT_SUFFIXES))})", path=str(file))
        files.append(file)
    if not files:
        raise InputError("documents directory holds no .txt, .md or .jsonl file", path=str(root))
    return files


def load_documents(directory: str | Path) -> list[Document]:
    root = Path(directory)
    documents = []
    for file in document_files(root):
        relative = file.relative_to(root).as_posix()
        kind = TEXT_SUFFIXES[file.suffix.lower()]
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"not UTF-8 text (byte {exc.start})", path=str(file)) from None
        if kind == "jsonl":
            documents.extend(_jsonl_documents(file, relative, text))
        elif text.strip():
            documents.append(Document(relative, text, _markdown_title(text) if kind == "markdown" else None, kind))
    if not documents:
        raise InputError("the documents hold no text", path=str(root))
    return documents


def _jsonl_documents(file: Path, relative: str, text: str) -> Iterator[Document]:
    seen: dict[str, int] = {}
    for line_no, line in split_lines(text):  # JSONL lines end at \n only: U+2028 in a string is text
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise InputError(f"invalid JSON ({exc.msg})", path=str(file), line=line_no) from None
        if not isinstance(row, dict):
            raise InputError("expected a JSON object with a 'text' field", path=str(file), line=line_no)
        body = row.get("text")
        if not isinstance(body, str) or not body.strip():
            raise InputError("missing or empty", path=str(file), line=line_no, field="text")
        key = str(row["id"]) if row.get("id") is not None else str(line_no)
        if key in seen:
            raise InputError(f"duplicate id '{key}' (first on line {seen[key]})", path=str(file), line=line_no,
                             field="id")
        seen[key] = line_no
        title = row.get("title") if isinstance(row.get("title"), str) else None
        yield Document(f"{relative}#{key}" if row.get("id") is not None else f"{relative}:{line_no}", body, title,
                       "jsonl")


def _markdown_title(text: str) -> str | None:
    for _, line in split_lines(text):
        match = _HEADING.match(line)
        if match:
            return match.group(2)
    return None


def markdown_sections(text: str) -> list[tuple[str, str]]:
    """(heading path, body) per section of a markdown text; text before the first heading has path ''."""
    sections: list[tuple[str, list[str]]] = [("", [])]
    path: list[tuple[int, str]] = []
    in_code = False
    for _, line in split_lines(text):
        if line.lstrip().startswith("```"):
            in_code = not in_code
        match = None if in_code else _HEADING.match(line)
        if match:
            level = len(match.group(1))
            path = [(lvl, title) for lvl, title in path if lvl < level] + [(level, match.group(2))]
            sections.append((" > ".join(title for _, title in path), []))
        else:
            sections[-1][1].append(line)
    return [(heading, "\n".join(body).strip()) for heading, body in sections if "\n".join(body).strip() or heading]


def split_text(text: str, size: int, overlap: int) -> list[str]:
    """Pieces of at most ``size`` characters, consecutive pieces sharing up to ``overlap`` characters, cut at
    the coarsest boundary that fits (paragraph, line, sentence, word; characters as a last resort)."""
    text = text.strip()
    if len(text) <= size:
        return [text] if text else []
    units = _units(text, size)
    chunks: list[str] = []
    current: list[str] = []
    length = 0
    for unit in units:
        if current and length + len(unit) > size:
            chunks.append("".join(current).strip())
            while current and (length > overlap or length + len(unit) > size):  # keep a tail as overlap
                length -= len(current[0])
                current.pop(0)
        current.append(unit)
        length += len(unit)
    if current:
        chunks.append("".join(current).strip())
    return [c for c in chunks if c]


def _units(text: str, size: int, separators: tuple[str, ...] = _SEPARATORS) -> list[str]:
    """``text`` cut into pieces no longer than ``size``, each keeping its trailing separator."""
    if len(text) <= size:
        return [text]
    for i, separator in enumerate(separators):
        if separator in text:
            parts = text.split(separator)
            pieces = [p + separator for p in parts[:-1]] + [parts[-1]]
            out: list[str] = []
            for piece in pieces:
                out.extend(_units(piece, size, separators[i + 1:]) if len(piece) > size else [piece])
            return [p for p in out if p]
    return [text[i:i + size] for i in range(0, len(text), size)]


def chunk_documents(documents: list[Document], chunk_size: int, chunk_overlap: int) -> list[Chunk]:
    chunks = []
    for document in documents:
        pieces: list[str] = []
        if document.format == "markdown":
            for heading, body in markdown_sections(document.text):
                prefix = f"{heading}\n" if heading else ""
                for piece in split_text(body, max(1, chunk_size - len(prefix)), chunk_overlap):
                    pieces.append(prefix + piece)
        else:
            prefix = f"{document.title}\n" if document.title else ""
            pieces = [prefix + p for p in split_text(document.text, max(1, chunk_size - len(prefix)), chunk_overlap)]
        chunks.extend(Chunk(f"{document.id}#{n}", document.id, text) for n, text in enumerate(pieces))
    return chunks
