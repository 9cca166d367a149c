"""Headless Chromium for tests: the page is loaded for real and its DOM read back after scripts ran."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=3000"]


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path:
        return path
    message = "headless Chromium is needed: apt-get install -y chromium (make test installs it)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _run(url: str, *extra: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", *extra, url],
                              capture_output=True, text=True, timeout=120, check=True)


def dump_dom(page: Path, fragment: str = "") -> str:
    """The DOM after the page's scripts ran (``fragment`` is appended to the URL, e.g. '#filter=x')."""
    return _run(page.resolve().as_uri() + fragment, "--dump-dom").stdout


def screenshot(page: Path, out: Path, size: str = "1300,1800") -> Path:
    _run(page.resolve().as_uri(), f"--screenshot={out}", f"--window-size={size}")
    return out
