"""Facts about this machine that backends use to pick threads and devices."""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Callable
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


def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of /proc/cpuinfo (empty where it does not exist)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return frozenset()
    for line in cpuinfo.read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_has_bf16() -> bool:
    """Whether the CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16, or Arm's BF16).

    Only there is bfloat16 faster than float32 on the CPU; elsewhere it is emulated and slower,
    so `f16: true` stays float32 (with a warning). LOCALIMG_CPU_BF16=1/0 overrides the check.
    """
    forced = os.environ.get("LOCALIMG_CPU_BF16")
    if forced is not None:
        return forced.strip().lower() in ("1", "true", "yes", "on")
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16", "bf16"})


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, looked up once (None off glibc)."""
    if os.name != "posix":
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


def trim_heap() -> None:
    """Hand the C heap's free pages back to the OS (glibc's malloc_trim; a no-op elsewhere):
    memory freed by Python and torch stays in malloc's free lists, counted in the process's RSS,
    until then."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
