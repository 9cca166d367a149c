"""Ray plumbing shared by everything that runs on a Ray cluster: where to connect, and pools of actors.

An :class:`ActorPool` holds ``settings.workers`` copies of one object (a runner, a metric, an ACR searcher),
each built once inside its own Ray actor with its share of CPUs and GPUs. Actors are restarted when they die
and the call in flight on a dead actor is run again (``max_restarts``/``max_task_retries``), so a lost worker
costs only time. The driver keeps the data path and writes every result itself as it returns: Ray moves work,
evalkit's files stay the single source of truth.

Ray is imported only here and in the modules built on it, and only with ``--ray``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from evalkit.errors import UsageError

IN_FLIGHT_PER_ACTOR = 2  # unordered maps keep this many items queued on each actor: no idle gap between items
# A call whose worker died is run again this many times; an item that kills every worker it lands on (one that
# runs the machine out of memory) then fails the run, with everything finished before it kept.
RETRIES_AFTER_A_LOST_WORKER = 3


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

    @property
    def threads(self) -> int:
        """Torch threads per actor: its CPU share (oversubscribed threads stall on small machines)."""
        return max(1, int(self.cpus_per_worker))

    def to_dict(self) -> dict[str, Any]:
        return {"address": self.address or "local", "workers": self.workers, "cpus_per_worker": self.cpus_per_worker,
                "gpus_per_worker": self.gpus_per_worker}


def connect(settings: RaySettings) -> Any:
    """``ray``, connected: the running instance of this process, else the cluster at the address, else a new
    local instance (dashboard off, a bounded object store)."""
    from evalkit.extras import require

    require(("ray",), "ray", "--ray")
    import ray

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # workers are forked after tokenizers ran
    if not ray.is_initialized():
        import logging

        quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
        if settings.address:
            ray.init(address=settings.address, **quiet)
        else:
            ray.init(object_store_memory=settings.object_store_memory, **quiet)
    return ray


def check_cluster(settings: RaySettings) -> None:
    """Connect, and refuse settings whose pools this cluster can never hold (before any model loads)."""
    settings.check()
    ray = connect(settings)
    _check_fits(ray.cluster_resources(), settings.workers, settings.cpus_per_worker, settings.gpus_per_worker)


def _check_fits(cluster: dict[str, float], workers: int, cpus: float, gpus: float) -> None:
    """Refuse a pool the cluster can never hold: its actors would wait for resources forever."""
    for name, each, flag in (("CPU", cpus, "--ray-cpus-per-worker"), ("GPU", gpus, "--ray-gpus-per-worker")):
        have = float(cluster.get(name, 0.0))
        if each * workers > have + 1e-9:
            raise UsageError(f"{workers} Ray workers x {each:g} {name}s ({flag}) need {each * workers:g} {name}s; the "
                             f"Ray cluster has {have:g}: lower --ray-workers or {flag}")


class _Hosted:
    """One object built inside a Ray actor; its methods are called by name."""

    def __init__(self, factory: Any, args: tuple[Any, ...], threads: int) -> None:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        try:
            import torch
        except ImportError:
            pass
        else:
            torch.set_num_threads(threads)
        self.obj = factory(*args)

    def call(self, method: str, *args: Any) -> Any:
        return getattr(self.obj, method)(*args)

    def pid(self) -> int:
        return os.getpid()


class ActorPool:
    """``settings.workers`` actors, each holding ``factory(*args)``. ``concurrency`` > 1 lets one actor run
    that many calls at once on threads (remote runners, whose calls wait on the network)."""

    def __init__(self, factory: Any, args: tuple[Any, ...], settings: RaySettings, *, concurrency: int = 1,
                 cpus: float | None = None) -> None:
        settings.check()
        self.settings = settings
        ray = connect(settings)
        cpus = settings.cpus_per_worker if cpus is None else cpus
        _check_fits(ray.cluster_resources(), settings.workers, cpus, settings.gpus_per_worker)
        options: dict[str, Any] = {"num_cpus": cpus, "num_gpus": settings.gpus_per_worker, "max_restarts": -1,
                                   "max_task_retries": RETRIES_AFTER_A_LOST_WORKER}
        if concurrency > 1:
            options["max_concurrency"] = concurrency
        remote = ray.remote(**options)(_Hosted)
        self.actors = [remote.remote(factory, args, settings.threads) for _ in range(settings.workers)]

    def on_each(self, method: str, *args: Any) -> list[Any]:
        """``method(*args)`` on every actor; their answers in actor order."""
        import ray

        return ray.get([actor.call.remote(method, *args) for actor in self.actors])

    def map_shares(self, method: str, items: Sequence[Any]) -> list[Any]:
        """``method(share)`` on one contiguous share of ``items`` per actor, at once; the answers (one list
        per share) joined in order."""
        import ray

        items = list(items)
        n = min(len(self.actors), len(items))
        if n == 0:
            return []
        size = -(-len(items) // n)
        shares = [items[i:i + size] for i in range(0, len(items), size)]
        refs = [actor.call.remote(method, share) for actor, share in zip(self.actors, shares, strict=False)]
        return [answer for part in ray.get(refs) for answer in part]

    def map_unordered(self, method: str, items: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        """``(index, method(item))`` for every item, as each finishes: one item per call, each actor kept
        busy with :data:`IN_FLIGHT_PER_ACTOR` queued items, so slow and fast items balance themselves."""
        import ray

        queue = list(enumerate(items))[::-1]
        pending: dict[Any, tuple[int, int]] = {}  # ref -> (item index, actor index)

        def submit(slot: int) -> None:
            index, item = queue.pop()
            pending[self.actors[slot].call.remote(method, item)] = (index, slot)

        for slot in range(len(self.actors)):
            for _ in range(IN_FLIGHT_PER_ACTOR):
                if queue:
                    submit(slot)
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            index, slot = pending.pop(ref)
            value = ray.get(ref)
            if queue:
                submit(slot)
            yield index, value

    def call_on(self, slot: int, method: str, *args: Any) -> Any:
        """``method(*args)`` on actor ``slot`` (modulo the pool size), waited for."""
        import ray

        return ray.get(self.actors[slot % len(self.actors)].call.remote(method, *args))

    def pids(self) -> list[int]:
        import ray

        return ray.get([actor.pid.remote() for actor in self.actors])

    def close(self) -> None:
        """Kill the actors (and free their models) now."""
        import ray

        for actor in self.actors:
            ray.kill(actor)
        self.actors = []

    def __enter__(self) -> ActorPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
