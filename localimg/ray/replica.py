"""One replica of a model's Ray Serve deployment: an ordinary in-process slot with the backend.

Ray runs this class in a replica process of its own (on any host of the cluster); the ingress
(slot.RaySlot) calls `run` through a streaming deployment handle. The model is loaded in the
constructor, so a replica counts as ready (and receives requests) only once it can generate;
a model that cannot load does not fail the deployment over and over: the replica keeps the error
and answers it (`check`, and every `run`), so the ingress gets localimg's own error.

`run` yields, in order: ("started", replica name, pid, backend name), then ("progress",
ProgressEvent) as the slot reports them (previews included), then one ("result", ImageResult)
or ("error", LocalimgError). When the ingress cancels the call (a client gone, a job cancel,
A1111's interrupt), Ray cancels this coroutine and the job's cancel event stops the backend at
its next step, as everywhere else in localimg.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from concurrent.futures import Future
from typing import Any

from localimg.config import ModelConfig
from localimg.engine import EngineSettings, InProcessSlot, Job, as_backend_error
from localimg.errors import LocalimgError
from localimg.requests import ImageRequest, ImageResult, ProgressEvent

log = logging.getLogger("localimg.server.ray")

Message = tuple[Any, ...]


class ModelReplica:
    """A Serve deployment class (cluster.deploy wraps it with `serve.deployment`)."""

    def __init__(self, config: ModelConfig, settings: EngineSettings) -> None:
        from ray import serve

        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
        context = serve.get_replica_context()
        self.name = f"{config.name}#{context.replica_tag}"
        self.pid = os.getpid()
        self.slot = InProcessSlot(config, settings)
        self.load_error: LocalimgError | None = None
        try:
            self.slot.load()
        except LocalimgError as exc:
            self.load_error = exc
        except Exception as exc:
            log.exception("model %s: loading failed", config.name)
            self.load_error = as_backend_error(exc)
        if self.load_error is not None:
            log.error("replica %s: %s", self.name, self.load_error.message)

    def check(self) -> Message:
        """("ok", name, pid, describe) or ("error", LocalimgError): what the deploy waits for."""
        if self.load_error is not None:
            return ("error", self.load_error)
        backend = self.slot.backend
        describe = backend.describe() if backend is not None else {}
        return ("ok", self.name, self.pid, describe, self.slot.last_load_seconds)

    def status(self) -> dict[str, Any]:
        """This replica's name, pid and what its slot runs now (tests, diagnostics)."""
        return {
            "replica": self.name,
            "pid": self.pid,
            "running": self.slot.running_jobs,
            "state": self.slot.state,
        }

    async def run(self, job_id: str, request: ImageRequest) -> AsyncIterator[Message]:
        """Generate one request on this replica's slot, streaming its events and outcome."""
        yield ("started", self.name, self.pid, self.slot.backend_name)
        if self.load_error is not None:
            yield ("error", self.load_error)
            return
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[ProgressEvent | None] = asyncio.Queue()
        job = Job(id=job_id, model=self.slot.config.name, request=request)

        def relay(event: ProgressEvent) -> None:
            if event.phase != "queued":  # the ingress reported its own queue
                loop.call_soon_threadsafe(inbox.put_nowait, event)

        def finished(_: Future[ImageResult]) -> None:
            loop.call_soon_threadsafe(inbox.put_nowait, None)

        job.listeners.append(relay)
        job.future.add_done_callback(finished)
        try:
            try:
                self.slot.submit(job)
            except LocalimgError as exc:
                yield ("error", exc)
                return
            while (event := await inbox.get()) is not None:
                yield ("progress", event)
            yield outcome(job)
        finally:
            if not job.future.done():  # cancelled by the ingress (or the generator closed)
                job.cancel()

    def __del__(self) -> None:
        slot = getattr(self, "slot", None)
        if slot is not None:
            slot.close(release_memory=False)


def outcome(job: Job) -> Message:
    """A finished job as ("result", result) or ("error", LocalimgError)."""
    try:
        return ("result", job.future.result())
    except LocalimgError as exc:
        return ("error", exc)
    except Exception as exc:
        return ("error", as_backend_error(exc))
