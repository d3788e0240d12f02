"""How downloads report progress: a protocol the CLI (rich bars) and the server's install jobs
(counters) implement; nothing here draws.
"""

from __future__ import annotations

import threading
from typing import Protocol

# -- progress -----------------------------------------------------------------------------------


class Progress(Protocol):
    """Receives byte counts from the download threads (must be thread-safe)."""

    def start(self, name: str, total: int | None, done: int) -> None: ...

    def advance(self, name: str, nbytes: int) -> None: ...

    def finish(self, name: str) -> None: ...


class NullProgress:
    def start(self, name: str, total: int | None, done: int) -> None:
        pass

    def advance(self, name: str, nbytes: int) -> None:
        pass

    def finish(self, name: str) -> None:
        pass


class CountingProgress:
    """Totals for a server job: bytes done and expected, the file being fetched."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.totals: dict[str, int | None] = {}
        self.done: dict[str, int] = {}
        self.current: str | None = None

    def start(self, name: str, total: int | None, done: int) -> None:
        with self._lock:
            self.totals[name] = total
            self.done[name] = done
            self.current = name

    def advance(self, name: str, nbytes: int) -> None:
        with self._lock:
            self.done[name] = self.done.get(name, 0) + nbytes

    def finish(self, name: str) -> None:
        with self._lock:
            total = self.totals.get(name)
            if total is not None:
                self.done[name] = total

    def snapshot(self) -> tuple[int, int]:
        """(bytes done, bytes expected) over the files started so far."""
        with self._lock:
            expected = sum(t or 0 for t in self.totals.values())
            return sum(self.done.values()), expected
