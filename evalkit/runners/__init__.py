"""Model runners behind one interface, found by the prefix of a model spec (``hf:smollm2``)."""

from evalkit.runners.base import RUNNERS, Runner, RunnerOptions, create_runner

__all__ = ["RUNNERS", "Runner", "RunnerOptions", "create_runner"]
