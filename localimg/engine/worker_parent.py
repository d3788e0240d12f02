"""A model's backend in a child process of its own (used by `localimg serve`).

Native code can take the whole process down: a segfault in a kernel, the kernel's out-of-memory
killer, a generation that never returns. In a worker process that costs one request an error and
the worker is started again, while the server and the other models keep serving. Unloading a
model means ending its process, which gives its memory back for real.

The parent side, `WorkerSlot`, is an engine `Slot`: it keeps the engine's bounded queue and single
runner thread (inherited from `InProcessSlot`), but `run_job` ships the request to the child and
waits for progress events and the result. The child runs an ordinary `InProcessSlot`, so request
merging, timings and cancellation are the same code as in the CLI.

The messages both ways are the dataclasses of worker_messages.py.

Job outcomes are reported by the inherited runner here, in the parent; model loads (from
"loaded") and restarts are reported to the engine's events here too (events.py).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from localimg.config import ModelConfig
from localimg.engine import memory
from localimg.engine.job import Job
from localimg.engine.settings import EngineSettings
from localimg.engine.slots import InProcessSlot
from localimg.engine.worker_child import worker_main
from localimg.engine.worker_messages import (
    Cancel,
    Failure,
    Load,
    Loaded,
    MemoryReport,
    Progress,
    Result,
    RunBatch,
    RunJob,
    Stop,
    ToChild,
    ToParent,
    job_of,
)
from localimg.errors import BackendError, Cancelled
from localimg.requests import ImageRequest, ImageResult

log = logging.getLogger(__name__)

POLL_SECONDS = 0.05


@dataclass(frozen=True)
class WorkerOptions:
    """How worker processes are run and supervised."""

    start_method: str = "spawn"  # fork is unsafe once torch or threads exist in the parent
    cancel_grace: float = 10.0  # a cancelled job must stop within this, or its worker is killed
    stop_grace: float = 5.0  # how long a stopping worker may take before it is killed
    log_level: str = "WARNING"
    log_format: str = "text"  # "json": the worker logs JSON lines, as the server does


def exit_description(code: int | None) -> str:
    """`-9` → "killed by signal 9 (SIGKILL; out of memory?)"."""
    if code is None:
        return "stopped responding"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (out of memory?)" if -code == signal.SIGKILL else ""
        return f"was killed by {name}{hint}"
    return f"exited with status {code}"


class WorkerSlot(InProcessSlot):
    """An engine slot whose backend runs in a supervised child process."""

    def __init__(
        self,
        config: ModelConfig,
        settings: EngineSettings,
        options: WorkerOptions | None = None,
    ) -> None:
        self.options = options or WorkerOptions()
        self._io_lock = threading.RLock()  # one conversation with the child at a time
        self._process: Any = None
        self._conn: Connection | None = None
        self._worker_state = "stopped"
        self._describe: dict[str, str] = {}
        self._current: Job | None = None
        self._heard = False  # whether the child has answered anything about the current job
        self._gpu_bytes: int | None = None  # the child's last MemoryReport
        self.restarts = 0
        super().__init__(config, settings)

    # -- state ------------------------------------------------------------------------------

    @property
    def state(self) -> str:
        """stopped, starting, loading, loaded (or failed after a crash until restarted)."""
        return self._worker_state

    @property
    def pid(self) -> int | None:
        process = self._process
        return int(process.pid) if process is not None and process.is_alive() else None

    @property
    def running(self) -> Job | None:
        return self._current

    @property
    def resident_bytes(self) -> int | None:
        """The worker process's resident memory now (/proc), None without a worker."""
        pid = self.pid
        return memory.process_rss(pid) if pid is not None else None

    @property
    def gpu_memory_bytes(self) -> int | None:
        """CUDA memory the worker process last reported (None on CPU or without a worker)."""
        return self._gpu_bytes if self.pid is not None else None

    def info(self) -> dict[str, Any]:
        return {"state": self.state, "pid": self.pid, "restarts": self.restarts, **self._describe}

    @property
    def memory_bytes(self) -> int | None:
        """The worker process's resident memory (measured), or the admission estimate."""
        pid = self.pid
        measured = memory.process_rss(pid) if pid is not None else None
        need = self.memory_need
        if need is not None and need.where == "vram":
            return need.bytes
        return measured if measured is not None else super().memory_bytes

    def _admit(self) -> None:
        """The engine's admission check (lifecycle.py) before the child loads the model."""
        if self._worker_state != "loaded" and self.before_load is not None:
            self.before_load(self)
            self.counted_controlnets = set()

    # -- process management ------------------------------------------------------------------

    def _start_process(self) -> None:
        context: Any = multiprocessing.get_context(self.options.start_method)
        parent_conn, child_conn = context.Pipe(duplex=True)
        process = context.Process(
            target=worker_main,
            args=(
                child_conn,
                self.config,
                self.settings,
                self.options.log_level,
                self.options.log_format,
            ),
            name=f"localimg-worker-{self.config.name}",
            daemon=True,
        )
        process.start()
        child_conn.close()
        self._process, self._conn = process, parent_conn
        self._worker_state = "starting"
        log.info("model %s: worker process %s started", self.config.name, process.pid)

    def _ensure_process(self) -> Connection:
        if self._process is None or not self._process.is_alive():
            if self._process is not None:
                how = exit_description(self._process.exitcode)
                log.warning(
                    "model %s: worker process %s; starting a new one", self.config.name, how
                )
                self._reap()
                self.restarts += 1
                self._start_process()
                self.events.worker_restarted(self.config.name, self.backend_name, how)
            else:
                self._start_process()
        assert self._conn is not None
        return self._conn

    def _reap(self) -> None:
        """Forget a dead (or doomed) process: kill it if needed, close the pipe."""
        process, conn = self._process, self._conn
        self._process, self._conn = None, None
        self._worker_state = "stopped"
        self._gpu_bytes = None
        if process is not None:
            if process.is_alive():
                process.kill()
            process.join(timeout=5)
        if conn is not None:
            conn.close()

    def _restart(self, reload: bool, reason: str) -> None:
        """Start a fresh worker after a crash (and load the model again if it was loaded)."""
        self.restarts += 1
        if self._closed:
            return
        self._start_process()
        self.events.worker_restarted(self.config.name, self.backend_name, reason)
        if reload and self._conn is not None:
            self._worker_state = "loading"
            self._send(self._conn, Load())

    def _send(self, conn: Connection, message: ToChild) -> None:
        # A dead child is noticed by the receive loop.
        with contextlib.suppress(OSError, EOFError):
            conn.send(message)

    def preload(self) -> None:
        """Start the worker and load the model now (blocking); errors are raised."""
        with self.busy_lock, self._io_lock:  # the keep-alive reaper waits for the load
            if self._worker_state == "loaded" and self.pid is not None:
                return
            self._admit()
            conn = self._ensure_process()
            self._worker_state = "loading"
            self._send(conn, Load())
            while True:
                match self._receive(conn, None):
                    case Loaded():
                        self.last_used = time.monotonic()
                        return
                    case Failure(job_id=None, error=error):
                        self._worker_state = "failed"
                        self.memory_need = None
                        raise error

    def load(self) -> None:
        """Load the model in the worker process now (not in this one)."""
        self.preload()

    def _receive(self, conn: Connection, job: Job | None) -> ToParent | None:
        """The next message from the child, None after a quiet poll; raises if it died."""
        try:
            if conn.poll(POLL_SECONDS):
                message: ToParent = conn.recv()
                self._note(message)
                return message
        except (EOFError, OSError):
            pass
        else:
            if self._process is not None and self._process.is_alive():
                return None
        process = self._process
        if process is not None:
            process.join(timeout=2)
        how = exit_description(process.exitcode if process is not None else None)
        was_loaded = self._worker_state == "loaded"
        self._reap()
        self._restart(reload=was_loaded, reason=how)
        what = "while generating" if job is not None else "while loading"
        raise BackendError(
            f"the worker process of model {self.config.name!r} {how} {what}; "
            "it is restarted for the next request",
            code="worker_crashed",
        )

    def _note(self, message: ToParent) -> None:
        """What every message tells the slot itself: its state, load count, memory."""
        match message:
            case Loaded(describe=describe, seconds=seconds):
                self._worker_state = "loaded"
                self._describe = dict(describe)
                self.loads += 1
                if isinstance(seconds, (int, float)):
                    self.last_load_seconds = float(seconds)
                    self.events.model_loaded(self.config.name, self.backend_name, float(seconds))
            case MemoryReport(cuda_bytes=cuda_bytes):
                self._gpu_bytes = int(cuda_bytes)
            case Progress(event=event):
                if event.phase == "load":
                    self._worker_state = "loading"
                elif event.phase in ("step", "decode", "done"):
                    self._worker_state = "loaded"

    # -- jobs ---------------------------------------------------------------------------------

    def run_pass(self, job: Job) -> ImageResult:
        """Send the job to the child and relay its events until the result comes back (the
        inherited run_job runs a hires fix's second pass here, through this, too)."""
        with self._io_lock:
            self._current = job
            try:
                self._admit()
                self.admit_controlnets(job.request)
                for attempt in (1, 2):
                    conn = self._ensure_process()
                    self._heard = False
                    self._send(conn, RunJob(job.id, job.request))
                    try:
                        return self._await(conn, job)
                    except BackendError as exc:
                        # A worker that died before it said a word about this job (killed while
                        # idle, say) cost the job nothing: run it once more on the fresh worker.
                        if exc.code != "worker_crashed" or self._heard or attempt == 2:
                            raise
                        log.warning(
                            "model %s: retrying %s on a new worker", self.config.name, job.id
                        )
                raise AssertionError("unreachable")
            finally:
                self._current = None

    def _await(self, conn: Connection, job: Job) -> ImageResult:
        cancel_sent: float | None = None
        while True:
            if job.cancel_event.is_set() and cancel_sent is None:
                self._send(conn, Cancel(job.id))
                cancel_sent = time.monotonic()
            if (
                cancel_sent is not None
                and time.monotonic() - cancel_sent > self.options.cancel_grace
            ):
                log.warning(
                    "model %s: worker did not stop within %.0f s of a cancel; killing it",
                    self.config.name,
                    self.options.cancel_grace,
                )
                self._reap()
                self._restart(reload=False, reason="did not stop after a cancel")
                raise Cancelled(
                    "the request was cancelled; the model's worker did not stop in time and is "
                    "restarted"
                )
            message = self._receive(conn, job)
            if message is None:
                continue
            if job_of(message) == job.id:
                self._heard = True
            match message:
                case Progress(job_id=job.id, event=event):
                    job.emit(event)
                case Result(job_id=job.id, result=result):
                    return result
                case Failure(job_id=job.id, error=error):
                    raise error
                case Failure(error=error):
                    log.warning("model %s: background load failed: %s", self.config.name, error)

    # -- lifecycle ----------------------------------------------------------------------------

    def _stop_process(self) -> None:
        process, conn = self._process, self._conn
        if process is None or conn is None:
            self._reap()
            return
        self._send(conn, Stop())
        process.join(timeout=self.options.stop_grace)
        self._reap()

    def unload(self, release_memory: bool = True) -> None:
        """End the worker process: the model's memory goes back to the system (always)."""
        with self._io_lock:
            self._stop_process()
            self._describe = {}
            self.memory_need = None

    # -- batches ------------------------------------------------------------------------------

    def run_batch(self, jobs: list[Job]) -> list[ImageResult | BaseException]:
        """Send a batch (batching.py) to the child; relay each job's events and outcome."""
        with self._io_lock:
            self._current = jobs[0]
            try:
                self._admit()
                conn = self._ensure_process()
                self._send(conn, RunBatch(tuple((job.id, job.request) for job in jobs)))
                return self._await_batch(conn, jobs)
            finally:
                self._current = None

    def _await_batch(self, conn: Connection, jobs: list[Job]) -> list[ImageResult | BaseException]:
        by_id = {job.id: job for job in jobs}
        outcomes: dict[str, ImageResult | BaseException] = {}
        cancels_sent: set[str] = set()
        all_cancelled: float | None = None
        while len(outcomes) < len(jobs):
            for job in jobs:
                if job.cancel_event.is_set() and job.id not in cancels_sent:
                    self._send(conn, Cancel(job.id))
                    cancels_sent.add(job.id)
            if len(cancels_sent) == len(jobs) and all_cancelled is None:
                all_cancelled = time.monotonic()
            if all_cancelled and time.monotonic() - all_cancelled > self.options.cancel_grace:
                self._reap()
                self._restart(reload=False, reason="did not stop after a cancel")
                raise Cancelled("the batch was cancelled; its worker did not stop in time")
            message = self._receive(conn, jobs[0])
            match message:
                case Progress(job_id=job_id, event=event) if job_id in by_id:
                    by_id[job_id].emit(event)
                case Result(job_id=job_id, result=result) if job_id in by_id:
                    outcomes[job_id] = result
                case Failure(job_id=str(job_id), error=error) if job_id in by_id:
                    outcomes[job_id] = error
        return [outcomes[job.id] for job in jobs]

    def close(self, release_memory: bool = True) -> None:
        """Drop queued jobs, cancel the running one, stop the worker (its memory goes with it)."""
        with self._cond:
            self._closed = True
            pending = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        for job in pending:
            job.cancel()
        current = self._current
        if current is not None:
            current.cancel()
        self._thread.join(timeout=self.options.cancel_grace + 2)
        self.unload()


def load_now(slot: object) -> None:
    """Load a slot's model now (blocking): `--preload`, for worker and in-process slots alike.

    The server answers 503 for a model while it preloads, so no job races this load.
    """
    if isinstance(slot, WorkerSlot):
        slot.preload()
    elif isinstance(slot, InProcessSlot):
        config = slot.config
        slot.ensure_loaded(Job(id="preload", model=config.name, request=ImageRequest(prompt="")))
    else:  # any other Slot (serve --ray's RaySlot deploys its model here)
        slot.load()  # type: ignore[attr-defined]


def worker_slot_factory(
    options: WorkerOptions | None = None,
) -> Callable[[ModelConfig, EngineSettings], WorkerSlot]:
    """A `slot_factory` for `Engine` that puts each model in a worker process."""

    def make(config: ModelConfig, settings: EngineSettings) -> WorkerSlot:
        return WorkerSlot(config, settings, options)

    return make
