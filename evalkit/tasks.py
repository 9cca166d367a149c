"""Evaluation tasks: which fields, which default prompt and which metric families."""

from __future__ import annotations

from dataclasses import dataclass

from evalkit.registry import Registry


@dataclass(frozen=True)
class Task:
    name: str
    input_field: str
    target_field: str
    prompt_template: str
    metrics: tuple[str, ...]
    description: str = ""


TASKS: Registry = Registry("task")

TASKS.register("summarization")(Task(
    name="summarization",
    input_field="document",
    target_field="summary",
    prompt_template="Summarize the following text in one sentence: $model_input",
    metrics=("rouge", "meteor", "bertscore"),
    description="Summarization accuracy: ROUGE-1/2/L, METEOR and BERTScore against reference summaries.",
))

TASKS.register("qa")(Task(
    name="qa",
    input_field="question",
    target_field="answer",
    prompt_template="Answer the question in one or two sentences.\n\nQuestion: $model_input",
    metrics=("semantic_similarity", "rouge", "meteor", "bertscore", "refusal"),
    description="Question answering against reference answers: semantic similarity, ROUGE, METEOR, BERTScore "
                "and the refusal rate (add judge for an LLM judge, retrieval for RAG systems with gold passages).",
))
