"""The machine a process runs on, as both wings size their thread pools by it."""

from __future__ import annotations

import os


def usable_cpus() -> int:
    """The CPUs this process may run on: its scheduler affinity (a SLURM or taskset allotment),
    else the machine's count, at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1
