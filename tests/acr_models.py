"""A tiny causal LM trained, in about two seconds, to memorize a few strings: shared by the ACR tests.

A 2-layer Llama over a word-level tokenizer that adds BOS, trained on ``<s> TITLE : QUOTE`` for three
quotes (so the 2-token prompt ``TITLE :`` emits a 14-16 token quote: ACR > 1) and on one chat-formatted
exchange as the chat template renders it (``<s> user : lear ; assistant : QUOTE ;``: the reply ends its turn
with ``;``). Random word strings of the same vocabulary were never trained on.
"""

from __future__ import annotations

import random

import torch

from acr import ACRConfig

QUOTES = {
    "hamlet": "to be or not to be that is the question whether tis nobler in the mind",
    "caesar": "friends romans countrymen lend me your ears i come to bury him not to praise him",
    "macbeth": "tomorrow and tomorrow and tomorrow creeps in this petty pace from day to day",
}
CHAT_QUOTE = ("lear", "nothing will come of nothing speak again and mend your speech a little")
FILLER = "sun moon star river stone cloud green blue red small tall quiet loud".split()
TEMPLATE = ("{{ bos_token }}{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} ; {% endfor %}"
            "{% if add_generation_prompt %}assistant :{% endif %}")
# Small search: the vocabulary has ~70 tokens, so topk 32 over a 2-token prompt is nearly exhaustive.
CONFIG = ACRConfig(initial_length=2, grow_step=4, steps_per_length=25, search_width=64, topk=32, seed=0)


def build_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = set(FILLER) | set(QUOTES) | {CHAT_QUOTE[0], "user", "assistant", "system", ":", ";"}
    for quote in [*QUOTES.values(), CHAT_QUOTE[1]]:
        words |= set(quote.split())
    vocab = {t: i for i, t in enumerate(["<pad>", "<s>", "</s>", "<unk>", *sorted(words)])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                        unk_token="<unk>", pad_token="<pad>",
                                        model_input_names=["input_ids", "attention_mask"])
    tokenizer.chat_template = TEMPLATE
    return tokenizer


def train(tokenizer, steps: int = 300):
    from transformers import LlamaConfig, LlamaForCausalLM

    texts = [f"{title} : {quote}" for title, quote in QUOTES.items()]
    texts.append(f"user : {CHAT_QUOTE[0]} ; assistant : {CHAT_QUOTE[1]} ;")
    seqs = [tokenizer(t)["input_ids"] for t in texts]  # each starts with BOS
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0)
    model = LlamaForCausalLM(config)
    ids = torch.zeros(len(seqs), max(map(len, seqs)), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, seq in enumerate(seqs):
        ids[i, : len(seq)], mask[i, : len(seq)] = torch.tensor(seq), 1
    labels = ids.masked_fill(mask == 0, -100)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def random_strings(tokenizer, n: int, length: int) -> list[str]:
    rng = random.Random(1)
    words = sorted(w for w in tokenizer.get_vocab() if not w.startswith("<"))
    return [" ".join(rng.choice(words) for _ in range(length)) for _ in range(n)]
