"""Facts about this machine that backends use to pick threads and devices."""

from __future__ import annotations

import os
from pathlib import Path


def usable_cpus() -> int:
    """CPUs this process may run on (the affinity mask, not the whole machine)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def physical_cores() -> int:
    """Physical cores available to this process: hyper-threads slow matrix work down.

    Read from /proc/cpuinfo where it exists (unique physical id / core id pairs), capped by the
    affinity mask; elsewhere the logical count halved when that looks like SMT.
    """
    usable = usable_cpus()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        cores: set[tuple[str, str]] = set()
        physical = core = ""
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "physical id":
                physical = value.strip()
            elif key == "core id":
                core = value.strip()
                cores.add((physical, core))
        if cores:
            return max(1, min(len(cores), usable))
    return max(1, usable)
