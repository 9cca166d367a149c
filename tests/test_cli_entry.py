"""The ``evalkit`` console command ends without the interpreter's teardown, and loses nothing by it.

Its exit status, everything written to stdout and stderr (through a pipe, so buffered), and what the exit
handlers do all arrive; a non-daemon thread still running is waited for, as Python's own exit waits.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_status_output_and_exit_handlers_all_arrive():
    done = _python(
        "import atexit, sys\n"
        "from evalkit.cli.entry import exit_now\n"
        "atexit.register(lambda: print('handler ran'))\n"
        "print('x' * 200000)\n"
        "print('to stderr', file=sys.stderr)\n"
        "exit_now(3)\n")
    assert done.returncode == 3
    assert done.stdout == "x" * 200000 + "\nhandler ran\n"
    assert done.stderr == "to stderr\n"


def test_objects_are_not_torn_down_one_by_one():
    # a finalizer that only interpreter teardown would run: skipped, which is the point
    done = _python(
        "from evalkit.cli.entry import exit_now\n"
        "class Noisy:\n"
        "    def __del__(self):\n"
        "        print('torn down')\n"
        "kept = Noisy()\n"
        "exit_now(0)\n")
    assert done.returncode == 0
    assert "torn down" not in done.stdout


def test_a_running_non_daemon_thread_is_waited_for():
    done = _python(
        "import threading, time\n"
        "from evalkit.cli.entry import exit_now\n"
        "def work():\n"
        "    time.sleep(0.5)\n"
        "    print('thread finished', flush=True)\n"
        "threading.Thread(target=work).start()\n"
        "exit_now(4)\n")
    assert done.returncode == 4
    assert done.stdout == "thread finished\n"


def test_the_console_command_uses_it():
    import importlib.metadata as md

    (script,) = [e for e in md.entry_points(group="console_scripts") if e.name == "evalkit"]
    assert script.value == "evalkit.cli.entry:console_main"
    done = subprocess.run([sys.executable, "-m", "evalkit", "run", "summarization", "--dataset", "missing.jsonl",
                           "--output-field", "output"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 2
    assert "missing.jsonl" in done.stderr
