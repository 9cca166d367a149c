"""Generation on a Ray cluster: one runner as a pool of Ray actors, each holding its own copy of the model.

``evalkit run --ray [ADDRESS]``: the driver keeps the data path and the run store exactly as in a
single-process run (the executor hands the pool lists of requests, and every result is stored by the driver
the moment its list returns); the pool splits each list across its actors and returns the results in order.
The pool's identity and parameters are its runner's, so the store keys, the resume and the records are the
same as without Ray. An actor that dies is restarted by Ray and its in-flight list is run again
(``max_restarts``/``max_task_retries``): nothing is lost and nothing is stored twice.

Ray is imported only here, and this module only with ``--ray``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from evalkit.errors import UsageError
from evalkit.runners.base import Request, Result, Runner, RunnerOptions


@dataclass(frozen=True)
class RaySettings:
    """Where and how wide: ``address`` None starts a local Ray instance, ``"auto"`` joins a running cluster."""

    address: str | None = None
    workers: int = 2
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    object_store_memory: int | None = 256 * 1024 * 1024  # a local instance only (Ray's default takes 30% of RAM)

    def check(self) -> None:
        if self.workers < 1:
            raise UsageError(f"--ray-workers must be at least 1, got {self.workers}")
        if self.cpus_per_worker <= 0 or self.gpus_per_worker < 0:
            raise UsageError("--ray-cpus-per-worker must be above 0 and --ray-gpus-per-worker at least 0")

    def to_dict(self) -> dict[str, Any]:
        return {"address": self.address or "local", "workers": self.workers, "cpus_per_worker": self.cpus_per_worker,
                "gpus_per_worker": self.gpus_per_worker}


def check_spec(spec: str) -> None:
    """Only local models run as actor pools; a remote model is already concurrent from one process."""
    if not str(spec).startswith("hf:"):
        raise UsageError(f"--ray runs local models (hf:); {spec} is a remote model: raise --concurrency instead")


def connect(settings: RaySettings) -> Any:
    """``ray``, connected: the running instance of this process, else the cluster at the address, else a new
    local instance (dashboard off, a bounded object store)."""
    from evalkit.extras import require

    require(("ray",), "ray", "--ray")
    import os

    import ray

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # workers are forked after tokenizers ran
    if not ray.is_initialized():
        if settings.address:
            ray.init(address=settings.address, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(include_dashboard=False, log_to_driver=False,
                     object_store_memory=settings.object_store_memory)
    return ray


class _RunnerActor:
    """One copy of the runner, on a Ray worker."""

    def __init__(self, spec: str, options: RunnerOptions, threads: int) -> None:
        import torch

        from evalkit.runners.base import create_runner

        torch.set_num_threads(threads)  # the worker's CPU share: oversubscribed threads stall on small machines
        self.runner = create_runner(spec, options)

    def info(self) -> dict[str, Any]:
        return {"identity": self.runner.identity(), "params": self.runner.params(),
                "describe": self.runner.describe(), "batched": self.runner.batched}

    def call_batch(self, requests: Sequence[Request]) -> list[Result]:
        return self.runner.call_batch(requests)

    def pid(self) -> int:
        import os

        return os.getpid()


class RayPool(Runner):
    """``spec`` run as ``settings.workers`` Ray actors behind the ordinary runner interface."""

    batched = True

    def __init__(self, spec: str, options: RunnerOptions, settings: RaySettings) -> None:
        settings.check()
        check_spec(spec)
        self.spec, self.options, self.settings = spec, options, settings
        ray = connect(settings)
        actor = ray.remote(num_cpus=settings.cpus_per_worker, num_gpus=settings.gpus_per_worker,
                           max_restarts=-1, max_task_retries=-1)(_RunnerActor)
        threads = max(1, int(settings.cpus_per_worker))
        self.actors = [actor.remote(spec, options, threads) for _ in range(settings.workers)]
        infos = ray.get([a.info.remote() for a in self.actors])
        if any(i["identity"] != infos[0]["identity"] for i in infos):
            raise UsageError(f"{spec}: the Ray workers resolved different models (their files differ between "
                             "machines); give every worker the same model")
        self._info = infos[0]

    def identity(self) -> dict[str, Any]:
        return self._info["identity"]

    def params(self) -> dict[str, Any]:
        return self._info["params"]

    def describe(self) -> dict[str, Any]:
        return {**self._info["describe"], "ray": self.settings.to_dict()}

    def call_batch(self, requests: Sequence[Request]) -> list[Result]:
        """The requests split into one contiguous share per actor, run at once, returned in order."""
        import ray

        requests = list(requests)
        n = min(len(self.actors), len(requests))
        if n == 0:
            return []
        size = -(-len(requests) // n)
        shares = [requests[i:i + size] for i in range(0, len(requests), size)]
        refs = [actor.call_batch.remote(share) for actor, share in zip(self.actors, shares, strict=False)]
        return [result for part in ray.get(refs) for result in part]

    def close(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
