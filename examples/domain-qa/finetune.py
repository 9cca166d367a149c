"""Fine-tune SmolLM2-135M-Instruct on the Tidewater knowledge base with LoRA (peft), on CPU, in minutes.

The training data is the knowledge base itself, in chat form: for every section of every page, the user asks
what the documentation says about that section and the assistant answers with the section's text. The
evaluation questions (questions.jsonl) are never seen in training. The loss is on the assistant's tokens only.

The adapter is saved to ``checkpoints/lora`` (not committed) with ``base_model_name_or_path: smollm2``, so
``hf:checkpoints/lora`` in config.yaml loads SmolLM2 and applies it (evalkit merges the adapter on load).

    python finetune.py [--epochs 4] [--output checkpoints/lora] [--max-steps N]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is local: never wait on the hub

HERE = Path(__file__).resolve().parent


def training_examples(kb: Path) -> list[tuple[str, str]]:
    """(question, answer) pairs from the knowledge base's sections."""
    from evalkit.rag.documents import load_documents, markdown_sections

    examples = []
    for document in load_documents(kb):
        sections = markdown_sections(document.text)
        title = document.title or document.id
        for heading, body in sections:
            if not body:
                continue
            topic = heading.replace(" > ", ", ") or title
            examples.append((f"What does the Tidewater documentation say about {topic}?", body))
        whole = "\n\n".join(body for _, body in sections if body)
        examples.append((f"Tell me everything about {title} in Tidewater.", whole))
    return examples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kb", type=Path, default=HERE / "kb")
    parser.add_argument("--output", type=Path, default=HERE / "checkpoints" / "lora")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=384)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from evalkit.resources.models import resolve_model_alias

    hf_logging.set_verbosity_error()
    torch.manual_seed(args.seed)
    source = resolve_model_alias("smollm2")
    tokenizer = AutoTokenizer.from_pretrained(source["path"], gguf_file=source["gguf_file"], local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(source["path"], gguf_file=source["gguf_file"],
                                                 torch_dtype=torch.float32, local_files_only=True)
    model = get_peft_model(model, LoraConfig(
        r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.0, task_type="CAUSAL_LM",
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token

    def encode(question: str, answer: str) -> tuple[list[int], list[int]]:
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                               add_generation_prompt=True)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(answer + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
        ids = (prompt_ids + answer_ids)[:args.max_length]
        labels = ([-100] * len(prompt_ids) + answer_ids)[:args.max_length]
        return ids, labels

    examples = [encode(q, a) for q, a in training_examples(args.kb)]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr)
    steps_per_epoch = -(-len(examples) // args.batch_size)
    total = steps_per_epoch * args.epochs if args.max_steps is None else min(args.max_steps,
                                                                               steps_per_epoch * args.epochs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / max(1, total))
    rng = random.Random(args.seed)
    model.train()
    step, started = 0, time.perf_counter()
    print(f"{len(examples)} training examples from {args.kb}; {total} steps of {args.batch_size}", flush=True)
    for epoch in range(args.epochs):
        order = list(range(len(examples)))
        rng.shuffle(order)
        losses = []
        for start in range(0, len(order), args.batch_size):
            if step >= total:
                break
            batch = [examples[i] for i in order[start:start + args.batch_size]]
            width = max(len(ids) for ids, _ in batch)
            input_ids = torch.tensor([ids + [tokenizer.pad_token_id] * (width - len(ids)) for ids, _ in batch])
            labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in batch])
            mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in batch])
            loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            losses.append(float(loss.detach()))
            step += 1
            if step == 1 or step % 10 == 0:
                print(f"  step {step}/{total}: loss {losses[-1]:.3f} ({time.perf_counter() - started:.0f} s)",
                      flush=True)
        if losses:
            print(f"epoch {epoch + 1}: mean loss {sum(losses) / len(losses):.3f} "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)
        if step >= total:
            break
    model.peft_config["default"].base_model_name_or_path = "smollm2"  # evalkit's offline alias
    args.output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.output, save_embedding_layers=False)
    (args.output / "training.json").write_text(json.dumps(
        {"examples": len(examples), "steps": step, "epochs": args.epochs, "lr": args.lr, "rank": args.rank,
         "seconds": round(time.perf_counter() - started, 1)}, indent=2))
    print(f"saved the adapter to {args.output} ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
