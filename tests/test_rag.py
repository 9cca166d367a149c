"""RAG built in: documents, chunking, the cached exact index, retrieval metrics; dataset gold and human
fields; the judge's agreement statistics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evalkit.errors import InputError, UsageError
from evalkit.rag.documents import chunk_documents, load_documents, markdown_sections, split_text
from evalkit.rag.retriever import Retriever, RetrieverSpec, check_retriever
from evalkit.scoring.base import Item
from evalkit.scoring.retrieval import Retrieval
from tests.helpers import write_jsonl

KB = {
    "warranty.md": "# Warranty\nThe Lumen X200 has a two-year limited warranty.\n\n## Claims\n"
                   "Email support@lumen.example with the order number to claim.\n",
    "ports.md": "# Ports\nThe Orbit dock has two USB-C ports, one HDMI port and an SD card reader.\n",
    "notes.txt": "Batteries should be stored at room temperature, away from direct sunlight.",
    "faq/shipping.jsonl": json.dumps({"id": "eu", "title": "Shipping", "text": "EU orders ship in 3-5 days."}) + "\n",
}


@pytest.fixture()
def kb(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("EVALKIT_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "kb"
    for name, text in KB.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_split_text_respects_size_and_prefers_sentence_boundaries():
    text = " ".join(f"Sentence number {i} says something about topic {i}." for i in range(40))
    pieces = split_text(text, 200, 60)
    assert all(len(p) <= 200 for p in pieces) and len(pieces) > 5
    assert all(p.endswith(".") for p in pieces)  # cut after a sentence, never inside one
    assert any(a.split(". ")[-1] in b for a, b in zip(pieces, pieces[1:], strict=False))  # overlap carries over
    assert "".join(pieces).count("Sentence number 39") >= 1
    assert split_text("x" * 250, 100, 0) == ["x" * 100, "x" * 100, "x" * 50]  # no boundary: characters


def test_markdown_chunks_carry_their_heading_path_and_code_is_not_a_heading():
    sections = markdown_sections("# A\nintro\n## B\nbody\n```\n# comment in code\n```\n# C\nc")
    assert [h for h, _ in sections] == ["A", "A > B", "C"] and "# comment in code" in sections[1][1]


def test_documents_of_every_kind_load_with_stable_ids(kb):
    documents = load_documents(kb)
    assert [d.id for d in documents] == ["faq/shipping.jsonl#eu", "notes.txt", "ports.md", "warranty.md"]
    chunks = chunk_documents(documents, 400, 50)
    assert "warranty.md#1" in [c.id for c in chunks]
    claims = next(c for c in chunks if c.id == "warranty.md#1")
    assert claims.text.startswith("Warranty > Claims\n")
    assert next(c for c in chunks if c.document == "faq/shipping.jsonl#eu").text.startswith("Shipping\n")


@pytest.mark.parametrize("setup, message", [
    (lambda root: None, "documents directory not found"),
    (lambda root: (root.mkdir(), (root / "a.pdf").write_bytes(b"%PDF")), "unsupported document type '.pdf'"),
    (lambda root: (root.mkdir(), (root / "a.jsonl").write_text('{"text": "ok"}\n{"txt": "x"}\n')),
     r"a.jsonl:2: missing or empty \(field 'text'\)"),
    (lambda root: (root.mkdir(), (root / "a.jsonl").write_text('{"id": 1, "text": "a"}\n{"id": 1, "text": "b"}\n')),
     "duplicate id '1'"),
    (lambda root: root.mkdir(), "holds no .txt, .md or .jsonl file"),
])
def test_bad_documents_are_refused_naming_the_file(tmp_path, setup, message):
    root = tmp_path / "docs"
    setup(root)
    with pytest.raises(InputError, match=message) as info:
        load_documents(root)
    assert info.value.exit_code == 2 and str(root) in str(info.value)


def test_retrieval_is_exact_cosine_top_k_and_the_index_is_built_once(kb):
    from sentence_transformers import SentenceTransformer

    from evalkit.resources.models import minilm_model_dir

    spec = RetrieverSpec(str(kb), top_k=3, chunk_size=200, chunk_overlap=20)
    first = Retriever(spec, device="cpu", progress=False)
    assert first.built_s is not None and (first.cache_path / "index.faiss").is_file()
    questions = ["Which ports does the dock have?", "How long is the warranty?", "How do I store batteries?"]
    found = first.search(questions)
    model = SentenceTransformer(str(minilm_model_dir()), device="cpu")
    chunk_vectors = model.encode([c.text for c in first.chunks], normalize_embeddings=True)
    for question, hits in zip(questions, found, strict=True):
        cosine = chunk_vectors @ model.encode(question, normalize_embeddings=True)
        expected = [first.chunks[i].id for i in np.argsort(-cosine)[:3]]
        assert [h.chunk.id for h in hits] == expected
        assert [h.score for h in hits] == pytest.approx(sorted(cosine, reverse=True)[:3], abs=1e-5)
    assert [h[0].chunk.document for h in found] == ["ports.md", "warranty.md", "notes.txt"]
    again = Retriever(spec, device="cpu", progress=False)
    assert again.built_s is None and again.key == first.key  # reused from the cache
    (kb / "notes.txt").write_text("Batteries must be kept cool.")
    changed = Retriever(spec, device="cpu", progress=False)
    assert changed.built_s is not None and changed.key != first.key  # documents changed: rebuilt
    other = Retriever(RetrieverSpec(str(kb), chunk_size=100, chunk_overlap=0), device="cpu", progress=False)
    assert other.key != changed.key


@pytest.mark.parametrize("spec, message", [
    (dict(top_k=0), "top_k"), (dict(chunk_overlap=400), "chunk_overlap"), (dict(chunk_size=10), "chunk_size"),
    (dict(prompt_template="Q: $question"), r"\$context"), (dict(embedding_model="/no/such/model"), "embedding model"),
])
def test_bad_retriever_settings_are_refused_before_anything_loads(kb, spec, message):
    from evalkit.errors import ResourceMissingError

    with pytest.raises((UsageError, InputError, ResourceMissingError), match=message):
        check_retriever(RetrieverSpec(str(kb), **spec))


def test_recall_at_k_and_reciprocal_rank_against_gold_documents_chunks_and_passages():
    ids = ("ports.md#0", "warranty.md#1", "warranty.md#0")
    texts = ("The Orbit dock has two USB-C ports.", "Warranty > Claims\nEmail support to claim.",
             "The Lumen X200 has a two-year limited warranty.")
    items = [Item("a", context=texts, context_ids=ids, gold=("warranty.md",)),
             Item("a", context=texts, context_ids=ids, gold=("ports.md#0", "notes.txt")),
             Item("a", context=texts, context_ids=ids, gold=("the lumen x200 has a TWO-YEAR limited warranty",)),
             Item("a", context=texts, context_ids=ids, gold=("notes.txt",)),
             Item("a", gold=("x",))]
    scores = Retrieval().score_items(items)
    assert [s.value for s in scores["retrieval_recall"][:4]] == [1.0, 0.5, 1.0, 0.0]
    assert [s.value for s in scores["retrieval_mrr"][:4]] == [0.5, 1.0, pytest.approx(1 / 3), 0.0]
    assert "no retrieved context" in scores["retrieval_recall"][4].error


def test_gold_and_human_score_fields_are_read_or_refused_by_line_and_field(tmp_path):
    from evalkit.data.dataset import DatasetSpec, load_dataset

    rows = [{"id": 1, "q": "a?", "a": "b", "gold": ["x.md", "y.md"], "rating": 4},
            {"id": 2, "q": "c?", "a": "d", "gold": "z.md", "rating": "3.5"},
            {"id": 3, "q": "e?", "a": "f", "gold": "z.md", "rating": None}]
    spec = DatasetSpec(str(write_jsonl(tmp_path / "ok.jsonl", rows)), input_field="q", target_field="a",
                       gold_field="gold", human_score_field="rating")
    samples = load_dataset(spec, progress=False).samples
    assert [s.gold for s in samples] == [("x.md", "y.md"), ("z.md",), ("z.md",)]
    assert [s.human_score for s in samples] == [4.0, 3.5, None]
    for bad, field, message in (({"gold": []}, "gold", "non-empty list"), ({"rating": "good"}, "rating", "number"),
                                ({"gold": None}, "gold", "got nothing")):
        broken = [rows[0], {**rows[1], **bad}]
        path = write_jsonl(tmp_path / "bad.jsonl", broken)
        with pytest.raises(InputError, match=message) as info:
            load_dataset(DatasetSpec(str(path), input_field="q", target_field="a", gold_field="gold",
                                     human_score_field="rating"), progress=False)
        assert info.value.line == 2 and info.value.field == field


def test_agreement_is_spearman_and_quadratic_weighted_kappa():
    from scipy.stats import spearmanr

    from evalkit.statistics.agreement import agreement

    judge = [5, 4, 3.5, 2, 1, 0, 5, None]
    human = [5, 4, 3, 2, 2, 1, 4, 3]
    result = agreement(judge, human)
    assert result.n == 7
    assert result.spearman == pytest.approx(spearmanr(judge[:7], human[:7]).statistic)
    rounded_judge, rounded_human = np.rint(judge[:7]).astype(int), np.array(human[:7])
    cats = sorted(set(rounded_judge) | set(rounded_human))
    observed = np.zeros((len(cats), len(cats)))
    for a, b in zip(rounded_judge, rounded_human, strict=True):
        observed[cats.index(a), cats.index(b)] += 1
    observed /= observed.sum()
    expected = np.outer(observed.sum(1), observed.sum(0))
    weights = (np.array(cats)[:, None] - np.array(cats)[None, :]) ** 2
    assert result.weighted_kappa == pytest.approx(1 - (weights * observed).sum() / (weights * expected).sum())
    assert agreement([1, 2], [1, 2]).spearman is None  # too few pairs: no statistic, not a guess


def test_line_and_paragraph_separators_inside_documents_are_text_not_line_breaks(tmp_path, monkeypatch):
    """U+2028, U+2029 and U+0085 inside a JSONL string or a markdown line stay in the text: JSONL lines and
    markdown lines end at \\n only, and the index cache reads its chunks back (not rebuilt every time)."""
    monkeypatch.setenv("EVALKIT_CACHE_DIR", str(tmp_path / "cache"))
    kb = tmp_path / "kb"
    kb.mkdir()
    odd = "first\u2028second\u2029third\u0085fourth"
    write_jsonl(kb / "faq.jsonl", [{"id": "a", "text": f"The dock is black. {odd}"}, {"id": "b", "text": "Port 8443."}])
    (kb / "page.md").write_text(f"# Title {odd}\n\nBody {odd} ends here.\n", encoding="utf-8")
    documents = {d.id: d for d in load_documents(kb)}
    assert set(documents) == {"faq.jsonl#a", "faq.jsonl#b", "page.md"}
    assert odd in documents["faq.jsonl#a"].text and documents["page.md"].title == f"Title {odd}"
    assert markdown_sections(documents["page.md"].text) == [(f"Title {odd}", f"Body {odd} ends here.")]
    spec = RetrieverSpec(str(kb), top_k=1, chunk_size=200, chunk_overlap=0)
    first = Retriever(spec, device="cpu", progress=False)
    again = Retriever(spec, device="cpu", progress=False)
    assert again.built_s is None and [c.text for c in again.chunks] == [c.text for c in first.chunks]
    assert any(odd in c.text for c in again.chunks)
