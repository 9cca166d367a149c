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


def render_fields(template: str, values: dict[str, str]) -> str:
    """Replace ``$name`` for every name in ``values`` in one pass: text put in (a model's answer, a retrieved
    passage) is never scanned for placeholders itself, and other ``$`` signs stay literal."""
    import re

    if not values:
        return template
    names = "|".join(re.escape(n) for n in sorted(values, key=len, reverse=True))
    return re.sub(rf"\$({names})(?![A-Za-z0-9_])", lambda m: values[m.group(1)], template)


def require_fields(template: str, names: tuple[str, ...], what: str) -> str:
    """A UsageError unless ``template`` holds every ``$name``."""
    missing = [f"${n}" for n in names if f"${n}" not in template]
    if missing:
        raise UsageError(f"{what} must contain {', '.join(missing)}; got {template!r}")
    return template
