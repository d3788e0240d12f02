"""One glibc malloc arena (localimg/_util/malloc_arenas.py): a thread that allocates after the
engine has started shares the main arena, so a generation on the engine's thread runs as fast
as one on the main thread; the user's MALLOC_ARENA_MAX and the opt-out are respected. Each case
runs in a fresh interpreter (the setting is process-wide and once only), counting the arenas
glibc's malloc_stats reports after a thread has allocated."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import ctypes, sys, threading
from localimg._util.malloc_arenas import use_one_arena
applied = use_one_arena() if sys.argv[1] == "engine" else None
if sys.argv[1] == "engine-class":
    from localimg.engine import Engine, EngineSettings
    Engine(EngineSettings(models_path=sys.argv[2])).close()
thread = threading.Thread(target=lambda: [bytearray(200_000) for _ in range(50)])
thread.start(); thread.join()
print(applied, flush=True)
ctypes.CDLL("libc.so.6").malloc_stats()
"""

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not os.confstr("CS_GNU_LIBC_VERSION"),
    reason="malloc arenas are glibc's (Linux)",
)


def probe(mode: str, tmp_path: Path, **env: str) -> tuple[str, int]:
    """(what use_one_arena said, the arenas glibc counts) in a fresh interpreter."""
    environ = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**environ, **env},
    )
    arenas = sum(line.startswith("Arena ") for line in out.stderr.splitlines())
    return out.stdout.strip().splitlines()[-1], arenas


def test_a_thread_shares_the_main_arena_once_the_engine_has_started(tmp_path: Path) -> None:
    assert probe("engine", tmp_path) == ("True", 1)
    assert probe("engine-class", tmp_path)[1] == 1  # Engine() applies it itself
    assert probe("plain", tmp_path)[1] == 2  # glibc's default: an arena for the thread


def test_the_users_setting_and_the_opt_out_are_left_alone(tmp_path: Path) -> None:
    assert probe("engine", tmp_path, MALLOC_ARENA_MAX="4") == ("False", 2)
    assert probe("engine", tmp_path, LOCALIMG_MALLOC_ARENAS="default") == ("False", 2)
