"""The engine: model name → config → loaded backend, one job at a time per model.

The CLI and the server both call `Engine.submit` (or its blocking form `Engine.generate`). Each
model gets a slot with a bounded queue and a single runner, because a pipeline is neither
thread-safe nor able to share its device with a second generation. `merge_request` is the single
place where request values, YAML values and backend defaults are combined.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from localimg.backends import canonical_name, get_backend_class
from localimg.backends.base import BackendDefaults, RuntimeSettings
from localimg.config import ModelConfig, default_model_ref, default_models_path, resolve_model
from localimg.config.options import OPTION_ALIASES
from localimg.engine import batching, memory
from localimg.engine.lifecycle import Budget, Lifecycle
from localimg.errors import BackendError, Busy, Cancelled, LocalimgError, ModelLoading
from localimg.media import conditioning
from localimg.requests import (
    QUALITY_STEP_FACTORS,
    ImageRequest,
    ImageResult,
    ProgressEvent,
    random_seed,
    split_prompt,
)

if TYPE_CHECKING:
    from localimg.backends.base import Backend

log = logging.getLogger(__name__)

ProgressListener = Callable[[ProgressEvent], None]


def merge_request(
    request: ImageRequest,
    config: ModelConfig,
    defaults: BackendDefaults,
    option_keys: frozenset[str] = frozenset(),
) -> ImageRequest:
    """Fill every unset field: request > YAML (keys, then `options`) > backend defaults.

    The result has prompt and negative prompt split (`positive|negative`), a concrete size, steps,
    cfg scale and seed, and `extra` holding the pipeline keywords from `options` and the request.
    """
    options = config.parsed_options()
    from_options: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in options.items():
        if key in OPTION_ALIASES:
            from_options[OPTION_ALIASES[key]] = value
        elif key not in option_keys:
            extra[key] = value
    extra.update(request.extra)

    def pick(field_name: str, *yaml_values: Any) -> Any:
        value = getattr(request, field_name)
        if value is not None:
            return value
        for candidate in (*yaml_values, from_options.get(field_name)):
            if candidate is not None:
                return candidate
        return None

    prompt, negative = split_prompt(request.prompt, request.negative_prompt)
    size = config.default_size
    # An input image sets the size when neither the request nor the YAML does (conditioning.py).
    own: tuple[int | None, int | None] = (None, None)
    if request.init_image is not None:
        own = conditioning.size_for(request.init_image, defaults.size_multiple)
    width = pick("width", size[0] if size else None) or own[0] or defaults.width
    height = pick("height", size[1] if size else None) or own[1] or defaults.height
    steps = pick("steps", config.step)
    if steps is None or (request.steps is None and request.quality is not None):
        # OpenAI's quality scales the model's own count: its YAML's, else the backend's default.
        base_steps = steps or defaults.steps
        factor = QUALITY_STEP_FACTORS[request.quality] if request.quality else 1.0
        steps = max(1, round(base_steps * factor))
    cfg_scale = pick("cfg_scale", config.default_cfg_scale)
    seed = pick("seed", config.default_seed)
    try:
        return request.with_(
            prompt=prompt,
            negative_prompt=negative
            if negative is not None
            else from_options.get("negative_prompt"),
            width=int(width),
            height=int(height),
            steps=int(steps),
            cfg_scale=float(cfg_scale if cfg_scale is not None else defaults.cfg_scale),
            seed=int(seed) if seed is not None else random_seed(),
            scheduler=pick("scheduler", config.diffusers.scheduler_type),
            clip_skip=pick("clip_skip", config.diffusers.clip_skip),
            strength=pick("strength"),
            num_frames=pick("num_frames"),
            fps=pick("fps"),
            extra=extra,
            **conditioning.fitted(request, int(width), int(height)),
        )
    except (TypeError, ValueError) as exc:
        from localimg.errors import ConfigError

        raise ConfigError(f"{config.where}: options: {exc}") from None


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
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _started: bool = False

    def emit(self, event: ProgressEvent) -> None:
        self.last_event = event
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
            return self.future.set_running_or_notify_cancel()

    def result(self, timeout: float | None = None) -> ImageResult:
        return self.future.result(timeout)


class Slot(Protocol):
    """Runs the jobs of one model, one at a time. In-process here; a worker process in serve."""

    config: ModelConfig

    def submit(self, job: Job) -> None: ...

    @property
    def queue_depth(self) -> int: ...

    @property
    def state(self) -> str: ...

    def unload(self) -> None: ...

    def close(self, release_memory: bool = True) -> None: ...

    # Lifecycle (lifecycle.py): keep-alive, LRU and the memory budget.
    last_used: float
    memory_need: memory.Need | None
    before_load: Callable[[Any], None] | None

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
        self._busy_lock = threading.RLock()
        self._running = 0
        self._active: list[Job] = []  # the jobs running now (cancelled by close)
        self.last_used = time.monotonic()
        self.memory_need: memory.Need | None = None  # set when admitted, cleared on unload
        self.before_load: Callable[[Any], None] | None = None  # the engine's admission check
        self.loads = 0  # how many times the model was loaded (tests, /v1/models)
        self._thread = threading.Thread(
            target=self._run, name=f"localimg-slot-{config.name}", daemon=True
        )
        self._thread.start()

    @property
    def queue_depth(self) -> int:
        with self._cond:
            return len(self._queue)

    @property
    def state(self) -> str:
        return self._state

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
                raise Busy(
                    f"model {self.config.name!r} has {len(self._queue)} requests queued "
                    f"(the limit is {self.settings.max_queue}); try again shortly",
                    headers={"Retry-After": "5"},
                )
            self._queue.append(job)
            self._cond.notify()
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
        from localimg.backends.base import capabilities_of

        return capabilities_of(self.backend_cls).batch

    def _run(self) -> None:
        while jobs := self._next_jobs():
            try:
                with self._busy_lock:
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
        backend = self._ensure_loaded(jobs[0])
        loaded = time.monotonic() - started
        requests = [
            merge_request(j.request, self.config, backend.defaults, self.backend_cls.option_keys)
            for j in jobs
        ]
        begin = time.monotonic()
        cancel = batching.AllCancelled([j.cancel_event for j in jobs])
        results = backend.generate_batch(requests, [j.emit for j in jobs], cancel)  # type: ignore[attr-defined]
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
        """Load if needed, merge, generate. Runs on the slot's thread."""
        started = time.monotonic()
        timings = {"queue": started - job.submitted}
        if job.cancel_event.is_set():
            raise Cancelled("the request was cancelled before it started")
        backend = self._ensure_loaded(job)
        timings["load"] = time.monotonic() - started
        request = merge_request(
            job.request, self.config, backend.defaults, self.backend_cls.option_keys
        )
        begin = time.monotonic()
        result = backend.generate(request, job.emit, job.cancel_event)
        if request.mask is not None and result.fps is None:
            result.images = conditioning.keep_unmasked(result.images, request)
        timings["inference"] = time.monotonic() - begin
        result.timings = {**timings, **result.timings}
        result.request = request
        result.model = self.config.name
        steps = request.steps or 0
        job.emit(ProgressEvent("done", step=steps, total=steps))
        return result

    def _ensure_loaded(self, job: Job) -> Backend:
        with self._busy_lock:  # one load at a time, even with a preload racing the first job
            if self.backend is not None:
                return self.backend
            if self.before_load is not None:
                self.before_load(self)  # may evict idle models, or refuse (lifecycle.py)
            self._state = "loading"
            job.emit(ProgressEvent("load", message=f"loading {self.config.name}"))
            backend = self.backend_cls(self.settings.runtime)
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
            return backend

    def load(self) -> None:
        """Load the model now (blocking): `--preload` and `POST /models/{name}/load`."""
        probe = Job(id="load", model=self.config.name, request=ImageRequest(prompt=""))
        self._ensure_loaded(probe)

    def unload(self, release_memory: bool = True) -> None:
        """Free the model's memory (after the running job, if any).

        `release_memory=False` skips the garbage collection and the heap trim (a few hundred
        ms): for a process that is about to exit, whose memory the OS takes back anyway.
        """
        with self._busy_lock:
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
        if not self._busy_lock.acquire(blocking=False):
            return False
        try:
            if self.busy:
                return False
            self.unload()
            return True
        finally:
            self._busy_lock.release()

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


