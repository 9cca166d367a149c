"""Prompt templates with fmeval's ``$model_input`` placeholder."""

from __future__ import annotations

from evalkit.errors import UsageError

PLACEHOLDER = "$model_input"


def validate_template(template: str) -> str:
    if PLACEHOLDER not in template:
        raise UsageError(f"--prompt-template must contain {PLACEHOLDER} (where the record's input goes); "
                         f"got {template!r}")
    return template


def render_prompt(template: str, model_input: str) -> str:
    # Plain replacement, as fmeval does: other `$` signs and braces in the template stay literal.
    return template.replace(PLACEHOLDER, model_input)
