"""Resident memory of a live process, in MiB, as the benchmarks and the batch summary report it."""

from __future__ import annotations

import psutil


def rss_mb(pid: int) -> float | None:
    """Resident memory now, MiB; None when the process is gone or not ours to read."""
    try:
        return round(psutil.Process(pid).memory_info().rss / 2**20, 1)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def peak_rss_mb(pid: int) -> float | None:
    """Peak resident memory since the process started (Linux `VmHWM`), MiB; None where unknown."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None