SlotFactory = Callable[[ModelConfig, "EngineSettings"], Slot]


@dataclass(frozen=True)
class EngineSettings:
    models_path: Path = field(default_factory=default_models_path)
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)
    max_queue: int = 16
    keep_alive: float | None = 300.0  # seconds an idle model stays loaded; None: forever
    max_loaded_models: int | None = None  # None: no limit; else LRU eviction of idle models
    memory_budget: Budget = field(default_factory=Budget)  # checked before each load
    max_batch: int = 1  # images per pipeline call across queued requests (batching.py)


class Engine:
    """Resolves model references, owns one slot per model and hands out jobs."""

    def __init__(
        self, settings: EngineSettings | None = None, slot_factory: SlotFactory | None = None
    ) -> None:
        self.settings = settings or EngineSettings()
        self._slot_factory: SlotFactory = slot_factory or InProcessSlot
        self._slots: dict[str, Slot] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.lifecycle = Lifecycle(
            lambda: self.slots,
            keep_alive=self.settings.keep_alive,
            max_loaded=self.settings.max_loaded_models,
            budget=self.settings.memory_budget,
            runtime=self.settings.runtime,
        )
        self.lifecycle.start()

    def resolve(self, ref: str | None) -> ModelConfig:
        """The config for a model reference (None: the default model)."""
        models_path = self.settings.models_path
        return resolve_model(ref or default_model_ref(models_path), models_path)

    def slot_for(self, config: ModelConfig) -> Slot:
        with self._lock:
            slot = self._slots.get(config.name)
            if slot is None:
                slot = self._slot_factory(config, self.settings)
                slot.before_load = self.lifecycle.admit
                self._slots[config.name] = slot
            return slot

    @property
    def slots(self) -> dict[str, Slot]:
        with self._lock:
            return dict(self._slots)

    def submit(
        self,
        model: str | None,
        request: ImageRequest,
        progress: ProgressListener | None = None,
    ) -> Job:
        """Validate and queue a request; raises at once for a bad request or a full queue."""
        config = self.resolve(model)
        canonical_name(config.backend)
        backend_cls = get_backend_class(config.backend)
        backend_cls.check_request(request, config)
        job = Job(id=f"job-{next(self._ids)}", model=config.name, request=request)
        if progress is not None:
            job.listeners.append(progress)
        self.slot_for(config).submit(job)
        return job

    def generate(
        self,
        model: str | None,
        request: ImageRequest,
        progress: ProgressListener | None = None,
        timeout: float | None = None,
    ) -> ImageResult:
        """Submit and wait. Ctrl-C cancels the job and lets the slot finish cleanly."""
        job = self.submit(model, request, progress)
        try:
            return job.result(timeout)
        except KeyboardInterrupt:
            job.cancel()
            raise
        except LocalimgError:
            raise

    def load(self, model: str | None) -> Slot:
        """Load a model now (blocking), making room for it as a request would; its slot."""
        slot = self.slot_for(self.resolve(model))
        slot.load()
        return slot

    def unload(self, name: str) -> bool:
        """Unload a model now (after its running job); False if it has no slot."""
        slot = self.slots.get(name)
        if slot is None:
            return False
        slot.unload()
        return True

    def close(self, release_memory: bool = True) -> None:
        """Stop every slot and unload its model; `release_memory=False` when the process exits."""
        self.lifecycle.stop()
        with self._lock:
            slots, self._slots = list(self._slots.values()), {}
        for slot in slots:
            slot.close(release_memory)
