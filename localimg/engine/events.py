"""What the engine reports as it works: job outcomes, model loads, rejections, worker restarts.

The engine knows nothing of the server's metrics (or of any other observer): it owns one
`EngineEvents`, hands it to every slot, and the slots call it where things happen. Whoever
wants to know subscribes an `EngineListener` (the server's /metrics does). Each call to a
listener is guarded, so a broken listener is logged and never breaks a generation.

A job's outcome is reported once, when its future resolves, in the process that queued it: for
a worker slot that is the server process (the child's own slot has no listeners), so outcomes,
loads and restarts of every worker are counted where /metrics is served.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from localimg.errors import Cancelled, LocalimgError

if TYPE_CHECKING:
    from localimg.engine.job import Job
    from localimg.requests import ImageResult

log = logging.getLogger(__name__)

Outcome = Literal["ok", "error", "cancelled"]


@dataclass(frozen=True)
class JobFinished:
    """One job's outcome, reported once when its future resolves."""

    job_id: str
    model: str
    backend: str
    outcome: Outcome
    queue_seconds: float  # submitted → taken by the runner (or → cancelled, if never taken)
    run_seconds: float | None  # taken by the runner → finished (model load included); None if
    # it never ran
    generation_seconds: float | None  # the backend's generate call alone; None without a result
    steps: int  # denoising steps per image of the merged request (0 without a result)
    error_code: str | None = None  # the LocalimgError code of an error or a cancel

    @property
    def steps_per_second(self) -> float | None:
        if not self.steps or not self.generation_seconds or self.generation_seconds <= 0:
            return None
        return self.steps / self.generation_seconds


class EngineListener:
    """Subclass and override what you need; every method is called on an engine thread (the
    slot's runner, a worker's supervisor, or whichever thread cancelled a queued job) and must
    return quickly."""

    def job_finished(self, event: JobFinished) -> None:
        """A job resolved: a result, an error or a cancel."""

    def job_rejected(self, model: str, backend: str) -> None:
        """A job was refused because its model's queue was full (429 Busy)."""

    def model_loaded(self, model: str, backend: str, seconds: float) -> None:
        """A model finished loading (in this process or in its worker)."""

    def worker_restarted(self, model: str, backend: str, reason: str) -> None:
        """A model's worker process died (or was killed) and a new one was started."""


class EngineEvents:
    """The fan-out to every subscribed listener; guarded, thread-safe to subscribe."""

    def __init__(self) -> None:
        self._listeners: list[EngineListener] = []
        self._lock = threading.Lock()

    def add(self, listener: EngineListener) -> None:
        with self._lock:
            self._listeners = [*self._listeners, listener]

    def remove(self, listener: EngineListener) -> None:
        with self._lock:
            self._listeners = [x for x in self._listeners if x is not listener]

    @property
    def listeners(self) -> list[EngineListener]:
        return list(self._listeners)

    def _emit(self, method: str, *args: object) -> None:
        for listener in self._listeners:  # replaced, never mutated: no lock needed to iterate
            try:
                getattr(listener, method)(*args)
            except Exception:  # a broken listener must not break the engine
                log.exception("engine listener %r failed in %s", listener, method)

    def job_finished(self, event: JobFinished) -> None:
        self._emit("job_finished", event)

    def job_rejected(self, model: str, backend: str) -> None:
        self._emit("job_rejected", model, backend)

    def model_loaded(self, model: str, backend: str, seconds: float) -> None:
        self._emit("model_loaded", model, backend, seconds)

    def worker_restarted(self, model: str, backend: str, reason: str) -> None:
        self._emit("worker_restarted", model, backend, reason)

    def watch(self, job: Job, backend: str) -> None:
        """Report `job`'s outcome when its future resolves (called once, when it is queued)."""
        if not self._listeners:
            return  # a worker child's slot, or nobody listening: nothing to compute

        def done(future: Future[ImageResult]) -> None:
            self.job_finished(job_outcome(job, backend, future))

        job.future.add_done_callback(done)


def job_outcome(job: Job, backend: str, future: Future[ImageResult]) -> JobFinished:
    """The `JobFinished` of a resolved job, from its own timestamps and result."""
    error = None if future.cancelled() else future.exception()
    if future.cancelled() or isinstance(error, Cancelled):
        outcome: Outcome = "cancelled"
    elif error is not None:
        outcome = "error"
    else:
        outcome = "ok"
    run = job.run_seconds
    generation: float | None = None
    steps = 0
    if outcome == "ok":
        result = future.result()
        inference = result.timings.get("inference")
        generation = float(inference) if inference is not None else run
        merged = result.request
        steps = (merged.steps or 0) if merged is not None else 0
    return JobFinished(
        job_id=job.id,
        model=job.model,
        backend=backend,
        outcome=outcome,
        queue_seconds=max(0.0, job.queue_seconds or 0.0),
        run_seconds=max(0.0, run) if run is not None else None,
        generation_seconds=generation,
        steps=steps,
        error_code=error.code if isinstance(error, LocalimgError) else None,
    )
