"""The child side of a worker process: an ordinary InProcessSlot driven over a pipe.

It runs in a fresh interpreter (spawn), so it imports only the engine's own modules; the
messages are the dataclasses of worker_messages.py. A reader thread takes each message off the
pipe as it comes, so a `Cancel` reaches a running job at once; everything else waits its turn
in an inbox that the main thread works through, one job or batch at a time.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
from multiprocessing.connection import Connection

from localimg._util.logs import JsonFormatter
from localimg._util.malloc_arenas import use_one_arena
from localimg._util.quiet import quiet_library_warnings
from localimg.config import ModelConfig
from localimg.engine import memory
from localimg.engine.job import Job, as_backend_error
from localimg.engine.settings import EngineSettings
from localimg.engine.slots import InProcessSlot
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
)
from localimg.errors import LocalimgError
from localimg.requests import ImageRequest, ImageResult, ProgressEvent

log = logging.getLogger(__name__)


def setup_worker_logging(model: str, log_level: str, log_format: str) -> None:
    """The worker's log lines on stderr: "[worker name] message", or JSON objects with a
    `worker` field when the server logs JSON."""
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter({"worker": model, "pid": os.getpid()}))
    else:
        handler.setFormatter(logging.Formatter(f"[worker {model}] %(message)s"))
    logging.basicConfig(level=log_level, handlers=[handler], force=True)


def worker_main(
    conn: Connection,
    config: ModelConfig,
    settings: EngineSettings,
    log_level: str,
    log_format: str = "text",
) -> None:
    """Entry point of a worker process: an in-process slot driven over a pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    setup_worker_logging(config.name, log_level, log_format)
    quiet_library_warnings()  # the libraries' own, not those our code earns
    use_one_arena()  # before the reader and the slot's threads allocate (_util/malloc_arenas.py)
    WorkerChild(conn, config, settings).serve()


class WorkerChild:
    """The child's end of the pipe: its reader thread, its inbox and the slot it drives."""

    slot: InProcessSlot  # made in serve(), once the reader runs

    def __init__(self, conn: Connection, config: ModelConfig, settings: EngineSettings) -> None:
        self.conn = conn
        self.config = config
        self.settings = settings
        self._send_lock = threading.Lock()  # the reader, the relays and the main thread send
        self.inbox: queue.Queue[ToChild] = queue.Queue()
        self.jobs: dict[str, Job] = {}  # by id, from their message until their answer

    def send(self, message: ToParent) -> None:
        with self._send_lock:
            self.conn.send(message)

    def serve(self) -> None:
        """Read the pipe on a thread of its own; run the inbox here until `Stop`."""
        threading.Thread(target=self.read, name="localimg-worker-reader", daemon=True).start()
        self.slot = InProcessSlot(self.config, self.settings)
        self.slot.hires_first_pass_only = True  # the parent upscales and runs the second pass
        while True:
            match self.inbox.get():
                case Stop():
                    break
                case Load():
                    self.load()
                case RunBatch(jobs=entries):
                    self.run_batch([self.jobs[job_id] for job_id, _ in entries])
                case RunJob(job_id=job_id):
                    self.run_job(self.jobs[job_id])
        self.slot.close()
        self.conn.close()

    def read(self) -> None:
        """The reader thread: a cancel acts at once, the rest queues; a lost parent stops."""
        while True:
            message: ToChild
            try:
                message = self.conn.recv()
            except (EOFError, OSError):  # the parent is gone
                message = Stop()
            match message:
                case Cancel(job_id=job_id):
                    job = self.jobs.get(job_id)
                    if job is not None:
                        job.cancel()
                    continue
                case RunJob(job_id=job_id, request=request):
                    self.jobs[job_id] = Job(id=job_id, model=self.config.name, request=request)
                case RunBatch(jobs=entries):
                    for job_id, request in entries:
                        self.jobs[job_id] = Job(id=job_id, model=self.config.name, request=request)
            self.inbox.put(message)
            if isinstance(message, Stop):
                for job in list(self.jobs.values()):
                    job.cancel()
                return

    def report_memory(self) -> None:
        allocated = memory.cuda_allocated()  # None on CPU: nothing sent
        if allocated is not None:
            self.send(MemoryReport(allocated))

    def loaded(self) -> None:
        backend = self.slot.backend
        self.report_memory()
        describe = backend.describe() if backend is not None else {}
        self.send(Loaded(describe, self.slot.last_load_seconds))

    def after_run(self, was_loaded: bool) -> None:
        """What the parent hears before an answer: the load a job caused, or the memory now."""
        if not was_loaded and self.slot.backend is not None:
            self.loaded()
        else:
            self.report_memory()

    def relay(self, job: Job) -> None:
        """Send the job's progress events (previews included) to the parent as they come."""

        def relay(event: ProgressEvent, job_id: str = job.id) -> None:
            self.send(Progress(job_id, event))

        job.listeners.append(relay)

    def load(self) -> None:
        try:
            probe = Job(id="load", model=self.config.name, request=ImageRequest(prompt=""))
            self.slot.ensure_loaded(probe)  # the same loading path as a job's first run
            self.loaded()
        except LocalimgError as exc:
            self.send(Failure(None, exc))
        except Exception as exc:
            log.exception("loading failed")
            self.send(Failure(None, as_backend_error(exc)))

    def run_job(self, job: Job) -> None:
        """Run one job on the slot (its queue and runner, as in the CLI) and answer it."""
        was_loaded = self.slot.backend is not None
        self.relay(job)
        reply: Result | Failure
        try:
            self.slot.submit(job)
            reply = Result(job.id, job.result())
        except LocalimgError as exc:
            reply = Failure(job.id, exc)
        except Exception as exc:
            log.exception("generation failed")
            reply = Failure(job.id, as_backend_error(exc))
        self.jobs.pop(job.id, None)
        self.after_run(was_loaded)
        self.send(reply)

    def run_batch(self, batch: list[Job]) -> None:
        """The child's side of a batch: run it on the slot, answer each job by id."""
        slot = self.slot
        was_loaded = slot.backend is not None
        for job in batch:
            self.relay(job)
            job.start()
        outcomes: list[ImageResult | BaseException]
        try:
            with slot.busy_lock:
                outcomes = slot.run_batch(batch)
        except LocalimgError as exc:
            outcomes = [exc] * len(batch)
        except Exception as exc:
            log.exception("batch generation failed")
            outcomes = [as_backend_error(exc)] * len(batch)
        self.after_run(was_loaded)
        for job, outcome in zip(batch, outcomes, strict=True):
            self.jobs.pop(job.id, None)
            if isinstance(outcome, BaseException):
                self.send(Failure(job.id, outcome))
            else:
                self.send(Result(job.id, outcome))
