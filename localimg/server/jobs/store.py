"""A bounded store of background jobs (video jobs, image jobs): what keeps finished ones in check.

Running jobs are all kept (the engine's queues bound them); finished ones (completed, failed,
cancelled) are kept at most `max_finished` and `ttl` seconds (the server's url TTL), the oldest
dropped first together with its files, so a long-running server holds a fixed amount of them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Generic, Protocol, TypeVar


class StoredJob(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def finished_at(self) -> float | None:  # time.time() once finished; None while running
        ...

    def files(self) -> list[Path]:  # what to delete when the job is dropped
        ...


Entry = TypeVar("Entry", bound=StoredJob)


class JobStore(Generic[Entry]):
    """Jobs by id, bounded as the module says; every read prunes first."""

    def __init__(self, max_finished: int = 100, ttl: float = 3600.0) -> None:
        self.max_finished = max_finished
        self.ttl = ttl
        self._jobs: dict[str, Entry] = {}

    def add(self, entry: Entry) -> None:
        self.prune()
        self._jobs[entry.id] = entry

    def get(self, job_id: str) -> Entry | None:
        self.prune()
        return self._jobs.get(job_id)

    def pop(self, job_id: str) -> Entry | None:
        return self._jobs.pop(job_id, None)

    def remove(self, job_id: str) -> Entry | None:
        """Forget a job and delete its files."""
        entry = self._jobs.pop(job_id, None)
        if entry is not None:
            _delete(entry)
        return entry

    def values(self) -> list[Entry]:
        self.prune()
        return list(self._jobs.values())

    def __len__(self) -> int:
        return len(self._jobs)

    def prune(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        finished = sorted(
            (e for e in self._jobs.values() if e.finished_at is not None),
            key=lambda e: e.finished_at or 0.0,
        )
        expired = [e for e in finished if now - (e.finished_at or 0.0) > self.ttl]
        kept = [e for e in finished if e not in expired]
        for entry in expired + kept[: max(0, len(kept) - self.max_finished)]:
            self._jobs.pop(entry.id, None)
            _delete(entry)


def _delete(entry: StoredJob) -> None:
    for path in entry.files():
        path.unlink(missing_ok=True)
