"""One glibc malloc arena for the process, so a generation on the engine's own thread runs as fast
as on the main thread.

glibc gives each new thread that allocates its own arena. A secondary arena grows in heaps of at
most 64 MiB, so the large tensors of a diffusion step (attention scores, activations) are mapped
and unmapped again at each allocation, and every page is faulted in and zeroed anew, where the
main arena reuses its memory. Measured on SD1.5-size weights at 256x256 on 2 cores: the same
`pipe()` call took 1.12-1.22x as long on a worker thread as on the main thread, and
`Engine.generate` 1.05-1.12x the bare call; with one arena all of them took the same time.

The setting is process-wide and only acts on threads that have not allocated yet, so the engine
applies it when it starts, before its threads exist. `MALLOC_ARENA_MAX` in the environment (read
by glibc itself) wins; `LOCALIMG_MALLOC_ARENAS=default` leaves glibc's own choice.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # glibc's malloc.h
OPT_OUT = "LOCALIMG_MALLOC_ARENAS"

_applied: bool | None = None


def use_one_arena() -> bool:
    """Limit glibc malloc to one arena (once per process); whether this call or an earlier one
    did. False where it does not apply: not Linux, not glibc, the user set MALLOC_ARENA_MAX or
    opted out."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if not sys.platform.startswith("linux") or "MALLOC_ARENA_MAX" in os.environ:
        return False
    if os.environ.get(OPT_OUT, "").strip().lower() in ("default", "0", "off", "false"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        gnu_get_libc_version = libc.gnu_get_libc_version  # glibc only (musl has no arenas)
    except (OSError, AttributeError):
        return False
    gnu_get_libc_version.restype = ctypes.c_char_p
    _applied = bool(libc.mallopt(M_ARENA_MAX, 1))
    log.debug("malloc: one arena (glibc %s): %s", gnu_get_libc_version().decode(), _applied)
    return _applied
