"""The command line: parses arguments and calls the library (``evalkit.cli.commands``; ``evalkit acr`` in
``evalkit.cli.acr``). Heavy imports stay inside the commands so ``evalkit --help`` starts fast."""

from evalkit.cli.commands import build_parser, main

__all__ = ["build_parser", "main"]
