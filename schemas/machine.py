"""The machine a process runs on, as both wings size their thread pools by it."""

from __future__ import annotations

import os


def usable_cpus() -> int:
    """The CPUs this process may run on: its scheduler affinity (a SLURM or taskset allotment),
    else the machine's count, at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def usable_memory(cgroup_root: str = "/sys/fs/cgroup", self_cgroup: str = "/proc/self/cgroup") -> int:
    """Bytes of memory this process may use: the machine's physical memory, or its control
    group's limit where that is lower (a SLURM job's or a container's allotment; cgroup v2
    ``memory.max`` or v1 ``memory.limit_in_bytes``, of this process's group or the root)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limits = [total] + [v for v in _cgroup_limits(cgroup_root, self_cgroup) if v > 0]
    return min(limits)


def _cgroup_limits(root: str, self_cgroup: str) -> list[int]:
    """The memory limits of this process's control groups (v2 and v1), unreadable ones left out."""
    paths = []
    try:
        with open(self_cgroup) as f:
            for line in f:
                parts = line.rstrip("\n").split(":", 2)
                if len(parts) != 3:
                    continue
                group = parts[2].lstrip("/")
                if parts[0] == "0" and parts[1] == "":  # cgroup v2: one unified hierarchy
                    paths += [os.path.join(root, group, "memory.max"), os.path.join(root, "memory.max")]
                elif "memory" in parts[1].split(","):  # cgroup v1: the memory controller's hierarchy
                    paths += [os.path.join(root, "memory", group, "memory.limit_in_bytes"),
                              os.path.join(root, "memory", "memory.limit_in_bytes")]
    except OSError:
        pass
    out = []
    for path in dict.fromkeys(paths):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit():  # "max": no limit
            out.append(int(text))
    return out
