"""Generation on a Ray cluster: one runner as a pool of Ray actors, behind the ordinary runner interface.

``evalkit run --ray [ADDRESS]``: the driver keeps the data path and the run store exactly as in a
single-process run -- the executor decides what to call, retries, spaces every attempt under the rate limit
and stores each result the moment it returns; the pool only decides where a call runs.

- A local model (``hf:``) is a batched runner: each actor holds its own copy of the model, and every list
  the executor hands the pool (4 x batch size x workers requests) is split into one contiguous share per
  actor, run at once, returned in order.
- A remote model (Bedrock, SageMaker) is a concurrent runner: each call goes to the next actor, which runs
  up to ``concurrency`` calls at once on threads. Every attempt still starts in the driver's executor, so
  ``--max-rps`` is one limit for the whole cluster, and its retry policy is the only one. Each actor builds
  its own client from the standard AWS chain of the machine it runs on (an instance role on a cluster):
  credentials never travel through Ray.

The pool's identity and parameters are its runner's, so the store keys, the resume and the records are the
same as without Ray. An actor that dies is restarted by Ray and its in-flight call is run again: nothing is
lost and nothing is stored twice.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from evalkit.errors import UsageError
from evalkit.raycluster import ActorPool, RaySettings
from evalkit.runners.base import Request, Result, Runner, RunnerOptions


class RemoteCallError(Exception):
    """A call that failed inside an actor, already classified there by the runner (kind, message)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind, self.message = kind, message


class _HostedRunner:
    """The runner inside one actor."""

    def __init__(self, spec: str, options: RunnerOptions) -> None:
        from evalkit.runners.base import create_runner

        self.runner = create_runner(spec, options)

    def info(self) -> dict[str, Any]:
        r = self.runner
        return {"identity": r.identity(), "params": r.params(), "describe": r.describe(), "batched": r.batched,
                "default_concurrency": r.default_concurrency}

    def call_batch(self, requests: Sequence[Request]) -> list[Result]:
        return self.runner.call_batch(requests)

    def call(self, request: Request) -> tuple[Result | None, tuple[str, str] | None]:
        """The result, or the runner's classification of the error (exceptions of client libraries do not
        always survive pickling; their kind and message do)."""
        try:
            return self.runner.call(request), None
        except Exception as error:
            return None, self.runner.classify(error)


class RayPool(Runner):
    """``spec`` run as ``settings.workers`` Ray actors."""

    def __init__(self, spec: str, options: RunnerOptions, settings: RaySettings) -> None:
        settings.check()
        self.spec, self.options, self.settings = spec, options, settings
        self._given = options  # what each actor's runner gets (self.options is what the executor sees)
        self._pool: ActorPool | None = None
        self._start_lock = threading.Lock()
        infos = self.pool.on_each("info")
        if any(i["identity"] != infos[0]["identity"] for i in infos):
            raise UsageError(f"{spec}: the Ray workers resolved different models (their files or settings differ "
                             "between machines); give every worker the same model")
        self._info = infos[0]
        self.batched = self._info["batched"]
        if self.batched:  # the executor hands out lists of 4 x batch size: one such list per actor at a time
            self.options = replace(options, batch_size=max(1, options.batch_size) * settings.workers)
        self.default_concurrency = self._info["default_concurrency"] * settings.workers
        self._next = itertools.count()
        self._lock = threading.Lock()

    @property
    def pool(self) -> ActorPool:
        """The actors, started on first use and again after :meth:`close`."""
        with self._start_lock:  # the executor's threads may all call at once
            if self._pool is None:
                remote = not str(self.spec).startswith("hf:")
                concurrency = max(1, self._given.concurrency or 8) if remote else 1
                # A remote model's actor mostly waits on the network: it reserves a sliver of a CPU, not a core.
                self._pool = ActorPool(_HostedRunner, (self.spec, self._given), self.settings,
                                       concurrency=concurrency, cpus=0.1 if remote else None)
            return self._pool

    def identity(self) -> dict[str, Any]:
        return self._info["identity"]

    def params(self) -> dict[str, Any]:
        return self._info["params"]

    def describe(self) -> dict[str, Any]:
        return {**self._info["describe"], "ray": self.settings.to_dict()}

    def call_batch(self, requests: Sequence[Request]) -> list[Result]:
        if not self.batched:
            return [self.call(r) for r in requests]
        return self.pool.map_shares("call_batch", requests)

    def call(self, request: Request) -> Result:
        with self._lock:
            slot = next(self._next)
        result, failure = self.pool.call_on(slot, "call", request)
        if failure is not None:
            raise RemoteCallError(*failure)
        return result

    def classify(self, error: BaseException) -> tuple[str, str]:
        if isinstance(error, RemoteCallError):
            return error.kind, error.message
        return super().classify(error)

    def pids(self) -> list[int]:
        return self.pool.pids()

    def close(self) -> None:
        """Free the actors and their models now (the next call starts them again), so the next stage of a
        run -- scoring, another system -- gets the cluster's CPUs and GPUs."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None
