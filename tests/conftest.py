"""Shared fixtures. Real libraries and real (small, offline) models throughout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
NEWS = ROOT / "datasets" / "news_summaries.jsonl"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def news_records() -> list[dict]:
    return read_jsonl(NEWS)


@pytest.fixture(scope="session")
def minilm_dir() -> str:
    from evalkit.resources.models import minilm_model_dir

    return str(minilm_model_dir())


@pytest.fixture(scope="session")
def local_ray():
    """One small local Ray for the whole session: 2 CPUs, no dashboard, a bounded object store; always shut down.
    Tests that need it import Ray only through this fixture."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024 * 1024, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny():
    """(model, tokenizer): the small Llama trained in seconds to memorize a few quotes (tests/acr_models.py).

    One thread while a module uses it: on a shared 2-core machine, OpenMP threads spinning against other
    processes make tiny ops hundreds of times slower than a single thread.
    """
    import torch

    from tests.acr_models import build_tokenizer, train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    tokenizer = build_tokenizer()
    yield train(tokenizer), tokenizer
    torch.set_num_threads(threads)
