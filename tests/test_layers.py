"""The layers stay layers: acr/ depends only on evalkit's small core, the report finds its ACR section without
importing acr, and no import (at module level or inside a function) makes two layers depend on each other."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = {"errors", "jsonl", "statistics", "atomic", "hashing", "lm", "progress", "plots", "cachedir"}


def _imports(package: str) -> dict[str, set[str]]:
    """module path -> every module it imports (absolute, resolved from relative ones)."""
    found: dict[str, set[str]] = {}
    for file in sorted((ROOT / package).rglob("*.py")):
        module = ".".join(file.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        names: set[str] = set()
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = module.split(".")[: len(module.split(".")) - node.level + (file.name == "__init__.py")]
                    base = ".".join([*parent, base] if base else parent)
                names.add(base)
        found[module] = names
    return found


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if parts[0] == "evalkit" and len(parts) > 1 else parts[0]


def test_acr_depends_only_on_the_core():
    for module, names in _imports("acr").items():
        used = {n.split(".")[1] for n in names if n.startswith("evalkit.")}
        assert used <= CORE, f"{module} imports evalkit.{sorted(used - CORE)}"


def test_only_the_acr_command_imports_acr():
    for module, names in _imports("evalkit").items():
        if any(n == "acr" or n.startswith("acr.") for n in names):
            assert module == "evalkit.cli.acr", f"{module} imports acr"


def test_no_two_layers_import_each_other():
    graph: dict[str, set[str]] = {}
    for module, names in _imports("evalkit").items():
        layer = _layer(module)
        graph.setdefault(layer, set()).update(
            _layer(n) for n in names if n.startswith("evalkit.") and _layer(n) != layer)
    cycles = sorted((a, b) for a in graph for b in graph[a] if a < b and a in graph.get(b, set()))
    assert not cycles, f"layers importing each other: {cycles}"
