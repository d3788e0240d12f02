"""Slots: the runner of one model's jobs. `InProcessSlot` runs them on a thread of this process.

A model's pipeline is neither thread-safe nor able to share its device, so each slot has one
runner thread and a bounded queue; worker_parent.WorkerSlot subclasses it for child processes.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, cast

from localimg.backends import get_backend_class
from localimg.backends.base import BatchBackend, capabilities_of
from localimg.config import ModelConfig
from localimg.engine import batching, hires, memory
from localimg.engine.events import EngineEvents
from localimg.engine.job import Job, as_backend_error, waiting_count, waiting_position
from localimg.engine.merge import merge_request
from localimg.engine.settings import EngineSettings
from localimg.errors import Busy, Cancelled, InvalidRequest, LocalimgError, ModelLoading
from localimg.media import conditioning
from localimg.requests import (
    ImageRequest,
    ImageResult,
    ProgressEvent,
)

if TYPE_CHECKING:
    from localimg.backends.base import Backend

log = logging.getLogger(__name__)


class Slot(Protocol):
    """Runs the jobs of one model, one at a time. In-process here; a worker process in serve."""

    config: ModelConfig

    def submit(self, job: Job) -> None: ...

    @property
    def queue_depth(self) -> int: ...

    def queue_position(self, job: Job) -> int | None: ...

    @property
    def running_jobs(self) -> int: ...

    @property
    def state(self) -> str: ...

    def unload(self) -> None: ...

    def close(self, release_memory: bool = True) -> None: ...

    # Lifecycle (lifecycle.py): keep-alive, LRU and the memory budget.
    last_used: float
    memory_need: memory.Need | None
    before_load: Callable[[Any], None] | None
    before_grow: Callable[[Any, memory.Need], None] | None
    # Where job outcomes, loads and restarts are reported (the engine's; events.py).
    events: EngineEvents
    backend_name: str
    loads: int

    @property
    def gpu_memory_bytes(self) -> int | None: ...

    @property
    def busy(self) -> bool: ...

    @property
    def memory_bytes(self) -> int | None: ...

    def unload_if_idle(self) -> bool: ...

    def load(self) -> None: ...


class InProcessSlot:
    """A model loaded in this process, driven by one runner thread with a bounded queue."""

    def __init__(self, config: ModelConfig, settings: EngineSettings) -> None:
        self.config = config
        self.settings = settings
        self.backend_cls = get_backend_class(config.backend)
        self.backend: Backend | None = None
        self._queue: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._state = "unloaded"
        # Held while a job (or a load) runs: the keep-alive reaper and LRU eviction only unload
        # a slot whose lock they get without waiting, so a model is never unloaded mid-job.
        self.busy_lock = threading.RLock()
        self._running = 0
        self._active: list[Job] = []  # the jobs running now (cancelled by close)
        self.last_used = time.monotonic()
        self.memory_need: memory.Need | None = None  # set when admitted, cleared on unload
        self.before_load: Callable[[Any], None] | None = None  # the engine's admission check
        # The engine's check for memory a loaded model takes on (a request's ControlNet), and
        # the ControlNets counted so far (the YAML's is in the model's own estimate).
        self.before_grow: Callable[[Any, memory.Need], None] | None = None
        self.counted_controlnets: set[str] = set()
        # The engine's upscale call, for a hires fix with a pixel upscaler (hires.py); a worker's
        # child has none and runs only the first pass (`hires_first_pass_only`): its parent
        # holds the upscalers and runs the second.
        self.upscale: hires.Upscale | None = None
        self.hires_first_pass_only = False
        self.loads = 0  # how many times the model was loaded (tests, /v1/models)
        self.last_load_seconds: float | None = None
        self.events = EngineEvents()  # the engine hands each slot its own (engine.py)
        self.backend_name: str = getattr(self.backend_cls, "name", None) or config.backend
        self._thread = threading.Thread(
            target=self._run, name=f"localimg-slot-{config.name}", daemon=True
        )
        self._thread.start()

    @property
    def queue_depth(self) -> int:
        """Jobs waiting (a cancelled one leaves the count at once, though the runner drops it
        from the queue only when it gets to it)."""
        with self._cond:
            return waiting_count(self._queue)

    def queue_position(self, job: Job) -> int | None:
        """How many waiting jobs are ahead of `job` (0: it runs next); None when it is not
        waiting (running, done, cancelled, or not this slot's)."""
        with self._cond:
            return waiting_position(self._queue, job)

    @property
    def running_jobs(self) -> int:
        """Jobs running now (more than one when a batch runs)."""
        with self._cond:
            return len(self._active)

    @property
    def state(self) -> str:
        return self._state

    @property
    def gpu_memory_bytes(self) -> int | None:
        """CUDA memory allocated by this process while the model is loaded (None without CUDA;
        shared by every model loaded in the process)."""
        return memory.cuda_allocated() if self.backend is not None else None

    @property
    def busy(self) -> bool:
        """A job is running or waiting: not a candidate for unloading."""
        with self._cond:
            return self._running > 0 or any(not j.future.done() for j in self._queue)

    @property
    def memory_bytes(self) -> int | None:
        """The model's memory: its admission estimate (a worker measures its process instead)."""
        need = self.memory_need
        return need.bytes if need is not None else None

    def submit(self, job: Job) -> None:
        with self._cond:
            if self._closed:
                raise ModelLoading(f"model {self.config.name!r} is shutting down")
            self._queue = collections.deque(j for j in self._queue if not j.future.done())
            if len(self._queue) >= self.settings.max_queue:
                self.events.job_rejected(self.config.name, self.backend_name)
                raise Busy(
                    f"model {self.config.name!r} has {len(self._queue)} requests queued "
                    f"(the limit is {self.settings.max_queue}); try again shortly",
                    headers={"Retry-After": "5"},
                )
            self._queue.append(job)
            self._cond.notify()
        self.events.watch(job, self.backend_name)
        job.emit(ProgressEvent("queued", message=f"{len(self._queue)} in queue"))

    def _next_jobs(self) -> list[Job]:
        """The next job, plus queued jobs that can share its pipeline call (batching.py)."""
        with self._cond:
            while not self._closed:
                while self._queue:
                    job = self._queue.popleft()
                    if job.start():
                        self._running += 1
                        self._active = [job, *self._take_batch(job)]
                        return list(self._active)
                self._cond.wait()
            return []

    def _take_batch(self, first: Job) -> list[Job]:
        """Called with `_cond` held: pull compatible jobs off the queue (max_batch images)."""
        if self.settings.max_batch <= 1 or not self.batches:
            return []
        if hires.upscaler_of(first.request, self.config) is not None:
            return []  # two passes, or a backend's own hires call: alone
        if batching.enhances_prompts(self.config):
            return []  # the prompt enhancer samples per call: alone
        queued = [j for j in self._queue if not j.future.done()]
        picked = batching.take_compatible(
            first.request, [j.request for j in queued], self.settings.max_batch
        )
        jobs = []
        for index in picked:
            job = queued[index]
            self._queue.remove(job)
            if job.start():
                jobs.append(job)
        return jobs

    @property
    def batches(self) -> bool:
        """Whether this slot can run several jobs in one call (its backend's capabilities)."""
        return capabilities_of(self.backend_cls).batch

    def _run(self) -> None:
        while jobs := self._next_jobs():
            try:
                with self.busy_lock:
                    if len(jobs) == 1:
                        outcomes: list[ImageResult | BaseException] = [self._attempt(jobs[0])]
                    else:
                        outcomes = self._attempt_batch(jobs)
            finally:
                self.last_used = time.monotonic()
                with self._cond:
                    self._running = 0
                    self._active = []
            for job, outcome in zip(jobs, outcomes, strict=True):
                if job.future.done():
                    continue
                if isinstance(outcome, BaseException):
                    job.future.set_exception(outcome)
                else:
                    job.future.set_result(outcome)

    def _attempt(self, job: Job) -> ImageResult | BaseException:
        try:
            return self.run_job(job)
        except LocalimgError as exc:
            return exc
        except Exception as exc:
            log.exception("model %s failed", self.config.name)
            return as_backend_error(exc)

    def _attempt_batch(self, jobs: list[Job]) -> list[ImageResult | BaseException]:
        try:
            return list(self.run_batch(jobs))
        except LocalimgError as exc:
            return [exc] * len(jobs)
        except Exception as exc:
            log.exception("model %s failed", self.config.name)
            return [as_backend_error(exc)] * len(jobs)

    def run_batch(self, jobs: list[Job]) -> list[ImageResult | BaseException]:
        """Load if needed, merge each request, generate all in one call (on the slot's thread)."""
        started = time.monotonic()
        backend = self.ensure_loaded(jobs[0])
        loaded = time.monotonic() - started
        requests = [
            merge_request(j.request, self.config, backend.defaults, self.backend_cls.option_keys)
            for j in jobs
        ]
        begin = time.monotonic()
        cancel = batching.AllCancelled([j.cancel_event for j in jobs])
        if not isinstance(backend, BatchBackend):  # declared batch=True without the method
            raise TypeError(f"backend {self.backend_cls.name} has no generate_batch")
        results = backend.generate_batch(requests, [j.emit for j in jobs], cancel)
        inference = time.monotonic() - begin
        outcomes: list[ImageResult | BaseException] = []
        for job, request, result in zip(jobs, requests, results, strict=True):
            if job.cancel_event.is_set():
                outcomes.append(Cancelled("the request was cancelled"))
                continue
            result.timings = {
                "queue": started - job.submitted,
                "load": loaded,
                "inference": inference,
                "batch": float(len(jobs)),
                **result.timings,
            }
            result.request = request
            result.model = self.config.name
            steps = request.steps or 0
            job.emit(ProgressEvent("done", step=steps, total=steps))
            outcomes.append(result)
        return outcomes

    def run_job(self, job: Job) -> ImageResult:
        """Load if needed, merge, generate (both passes of a hires fix the slot runs: hires.py).
        Runs on the slot's thread."""
        return self.finish_hires(job, self.run_pass(job))

    def finish_hires(self, job: Job, result: ImageResult) -> ImageResult:
        """`result`, or when it is the first pass of a hires fix with a pixel upscaler, the
        second pass run over it (each image upscaled by the engine, then img2img)."""
        if not hires.pending(result, self.backend_cls) or self.hires_first_pass_only:
            return result
        if self.upscale is None:
            raise InvalidRequest(
                "a hires fix with a pixel upscaler runs through the engine's upscalers, which "
                "this model's slot lacks; use a latent upscaler",
                param="hires_upscaler",
            )
        return hires.finish(job, result, self.run_pass, self.upscale)

    def run_pass(self, job: Job) -> ImageResult:
        """Load if needed, merge, generate one backend call (of a hires fix run here: its
        first pass, the request without hires, the merged request in the result)."""
        started = time.monotonic()
        timings = {"queue": started - job.submitted}
        if job.cancel_event.is_set():
            raise Cancelled("the request was cancelled before it started")
        backend = self.ensure_loaded(job)
        self.admit_controlnets(job.request)
        timings["load"] = time.monotonic() - started
        request = merge_request(
            job.request, self.config, backend.defaults, self.backend_cls.option_keys
        )
        begin = time.monotonic()
        call, emit = request, cast(Callable[[ProgressEvent], None], job.emit)
        two_passes = hires.in_slot(request, self.backend_cls)
        if two_passes:
            check = getattr(backend, "check_hires", None)  # refuse before any step runs
            if check is not None:
                check(request)
            call, emit = hires.first_pass(request, job.emit)
        result = backend.generate(call, emit, job.cancel_event)
        if request.mask is not None and result.fps is None:
            result.images = conditioning.keep_unmasked(result.images, request)
        timings["inference"] = time.monotonic() - begin
        result.timings = {**timings, **result.timings}
        result.request = request
        result.model = self.config.name
        steps = hires.total_steps(request)
        if not two_passes:
            job.emit(ProgressEvent("done", step=steps, total=steps))
        return result

    def ensure_loaded(self, job: Job) -> Backend:
        """Load the model unless it is loaded (blocking); the loaded backend. Jobs, preloads
        and the worker child all load through here, so admission and progress are the same."""
        with self.busy_lock:  # one load at a time, even with a preload racing the first job
            if self.backend is not None:
                return self.backend
            if self.before_load is not None:
                self.before_load(self)  # may evict idle models, or refuse (lifecycle.py)
            self.counted_controlnets = set()
            self._state = "loading"
            job.emit(ProgressEvent("load", message=f"loading {self.config.name}"))
            backend = self.backend_cls(self.settings.runtime)
            began = time.monotonic()
            try:
                backend.load(self.config, job.emit)
            except BaseException:
                self._state = "unloaded"
                self.memory_need = None
                raise
            self.backend = backend
            self.loads += 1
            self._state = "loaded"
            self.last_used = time.monotonic()
            self.last_load_seconds = self.last_used - began
            self.events.model_loaded(self.config.name, self.backend_name, self.last_load_seconds)
            return backend

    def admit_controlnets(self, request: ImageRequest) -> None:
        """Count each ControlNet the request brings that the loaded model has not held yet in
        the memory budget (making room for it, or refusing, as for a model); it stays counted
        until the model unloads, as the backend keeps it loaded beside the model."""
        if self.before_grow is None:
            return
        asked = {unit.net for unit in request.controls if unit.net}
        new = asked - self.counted_controlnets - {self.config.default_control_net}
        for ref in sorted(new):
            self.before_grow(self, memory.controlnet_need(ref, self.config, self.settings.runtime))
            self.counted_controlnets.add(ref)

    def load(self) -> None:
        """Load the model now (blocking): `--preload` and `POST /models/{name}/load`."""
        probe = Job(id="load", model=self.config.name, request=ImageRequest(prompt=""))
        self.ensure_loaded(probe)

    def unload(self, release_memory: bool = True) -> None:
        """Free the model's memory (after the running job, if any).

        `release_memory=False` skips the garbage collection and the heap trim (a few hundred
        ms): for a process that is about to exit, whose memory the OS takes back anyway.
        """
        with self.busy_lock:
            with self._cond:
                backend, self.backend = self.backend, None
                self._state = "unloaded"
                self.memory_need = None
            if backend is not None:
                backend.unload()
                del backend
                if release_memory:
                    memory.release_free_memory()

    def unload_if_idle(self) -> bool:
        """Unload unless a job is running or queued (never waits); whether it unloaded."""
        if not self.busy_lock.acquire(blocking=False):
            return False
        try:
            if self.busy:
                return False
            self.unload()
            return True
        finally:
            self.busy_lock.release()

    def close(self, release_memory: bool = True) -> None:
        with self._cond:
            self._closed = True
            pending = list(self._queue) + self._active
            self._queue.clear()
            self._cond.notify_all()
        for job in pending:
            job.cancel()  # a running job stops at its next step
        self._thread.join(timeout=5)
        self.unload(release_memory)
