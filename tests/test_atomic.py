"""Result files are replaced whole or not at all."""

from __future__ import annotations

import json
import os
import resource
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from evalkit.atomic import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 1 << 20  # the child may write 1 MiB; its 8 MiB write is cut off in the middle by the kernel


def _killed_mid_write(path: Path, write: str) -> subprocess.CompletedProcess:
    """Run ``write`` (Python code that writes 8 MiB to ``path``) in a child that the kernel kills (SIGXFSZ)
    when its file reaches 1 MiB: the process dies inside the write, with no chance to clean up."""
    code = ("import signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_DFL)\n"  # Python ignores it by default
            "from pathlib import Path; from evalkit.atomic import atomic_write_text\n"
            f"path = Path({str(path)!r}); text = 'x' * (8 << 20)\n{write}\n")

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))

    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, timeout=60,
                          preexec_fn=limit_file_size)


def test_a_process_killed_in_the_middle_of_the_write_leaves_the_old_file_whole(tmp_path):
    path = tmp_path / "results.json"
    old = json.dumps({"metrics": {"rouge1": {"mean": 0.5}}})
    path.write_text(old)
    proc = _killed_mid_write(path, "atomic_write_text(path, text)")
    assert proc.returncode == -signal.SIGXFSZ, proc.stderr  # killed by the kernel, mid-write
    assert path.read_text() == old and json.loads(path.read_text())  # whole, and still valid JSON
    leftovers = [p for p in tmp_path.iterdir() if p != path]
    assert [p.stat().st_size for p in leftovers] == [LIMIT]  # the cut-off copy went to a temporary file

    # The same kill during a plain write destroys the file: this test can tell the difference.
    proc = _killed_mid_write(path, "path.write_text(text)")
    assert proc.returncode == -signal.SIGXFSZ and path.stat().st_size == LIMIT and path.read_text() != old


def test_nan_is_refused_before_anything_is_written(tmp_path):
    path = tmp_path / "results.json"
    atomic_write_json(path, {"ok": 1})
    with pytest.raises(ValueError):
        atomic_write_json(path, {"bad": float("nan")})  # not valid JSON: refused before anything is replaced
    assert json.loads(path.read_text()) == {"ok": 1}
    assert os.listdir(tmp_path) == ["results.json"]


def test_written_files_have_ordinary_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "r.json", {})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == 0o644
