"""A model metric in a second process, started at once: its imports (torch, transformers), model load and
preparation run on the other CPU core while this process loads and scores the lexical metrics.

Used by ``evalkit run`` over outputs already there (nothing to generate, no ``--ray``): there the model
metrics' start-up is most of the wait. The child builds the metric from the same registry and options,
prepares it on the same dataset view and scores the same chunks (:mod:`evalkit.scoring.chunks` calls
:meth:`MetricProcess.score_items` once per chunk), so scores are the ones an in-process metric gives; the
parent keeps the run store. A child that cannot build its metric raises the same error at the metric's turn
(exit 2 for a missing resource); a child that dies is a crash of the run.
"""

from __future__ import annotations

import atexit
import contextlib
import pickle
import time
from typing import Any

from evalkit.errors import RuntimeFailure, WorkerLost
from evalkit.scoring.base import METRICS, DatasetView, Metric


def _portable(exc: BaseException) -> BaseException:
    """The exception itself when it survives pickling, else a RuntimeFailure carrying its text."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 -- any exception that does not round-trip
        return RuntimeFailure(f"{type(exc).__name__}: {exc}")


def _serve(conn: Any, name: str, options: dict[str, Any], dataset: DatasetView) -> None:
    """The child: build and prepare the metric, then answer (method, args) calls until told to stop."""
    from evalkit.leanimports import enable as lean_imports
    from evalkit.progress import quiet_library_progress
    from evalkit.scoring.base import build_metrics

    lean_imports(scoring_process=True)  # this process only scores: libraries load without what it never uses
    start = time.perf_counter()
    metric: Metric | None = None
    failure: BaseException | None = None
    try:
        with quiet_library_progress(True):
            (metric,) = build_metrics([name], {name: options})
        metric.prepare(dataset)
    except BaseException as exc:  # noqa: BLE001 -- reported to the parent at its first call
        failure = _portable(exc)
    built_s = round(time.perf_counter() - start, 3)
    while True:
        try:
            method, args = conn.recv()
        except EOFError:
            return
        if method == "close":
            return
        if method == "built_s":
            conn.send((True, built_s))
            continue
        if failure is not None:
            conn.send((False, failure))
            continue
        try:
            conn.send((True, getattr(metric, method)(*args)))
        except Exception as exc:  # noqa: BLE001 -- raised again in the parent
            conn.send((False, _portable(exc)))


class MetricProcess(Metric):
    """The metric ``name`` with ``options``, built, prepared on ``dataset`` and scored in a child process
    that starts now. Class-level facts (columns, direction, proportions) come from the registry at once;
    everything that needs the built metric waits for the child."""

    runs_elsewhere = True  # this process mostly waits while it scores (see evalkit.pipeline.score_records)

    def __init__(self, name: str, options: dict[str, Any], dataset: DatasetView):
        import multiprocessing

        kind = METRICS.get(name)
        self.name, self.columns, self.needs = kind.name, kind.columns, kind.needs
        self.lower_is_better, self.proportions = kind.lower_is_better, kind.proportions
        self.primary, self.loads_model = kind.primary, kind.loads_model
        context = multiprocessing.get_context("spawn")  # no fork of a process that may hold threads
        self._conn, child = context.Pipe()
        # Not a daemon: bert-score's idf weights are computed with a multiprocessing Pool, which a daemon may not
        # start. The child ends when told to, or when this end of the pipe closes (this process ended); close()
        # also runs at exit, before multiprocessing joins its children.
        self._process = context.Process(target=_serve, args=(child, name, options, dataset), daemon=False,
                                        name=f"evalkit-{name}")
        self._process.start()
        child.close()
        atexit.register(self.close)
        self._stopped = False

    def _call(self, method: str, *args: Any) -> Any:
        if self._stopped:
            raise RuntimeFailure(f"the process scoring {self.name} was already stopped")
        try:
            self._conn.send((method, args))
            ok, value = self._conn.recv()
        except (EOFError, OSError):
            self._process.join(timeout=5)
            raise WorkerLost(f"the process scoring {self.name} ended unexpectedly "
                             f"(exit code {self._process.exitcode})") from None
        if not ok:
            raise value
        return value

    def built_s(self) -> float:
        """Seconds the child took to import, load and prepare the metric (overlapping this process's work)."""
        return self._call("built_s")

    def identity(self) -> dict[str, Any]:
        return self._call("identity")

    def settings(self) -> dict[str, Any]:
        return self._call("settings")

    def value_range(self, column: str) -> tuple[float, float]:
        return self._call("value_range", column)

    def score_items(self, items: Any, progress: bool = False) -> Any:
        return self._call("score_items", list(items))

    def stop(self) -> None:
        """Tell the child to exit, without waiting for it (it tears down while this process writes)."""
        if not self._conn.closed and not self._stopped:
            self._stopped = True
            with contextlib.suppress(OSError):  # already gone
                self._conn.send(("close", ()))

    def close(self) -> None:
        """Stop the child and wait for it (killed if it does not exit)."""
        atexit.unregister(self.close)
        if self._conn.closed:
            return
        if self._process.is_alive():
            self.stop()
            self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(timeout=5)
        self._conn.close()
