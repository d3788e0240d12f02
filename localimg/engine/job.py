"""A job: one queued or running request, its future, progress listeners and cancel event.

Every front end (CLI, HTTP, job API) holds a Job; cancelling it is the one way to stop work.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field

from localimg.errors import BackendError, Cancelled
from localimg.requests import (
    ImageRequest,
    ImageResult,
    ProgressEvent,
)

log = logging.getLogger(__name__)


ProgressListener = Callable[[ProgressEvent], None]


def as_backend_error(exc: BaseException) -> BackendError:
    """An unexpected exception as a one-line BackendError (the traceback goes to the log)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return BackendError(f"generation failed: {type(exc).__name__}: {text}")


@dataclass
class Job:
    """One queued or running request. Await `future` (or call `result`); `cancel` stops it."""

    id: str
    model: str
    request: ImageRequest
    future: Future[ImageResult] = field(default_factory=Future)
    cancel_event: threading.Event = field(default_factory=threading.Event)
    listeners: list[ProgressListener] = field(default_factory=list)
    submitted: float = field(default_factory=time.monotonic)
    last_event: ProgressEvent | None = None
    started_at: float | None = None  # time.monotonic() when a slot took the job
    finished_at: float | None = None  # time.monotonic() when its future resolved
    # (step, time.monotonic()) of the first and the latest step event: the pace behind `eta`.
    first_step: tuple[int, float] | None = None
    last_step: tuple[int, float] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _started: bool = False

    def __post_init__(self) -> None:
        self.future.add_done_callback(self._finished)

    def _finished(self, future: Future[ImageResult]) -> None:
        self.finished_at = time.monotonic()

    @property
    def queue_seconds(self) -> float | None:
        """How long it waited for its slot's runner; None while it still waits."""
        if self.started_at is not None:
            return self.started_at - self.submitted
        return self.finished_at - self.submitted if self.finished_at is not None else None

    @property
    def run_seconds(self) -> float | None:
        """From the runner taking it to its outcome (a model load included); None until then."""
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at

    @property
    def started(self) -> bool:
        """Whether a slot has taken the job (it is running, or ran)."""
        return self._started

    def eta(self, now: float | None = None) -> float | None:
        """Seconds left until the last step, from the pace of the steps so far; None before the
        first step (or once done). The pace runs from the first step to the latest; with one step
        seen, from the job's start (so a model load counts in, until a second step comes)."""
        event, last = self.last_event, self.last_step
        if last is None or event is None or event.phase != "step" or not event.total:
            return None
        now = time.monotonic() if now is None else now
        step, at = last
        ref_step, ref_at = self.first_step or last
        if step <= ref_step:
            ref_step, ref_at = 0, self.started_at if self.started_at is not None else at
        if step <= ref_step:
            return None
        pace = (at - ref_at) / (step - ref_step)
        return max(0.0, pace * (event.total - step) - (now - at))

    def emit(self, event: ProgressEvent) -> None:
        self.last_event = event
        if event.phase == "step":
            mark = (event.step, time.monotonic())
            if self.first_step is None:
                self.first_step = mark
            self.last_step = mark
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception:  # a broken listener must not kill the generation
                log.exception("progress listener failed")

    def cancel(self) -> None:
        """Stop the job: answered at once if still queued, stopped at the next step if running."""
        with self._lock:
            self.cancel_event.set()
            if not self._started and not self.future.done():
                self.future.set_exception(Cancelled("the request was cancelled"))

    def start(self) -> bool:
        """Called by a slot when it takes the job; False if it was cancelled meanwhile."""
        with self._lock:
            if self.future.done() or self.cancel_event.is_set():
                return False
            self._started = True
            self.started_at = time.monotonic()
            return self.future.set_running_or_notify_cancel()

    def result(self, timeout: float | None = None) -> ImageResult:
        return self.future.result(timeout)


def waiting_count(queue: Iterable[Job]) -> int:
    """Jobs of a queue still waiting: a cancelled one leaves the count at once, though its slot
    drops it from the queue only when it gets to it."""
    return sum(1 for job in queue if not job.future.done())


def waiting_position(queue: Iterable[Job], job: Job) -> int | None:
    """How many waiting jobs are ahead of `job` in `queue` (0: it runs next); None when it is not
    waiting there (running, done, cancelled, or not in this queue)."""
    ahead = 0
    for queued in queue:
        if queued is job:
            return None if job.future.done() else ahead
        if not queued.future.done():
            ahead += 1
    return None
