"""Small helpers shared by tests."""

from __future__ import annotations

import json
from pathlib import Path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def build_tiny_causal_lm(directory: Path, *, seed: int = 0, chat_template: bool = False) -> Path:
    """A randomly initialised 2-layer Llama with a word-level tokenizer, saved as a local HF model.

    Right for testing mechanics (loading, batching, padding, stopping); says nothing about quality.
    """
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = ["the", "a", "of", "to", "in", "and", "council", "city", "said", "on", "for", "new", "with", "by",
             "was", "is", "at", "from", "year", "summary", "text", "one", "sentence", "following", "people",
             "water", "bridge", "school", "team", "won", "match", "report", "police", "court", "river", "train",
             "station", "hospital", "museum", "festival", "market"]
    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {tok: i for i, tok in enumerate(specials + sorted(set(words)) + list(".,:;!?'\""))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                     pre_tokenizers.Punctuation()])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                        unk_token="<unk>", pad_token="<pad>",
                                        model_input_names=["input_ids", "attention_mask"])
    if chat_template:
        tokenizer.chat_template = ("{% for m in messages %}<s> {{ m['content'] }} </s>{% endfor %}"
                                   "{% if add_generation_prompt %} summary :{% endif %}")
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=True)
    model = LlamaForCausalLM(config).eval()
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


class SlowEcho:
    """A Ray actor's object for pool tests: ``work(x)`` returns ``(x * 2, pid)`` after a short pause."""

    def __init__(self, pause_s: float = 0.2) -> None:
        self.pause_s = pause_s

    def work(self, x: int) -> tuple[int, int]:
        import os
        import time

        time.sleep(self.pause_s)
        return x * 2, os.getpid()


def scored_outputs(news_records: list[dict], n: int) -> list[dict]:
    """``n`` records with a reference summary and an output to score (a cut of the document, of varying length)."""
    rows = []
    for i in range(n):
        record = news_records[i % len(news_records)]
        words = record["document"].split()
        rows.append({"id": f"s{i:04d}", "document": record["document"], "summary": record["summary"],
                     "output": " ".join(words[i % 7: i % 7 + 20 + i % 23])})
    return rows


def jsonl_lines(path: Path) -> list[str]:
    """The lines of a JSONL file, each with its ``\\n``, split at ``\\n`` only (as evalkit reads them: U+2028,
    U+2029 and U+0085 are text inside a JSON string, not line breaks)."""
    from evalkit.jsonl import split_lines

    return [f"{line}\n" for _, line in split_lines(Path(path).read_text(encoding="utf-8")) if line.strip()]


def read_jsonl(path: Path) -> list[dict]:
    """Every row of a JSONL file (see :func:`jsonl_lines`)."""
    return [json.loads(line) for line in jsonl_lines(path)]
