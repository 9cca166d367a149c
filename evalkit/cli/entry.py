"""The ``evalkit`` console command: :func:`evalkit.cli.main`, then an exit that skips the interpreter's teardown.

When a command returns, every file it wrote is closed (:mod:`evalkit.atomic`) and all that is left is Python
freeing each object it holds, one by one, and then exiting. After a run that is WordNet's and the run's
600,000-odd objects: measured 0.64-0.77 s of a 10 s ``evalkit run`` over 1,000 pairs, which a CI job waits for
with nothing to gain. So :func:`console_main` flushes stdout and stderr, runs the exit handlers
(:mod:`atexit`: metric processes, multiprocessing's children, logging), and ends the process with
:func:`os._exit` -- what :mod:`multiprocessing` does to end its own children. While a non-daemon thread is
still running, the normal exit (which waits for it) is kept.

Only the console command does this: ``evalkit.cli.main`` called from Python (tests, notebooks) returns as
always.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading


def console_main() -> None:
    """Run the command line with ``sys.argv`` and exit with its status."""
    from evalkit.cli.commands import main

    exit_now(main())


def exit_now(code: int) -> None:
    """End the process with ``code`` once output is flushed and the exit handlers have run."""
    others = [t for t in threading.enumerate() if t is not threading.current_thread() and not t.daemon]
    if others or threading.current_thread() is not threading.main_thread():
        sys.exit(code)
    if not _flushed():
        code = code or 120  # what Python's own exit returns when it cannot flush stdout
    atexit._run_exitfuncs()  # what interpreter shutdown runs first
    _flushed()  # anything the handlers printed
    os._exit(code)


def _flushed() -> bool:
    ok = True
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can reach it
            ok = False
    return ok
