"""evalkit: evaluate large language models offline and audit what they memorized.

Notebook entry points are imported lazily so that ``import evalkit`` (and ``evalkit --help``) stay fast.
"""

__version__ = "0.1.0"

__all__ = ["evaluate_summarization", "evaluate_qa", "evaluate_task", "compare_systems", "load_run", "RunResult",
           "__version__"]


def __getattr__(name: str):
    if name in {"evaluate_summarization", "evaluate_qa", "evaluate_task"}:
        from evalkit import api

        return getattr(api, name)
    if name == "compare_systems":
        from evalkit.compare.run import compare_systems

        return compare_systems
    if name in {"load_run", "RunResult"}:
        from evalkit import results

        return getattr(results, name)
    raise AttributeError(f"module 'evalkit' has no attribute {name!r}")
