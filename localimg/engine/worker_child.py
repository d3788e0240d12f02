"""The child side of a worker process: an ordinary InProcessSlot driven over a pipe.

It runs in a fresh interpreter (spawn), so it imports only the engine's own modules; the
message protocol is described in worker_parent.py.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from localimg._util.logs import JsonFormatter
from localimg.config import ModelConfig
from localimg.engine import memory
from localimg.engine.job import Job, as_backend_error
from localimg.engine.settings import EngineSettings
from localimg.engine.slots import InProcessSlot
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
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    send_lock = threading.Lock()

    def send(message: tuple[Any, ...]) -> None:
        with send_lock:
            conn.send(message)

    inbox: queue.Queue[tuple[Any, ...]] = queue.Queue()
    jobs: dict[str, Job] = {}

    def reader() -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):  # the parent is gone
                message = ("stop",)
            if message[0] == "cancel":
                job = jobs.get(message[1])
                if job is not None:
                    job.cancel()
                continue
            if message[0] == "job":
                jobs[message[1]] = Job(id=message[1], model=config.name, request=message[2])
            if message[0] == "batch":
                for job_id, request in message[1]:
                    jobs[job_id] = Job(id=job_id, model=config.name, request=request)
            inbox.put(message)
            if message[0] == "stop":
                for job in list(jobs.values()):
                    job.cancel()
                return

    threading.Thread(target=reader, name="localimg-worker-reader", daemon=True).start()
    slot = InProcessSlot(config, settings)

    def report_memory() -> None:
        allocated = memory.cuda_allocated()  # None on CPU: nothing sent
        if allocated is not None:
            send(("memory", allocated))

    def loaded() -> None:
        backend = slot.backend
        report_memory()
        describe = backend.describe() if backend is not None else {}
        send(("loaded", describe, slot.last_load_seconds))

    while True:
        message = inbox.get()
        kind = message[0]
        if kind == "stop":
            break
        if kind == "load":
            try:
                probe = Job(id="load", model=config.name, request=ImageRequest(prompt=""))
                slot.ensure_loaded(probe)  # the same loading path as a job's first run
                loaded()
            except LocalimgError as exc:
                send(("error", None, exc))
            except Exception as exc:
                log.exception("loading failed")
                send(("error", None, as_backend_error(exc)))
            continue
        if kind == "batch":
            batch = [jobs[job_id] for job_id, _ in message[1]]
            run_batch_here(slot, batch, jobs, send, loaded, report_memory)
            continue
        if kind != "job":
            continue
        job = jobs[message[1]]
        was_loaded = slot.backend is not None

        def relay(event: ProgressEvent, job_id: str = job.id) -> None:
            send(("progress", job_id, event))

        job.listeners.append(relay)
        reply: tuple[Any, ...]
        try:
            slot.submit(job)
            reply = ("result", job.id, job.result())
        except LocalimgError as exc:
            reply = ("error", job.id, exc)
        except Exception as exc:
            log.exception("generation failed")
            reply = ("error", job.id, as_backend_error(exc))
        jobs.pop(job.id, None)
        if not was_loaded and slot.backend is not None:
            loaded()
        else:
            report_memory()
        send(reply)
    slot.close()
    conn.close()


def run_batch_here(
    slot: InProcessSlot,
    batch: list[Job],
    jobs: dict[str, Job],
    send: Callable[[tuple[Any, ...]], None],
    loaded: Callable[[], None],
    report_memory: Callable[[], None],
) -> None:
    """The child's side of a batch: run it on the slot, answer each job by id."""
    was_loaded = slot.backend is not None
    for job in batch:

        def relay(event: ProgressEvent, job_id: str = job.id) -> None:
            send(("progress", job_id, event))

        job.listeners.append(relay)
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
    if not was_loaded and slot.backend is not None:
        loaded()
    else:
        report_memory()
    for job, outcome in zip(batch, outcomes, strict=True):
        jobs.pop(job.id, None)
        kind = "error" if isinstance(outcome, BaseException) else "result"
        send((kind, job.id, outcome))
