"""How long this process has been running, for start-up timings (``results.json`` ``timings``)."""

from __future__ import annotations

import os


def process_age() -> float | None:
    """Seconds since this process started (interpreter start included), from /proc; None where there is no
    /proc (the timings then leave it out). Resolution: one clock tick (10 ms)."""
    try:
        with open("/proc/self/stat", encoding="ascii") as fh:
            fields = fh.read().rpartition(")")[2].split()
        with open("/proc/uptime", encoding="ascii") as fh:
            uptime = float(fh.read().split()[0])
        return round(uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"), 3)
    except (OSError, ValueError, IndexError):
        return None
