"""Target files (every format, exact whitespace, located errors) and seeded random token strings."""

from __future__ import annotations

import json

import pytest

from acr import load_targets, random_token_strings
from evalkit.errors import InputError, UsageError


def test_txt_one_target_per_line_blank_lines_skipped(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("first target\n\n   \nsecond  target with  spaces\r\nthird\n", encoding="utf-8")
    assert load_targets(path) == ["first target", "second  target with  spaces", "third"]


def test_json_list_keeps_whitespace_exactly(tmp_path):
    targets = ["  leading spaces", "trailing newline\n", "tab\tinside", "multi\nline"]
    path = tmp_path / "t.json"
    path.write_text(json.dumps(targets), encoding="utf-8")
    assert load_targets(path) == targets


def test_jsonl_reads_the_named_field(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "a quote", "id": 1}\n\n{"text": " spaced ", "id": 2}\n', encoding="utf-8")
    assert load_targets(path) == ["a quote", " spaced "]
    other = tmp_path / "o.jsonl"
    other.write_text('{"quote": "x y"}\n', encoding="utf-8")
    assert load_targets(other, target_field="quote") == ["x y"]


@pytest.mark.parametrize(
    ("name", "content", "line", "field", "message"),
    [
        ("empty.jsonl", '{"text": "ok"}\n{"text": ""}\n', 2, "text", "empty target"),
        ("type.jsonl", '{"text": "ok"}\n{"text": 5}\n', 2, "text", "must be a string"),
        ("missing.jsonl", '{"text": "ok"}\n\n{"body": "x"}\n', 3, "text", "missing target field"),
        ("bad.jsonl", '{"text": "ok"}\n{"text": \n', 2, None, "invalid JSON"),
        ("notobj.jsonl", '["a"]\n', 1, None, "expected a JSON object"),
        ("item.json", '["ok", 3]', None, "[1]", "must be a string"),
        ("blank.json", '["ok", "  "]', None, "[1]", "empty target"),
        ("dict.json", '{"text": "x"}', None, None, "list of strings"),
        ("broken.json", '[\n"a",\n', 3, None, "invalid JSON"),
        ("none.txt", "\n\n", None, None, "no targets"),
        ("t.csv", "a,b\n", None, None, "unknown target file type"),
    ],
)
def test_errors_name_file_line_and_field(tmp_path, name, content, line, field, message):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=message) as info:
        load_targets(path)
    error = info.value
    assert error.path == str(path) and error.line == line and error.field == field
    assert str(path) in str(error)


def test_binary_and_undecodable_files_are_input_errors(tmp_path):
    binary = tmp_path / "b.txt"
    binary.write_bytes(b"abc\x00\x01\x02")
    with pytest.raises(InputError, match="not a text file"):
        load_targets(binary)
    latin = tmp_path / "l.jsonl"
    latin.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(InputError, match="not UTF-8") as info:
        load_targets(latin)
    assert info.value.line == 2
    with pytest.raises(InputError, match="file not found"):
        load_targets(tmp_path / "absent.txt")


@pytest.fixture(scope="module")
def bpe_tokenizer():
    """A real byte-level BPE tokenizer trained here on a few sentences (milliseconds): random ids drawn
    from it often do not survive decode/encode, which is what the stability filter is for."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = ["the quick brown fox jumps over the lazy dog", "to be or not to be that is the question",
              "a stitch in time saves nine", "all that glitters is not gold", "brevity is the soul of wit"] * 20
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "</s>"],
                                                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>")


def test_random_token_strings_are_seeded_and_stable(bpe_tokenizer):
    strings = random_token_strings(bpe_tokenizer, 5, 8, seed=3)
    assert len(strings) == 5 and len(set(strings)) == 5
    assert strings == random_token_strings(bpe_tokenizer, 5, 8, seed=3)
    assert strings != random_token_strings(bpe_tokenizer, 5, 8, seed=4)
    for text in strings:
        ids = bpe_tokenizer(text, add_special_tokens=False)["input_ids"]
        assert len(ids) == 8 and bpe_tokenizer.decode(ids) == text
        assert not set(ids) & set(bpe_tokenizer.all_special_ids)
    with pytest.raises(UsageError):
        random_token_strings(bpe_tokenizer, 1, 0)
