"""Exact cosine top-k retrieval over a documents directory, with an index built once and reused.

The index is a FAISS ``IndexFlatIP`` over L2-normalized sentence embeddings: inner product is cosine
similarity, and the search is exact (no approximation), from a hundred chunks to millions. It is cached in
``$EVALKIT_CACHE_DIR/rag/<key>/`` (default ``~/.cache/evalkit``), where the key is the sha256 of the documents
(names and contents), the chunking settings and the embedding model's files: a change to any of them builds
a new index; anything else reuses it, across runs and systems. The cache is written atomically (a temporary
directory renamed into place), so an interrupted build leaves nothing half-written.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from evalkit.errors import UsageError
from evalkit.jsonl import dumps, split_lines
from evalkit.rag.documents import Chunk, chunk_documents, document_files, load_documents

DEFAULT_RAG_TEMPLATE = """Answer the question using the context below. If the context does not contain the answer, \
say that you don't know.

Context:
$context

Question: $question
Answer:"""
INDEX_VERSION = 1


@dataclass(frozen=True)
class RetrieverSpec:
    """How a RAG system finds its context (the ``retriever:`` block of a compare config)."""

    documents: str
    top_k: int = 3
    chunk_size: int = 400
    chunk_overlap: int = 50
    embedding_model: str | None = None  # None/"minilm": all-MiniLM-L6-v2 shipped offline; or a local directory
    prompt_template: str | None = None  # with $context and $question; default DEFAULT_RAG_TEMPLATE

    @property
    def template(self) -> str:
        return self.prompt_template or DEFAULT_RAG_TEMPLATE

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_retriever(spec: RetrieverSpec) -> None:
    """Everything that can be checked without loading a model (exit 2 on a problem)."""
    from evalkit.data.prompts import require_fields
    from evalkit.embeddings import resolve_embedding_model

    if spec.top_k < 1:
        raise UsageError(f"retriever top_k {spec.top_k}: expected at least 1")
    if spec.chunk_size < 50:
        raise UsageError(f"retriever chunk_size {spec.chunk_size}: expected at least 50 characters")
    if not 0 <= spec.chunk_overlap < spec.chunk_size:
        raise UsageError(f"retriever chunk_overlap {spec.chunk_overlap}: expected 0 <= overlap < chunk_size "
                         f"({spec.chunk_size})")
    require_fields(spec.template, ("context", "question"), "the RAG prompt_template")
    document_files(spec.documents)
    resolve_embedding_model(spec.embedding_model)


@dataclass(frozen=True)
class Retrieved:
    chunk: Chunk
    score: float
    rank: int

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "id": self.chunk.id, "document": self.chunk.document,
                "score": round(self.score, 6), "text": self.chunk.text}


class Retriever:
    def __init__(self, spec: RetrieverSpec, device: str = "auto", progress: bool = True):
        from evalkit.data.dataset import dataset_sha256
        from evalkit.embeddings import get_embedder
        from evalkit.hashing import fingerprint

        check_retriever(spec)
        self.spec = spec
        self.embedder = get_embedder(spec.embedding_model, device)
        self.documents_sha256 = dataset_sha256(Path(spec.documents))
        self.key = fingerprint({"version": INDEX_VERSION, "documents": self.documents_sha256,
                                "chunk_size": spec.chunk_size, "chunk_overlap": spec.chunk_overlap,
                                "embedding_model": self.embedder.fingerprint()})
        self.built_s: float | None = None  # seconds spent building (None: loaded from the cache)
        self.chunks, self.index = self._load_or_build(progress)

    @property
    def cache_path(self) -> Path:
        from evalkit.cachedir import cache_dir

        return cache_dir() / "rag" / self.key[:32]

    def _load_or_build(self, progress: bool) -> tuple[list[Chunk], Any]:
        import faiss

        path = self.cache_path
        if (path / "meta.json").is_file():
            try:
                chunks = [Chunk(**json.loads(line)) for _, line in
                          split_lines((path / "chunks.jsonl").read_text(encoding="utf-8"))]
                index = faiss.read_index(str(path / "index.faiss"))
                if index.ntotal == len(chunks):
                    return chunks, index
            except (OSError, ValueError, TypeError, RuntimeError):
                pass  # a damaged cache entry is rebuilt
        start = time.perf_counter()
        chunks = chunk_documents(load_documents(self.spec.documents), self.spec.chunk_size, self.spec.chunk_overlap)
        vectors = self.embedder.encode([c.text for c in chunks], progress=progress, desc="Indexing documents")
        index = faiss.IndexFlatIP(self.embedder.dimension)
        index.add(vectors)
        self.built_s = round(time.perf_counter() - start, 3)
        self._save(path, chunks, index)
        return chunks, index

    def _save(self, path: Path, chunks: list[Chunk], index: Any) -> None:
        import faiss

        path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".building-", dir=path.parent))
        try:
            faiss.write_index(index, str(staging / "index.faiss"))
            (staging / "chunks.jsonl").write_text(
                "".join(dumps(c.to_dict()) + "\n" for c in chunks), encoding="utf-8")
            meta = {**self.describe(), "chunks": len(chunks)}
            (staging / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
            if path.exists():
                shutil.rmtree(path, ignore_errors=True)
            os.replace(staging, path)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)  # no cache: the next run builds again

    def search(self, questions: list[str], top_k: int | None = None) -> list[list[Retrieved]]:
        k = min(top_k or self.spec.top_k, len(self.chunks))
        vectors = self.embedder.encode(questions)
        scores, ids = self.index.search(vectors, k)
        return [[Retrieved(self.chunks[int(i)], float(s), rank + 1) for rank, (s, i) in enumerate(zip(row_s, row_i,
                                                                                                       strict=True))
                 if i >= 0] for row_s, row_i in zip(scores, ids, strict=True)]

    def describe(self) -> dict[str, Any]:
        return {"documents": str(self.spec.documents), "documents_sha256": self.documents_sha256,
                "chunks": len(getattr(self, "chunks", ())), "top_k": self.spec.top_k,
                "chunk_size": self.spec.chunk_size, "chunk_overlap": self.spec.chunk_overlap,
                "embedding_model": self.embedder.name, "embedding_model_sha256": self.embedder.fingerprint(),
                "index": "faiss IndexFlatIP (exact cosine)", "index_key": self.key,
                "prompt_template": self.spec.template}


def render_context(retrieved: list[Retrieved]) -> str:
    """The retrieved chunks as the prompt's ``$context``: numbered, with their document."""
    return "\n\n".join(f"[{r.rank}] ({r.chunk.document}) {r.chunk.text}" for r in retrieved)
