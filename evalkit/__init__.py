"""evalkit: evaluate large language models offline and audit what they memorized.

Notebook entry points are imported lazily so that ``import evalkit`` (and ``evalkit --help``) stay fast.
"""

__version__ = "0.1.0"

__all__ = ["evaluate_summarization", "load_run", "RunResult", "__version__"]


def __getattr__(name: str):
    if name == "evaluate_summarization":
        from evalkit.api import evaluate_summarization

        return evaluate_summarization
    if name in {"load_run", "RunResult"}:
        from evalkit import results

        return getattr(results, name)
    raise AttributeError(f"module 'evalkit' has no attribute {name!r}")
