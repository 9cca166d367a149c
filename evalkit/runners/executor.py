"""The executor: one place that drives every runner -- concurrency, rate limit, retries, timeouts, store.

:func:`execute` takes a runner and a list of requests and returns one :class:`Result` per request, in order:

1. requests whose result is already in the run store (same identity, parameters and payload) are reused;
2. the rest are called -- batched runners in lists of ``4 x batch_size`` in one worker (a list that raises
   is split in halves until the failing requests stand alone, so one bad record never costs its
   neighbours), remote runners one request per call on ``concurrency`` worker threads;
3. a call that raises is classified by the runner (:meth:`~evalkit.runners.base.Runner.classify`):
   retryable errors (throttling, 5xx, model not ready, dropped connections) and timeouts are retried up to
   ``max_attempts`` with exponential backoff and full jitter; fatal and filtered ones are not;
4. every finished call is stored the moment it returns (:class:`~evalkit.runners.store.RunStore`);
5. a request that still fails keeps its error and the run goes on -- unless ``fail_fast``.

The client-side rate limit (``max_rps``) spaces the start of every attempt, retries included, across all
workers. botocore's own retries are switched off in the AWS runners (one attempt per botocore call), so
this module is the only retry policy and ``Result.attempts`` counts every request sent.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from typing import Any

from evalkit.errors import RuntimeFailure
from evalkit.hashing import fingerprint
from evalkit.runners.base import RETRIED_KINDS, Request, Result, Runner, RunnerOptions
from evalkit.runners.store import RunStore, call_key

BATCHES_PER_CALL = 4  # batched runners get this many batches per call_batch (and per store round)
logger = logging.getLogger(__name__)


class FailFast(RuntimeFailure):
    """``--fail-fast``: a record still failed after its retries; the run stops (finished calls are stored)."""


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    base_delay_s: float = 1.0
    max_delay_s: float = 30.0

    @classmethod
    def from_options(cls, options: RunnerOptions) -> RetryPolicy:
        return cls(max(1, options.max_attempts), max(0.0, options.retry_base_delay_s),
                   max(0.0, options.retry_max_delay_s))

    def delay(self, retry: int, rng: random.Random) -> float:
        """Full jitter: uniform(0, min(cap, base * 2**retry)) seconds before retry number ``retry`` (0-based)."""
        return rng.uniform(0.0, min(self.max_delay_s, self.base_delay_s * (2 ** retry)))


class RateLimiter:
    """At most ``rate`` starts per second over all threads: each start is spaced ``1/rate`` from the last."""

    def __init__(self, rate: float | None):
        self.interval = 1.0 / rate if rate else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            time.sleep(start - now)


@dataclass
class ExecutionStats:
    reused: int = 0
    called: int = 0
    failed: int = 0
    retries: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"reused": self.reused, "called": self.called, "failed": self.failed, "retries": self.retries}


def execute(runner: Runner, requests: Sequence[Request], *, store: RunStore | None = None, use_cache: bool = True,
            progress: bool = True, stats: ExecutionStats | None = None,
            on_result: Callable[[int, Result], None] | None = None) -> list[Result]:
    """One result per request, in order (see the module docstring). ``on_result(index, result)`` is called as
    each finishes (reused ones included)."""
    from evalkit.progress import progress_counter

    options = runner.options
    stats = stats if stats is not None else ExecutionStats()
    identity_fp = fingerprint(runner.identity())
    params = runner.params()
    keys = [call_key(identity_fp, params, r) for r in requests]
    results: list[Result | None] = [None] * len(requests)
    if store is not None and use_cache:
        hits = store.get_many(keys)
        for i, key in enumerate(keys):
            if key in hits:
                results[i] = replace(hits[key], id=requests[i].id)
                stats.reused += 1
                if on_result is not None:
                    on_result(i, results[i])
    # One call per distinct key: records that send exactly the same request share its answer.
    first: dict[str, int] = {}
    todo = [i for i, r in enumerate(results) if r is None and first.setdefault(keys[i], i) == i]
    twins = [i for i, r in enumerate(results) if r is None and first[keys[i]] != i]
    logger.info("%s: %d of %d calls reused from the run store, %d to make", runner.spec, len(requests) - len(todo),
                len(requests), len(todo))
    bar = progress_counter(len(todo), desc=f"Generating ({runner.spec})", enabled=progress and bool(todo))
    lock = threading.Lock()

    def finish(i: int, result: Result, *, may_stop: bool = True) -> None:
        result.id = requests[i].id
        if store is not None:
            store.put(keys[i], identity_fp, requests[i], result)
        with lock:
            results[i] = result
            stats.called += 1
            stats.failed += result.error is not None
            stats.retries += max(0, result.attempts - 1)
            bar.update(1)
        if on_result is not None:
            on_result(i, result)
        if result.error is not None and options.fail_fast and may_stop:
            raise FailFast(f"--fail-fast: record {requests[i].id!r} failed ({result.error_kind}): {result.error}")

    try:
        if runner.batched:
            _run_batched(runner, requests, todo, finish)
        else:
            _run_parallel(runner, requests, todo, finish)
    finally:
        bar.close()
    for i in twins:
        original = results[first[keys[i]]]
        if original is not None:
            results[i] = replace(original, id=requests[i].id, cached=True)
            stats.reused += 1
            if on_result is not None:
                on_result(i, results[i])
    if any(r is None for r in results):  # a bug, never expected: say so rather than misalign records
        raise RuntimeFailure(f"{sum(r is None for r in results)} of {len(results)} requests got no result")
    return results  # type: ignore[return-value]


def _run_batched(runner: Runner, requests: Sequence[Request], todo: list[int],
                 finish: Callable[..., None]) -> None:
    chunk = max(1, runner.options.batch_size * BATCHES_PER_CALL)
    for start in range(0, len(todo), chunk):
        indexes = todo[start:start + chunk]
        results = _call_isolated(runner, [requests[i] for i in indexes])
        for i, result in zip(indexes, results, strict=True):  # the whole list is stored before any stop
            finish(i, result, may_stop=False)
        failed = next(((i, r) for i, r in zip(indexes, results, strict=True) if r.error is not None), None)
        if failed is not None and runner.options.fail_fast:
            i, result = failed
            raise FailFast(f"--fail-fast: record {requests[i].id!r} failed ({result.error_kind}): {result.error}")


def _call_isolated(runner: Runner, requests: list[Request]) -> list[Result]:
    """``runner.call_batch``; when it raises, the list is split in halves until the failing requests stand
    alone and get the error. A runner returning the wrong number of results raises a RuntimeFailure."""
    started = time.perf_counter()
    try:
        results = runner.call_batch(requests)
    except RuntimeFailure:
        raise
    except Exception as error:
        if len(requests) == 1:
            kind, message = runner.classify(error)
            return [Result(id=requests[0].id, error=message[:500], error_kind=kind, attempts=1,
                           latency_s=time.perf_counter() - started)]
        middle = len(requests) // 2
        return _call_isolated(runner, requests[:middle]) + _call_isolated(runner, requests[middle:])
    if not isinstance(results, list) or len(results) != len(requests):
        got = len(results) if isinstance(results, (list, tuple)) else type(results).__name__
        raise RuntimeFailure(f"runner {runner.spec} returned {got} results for {len(requests)} requests")
    elapsed = (time.perf_counter() - started) / len(requests)
    for result in results:
        result.attempts = result.attempts or 1
        if result.latency_s is None:
            result.latency_s = elapsed
    return results


def _run_parallel(runner: Runner, requests: Sequence[Request], todo: list[int],
                  finish: Callable[..., None]) -> None:
    options = runner.options
    workers = max(1, options.concurrency or runner.default_concurrency)
    policy = RetryPolicy.from_options(options)
    limiter = RateLimiter(options.max_rps)
    stop = threading.Event()

    def one(i: int) -> tuple[int, Result]:
        rng = random.Random(f"{options.seed}:{requests[i].id}")  # jitter reproducible per record
        attempt = 0
        while True:
            attempt += 1
            limiter.wait()
            started = time.perf_counter()
            try:
                result = runner.call(requests[i])
            except Exception as error:
                kind, message = runner.classify(error)
                result = Result(id=requests[i].id, error=message[:500], error_kind=kind)
            result.latency_s = time.perf_counter() - started
            result.attempts = attempt
            if result.error is None or result.error_kind not in RETRIED_KINDS or attempt >= policy.max_attempts \
                    or stop.is_set():
                if result.error is not None and result.error_kind in RETRIED_KINDS and attempt >= policy.max_attempts:
                    result.error = f"{result.error} (gave up after {attempt} attempts)"
                return i, result
            delay = policy.delay(attempt - 1, rng)
            logger.info("record %s: %s (%s); attempt %d of %d, retrying in %.2f s", requests[i].id, result.error,
                        result.error_kind, attempt, policy.max_attempts, delay)
            time.sleep(delay)

    pending: set[Future[Any]] = set()
    queue = list(todo)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="evalkit-call") as pool:
        try:
            while queue or pending:
                while queue and len(pending) < workers and not stop.is_set():
                    pending.add(pool.submit(one, queue.pop(0)))
                if not pending:
                    break
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    i, result = future.result()
                    finish(i, result)
        except FailFast:
            # Start nothing new; the calls already in flight finish (no retries) and are stored, then stop.
            stop.set()
            for i, result in (future.result() for future in wait(pending).done):
                finish(i, result, may_stop=False)
            raise
        except BaseException:
            stop.set()
            for future in pending:
                future.cancel()
            raise

