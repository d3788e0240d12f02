"""One image job of `/v1/images/jobs` and what it reports: status, step, progress, ETA, queue
position, the latest preview and, once done, the result (jobs/images.py has the routes).

The engine's progress listener runs on a slot's thread; it only records the step and preview and
hands the event to the event loop, where each `/events` stream has a queue of its own, so every
step becomes one event even when a client reads slowly. Finished results are files in the server's
output folder (also when the client asked for b64_json: they are read back and encoded when asked
for), so a hundred kept jobs cost disk, not memory, and go with the job when it is dropped.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from localimg.errors import Cancelled, LocalimgError
from localimg.media import output
from localimg.media.encode import encode
from localimg.server.jobs import videos
from localimg.server.jobs.base import Job
from localimg.server.openai import schemas

if TYPE_CHECKING:
    from PIL.Image import Image

    from localimg.engine import Engine
    from localimg.engine import Job as EngineJob
    from localimg.requests import ImageResult, ProgressEvent


MAX_FINISHED_IMAGE_JOBS = 100  # finished image jobs kept (each also expires after the url TTL)
FINISHED = ("completed", "failed", "cancelled")
STEP_PHASES = ("step", "done")


@dataclass(kw_only=True)
class ImageJob(Job):
    """One POST /v1/images/jobs: the engine job while it runs, then its outcome."""

    label: ClassVar[str] = "image job"

    prepared: schemas.Prepared | None  # dropped once finished, with the input images it holds
    url_prefix: str  # where the output folder is served, from the POST's base URL
    loop: asyncio.AbstractEventLoop
    final_status: str | None = None  # completed / failed / cancelled once finished
    cancel_requested: bool = False
    step: int = 0
    total: int = 0
    result: dict[str, Any] | None = None  # the generations body, items with a "url" of `paths`
    paths: list[Path] = field(default_factory=list)
    as_b64: bool = False  # whether the result's items are shown as b64_json
    completed_at: int | None = None
    ttl: float = 3600.0  # the store's: when a finished job (and its files) expires
    preview: Image | None = None
    preview_png: tuple[Image, str] | None = field(default=None, repr=False)
    subscribers: set[asyncio.Queue[ProgressEvent | None]] = field(default_factory=set)

    def files(self) -> list[Path]:
        return list(self.paths)

    @property
    def status(self) -> str:
        if self.final_status is not None:
            return self.final_status
        if self.cancel_requested:
            return "cancelled"  # stopping at its next step
        job = self.job
        return "in_progress" if job is not None and job.started else "queued"

    @property
    def finished(self) -> bool:
        return self.final_status is not None

    def set_status(self, status: str) -> None:
        self.final_status = status

    def error_of(self, exc: Exception) -> dict[str, Any]:
        """OpenAI's error object, as the generations route would have answered it."""
        if isinstance(exc, LocalimgError):
            error: dict[str, Any] = exc.to_openai()["error"]
            return error
        return {
            "message": f"internal error: {type(exc).__name__}: {exc}",
            "type": "server_error",
            "param": None,
            "code": "internal_error",
        }

    def cancel(self) -> None:
        """Cancelled at once in what GET shows, the engine job within a step."""
        self.cancel_requested = True
        super().cancel()

    def close(self) -> None:
        """What is kept of a finished job is small: its files are on disk, and the input images
        (in the request) and the last preview are let go."""
        super().close()
        self.prepared = self.preview = None
        self.preview_png = None
        if self.final_status is None:
            self.final_status = "cancelled"
        self.publish(None)

    # -- progress, from the slot's thread ---------------------------------------------------

    def on_progress(self, event: ProgressEvent) -> None:
        if event.phase in STEP_PHASES and event.total:
            self.step, self.total = event.step, event.total
        if event.preview is not None:
            self.preview = event.preview
        # A closed loop: the server is gone and nobody listens.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.publish, event)

    def publish(self, event: ProgressEvent | None) -> None:
        for queue in list(self.subscribers):
            queue.put_nowait(event)

    def subscribe(self) -> asyncio.Queue[ProgressEvent | None]:
        """A queue of this job's progress events; None comes last, when it has finished."""
        queue: asyncio.Queue[ProgressEvent | None] = asyncio.Queue()
        self.subscribers.add(queue)
        return queue

    # -- what GET answers --------------------------------------------------------------------

    def public(
        self, engine: Engine, *, step: int | None = None, total: int | None = None
    ) -> dict[str, Any]:
        """The job object without result or preview (`step`/`total`: those of one event)."""
        status = self.status
        step = self.step if step is None else step
        total = self.total if total is None else total
        job = self.job
        if status == "completed":
            progress = 100
        else:
            progress = min(99, int(100 * step / total)) if total else 0
        eta = job.eta() if job is not None and status == "in_progress" else None
        return {
            "id": self.id,
            "object": "image.job",
            "model": self.model,
            "status": status,
            "created_at": self.created_at,
            "completed_at": self.completed_at,
            "expires_at": self.expires_at,
            "queue_position": (
                engine.queue_position(job) if job is not None and status == "queued" else None
            ),
            "step": step,
            "total": total,
            "progress": progress,
            "eta_seconds": round(eta, 1) if eta is not None else None,
            "error": self.error,
        }

    @property
    def expires_at(self) -> int | None:
        return None if self.finished_at is None else int(self.finished_at + self.ttl)

    async def preview_b64(self, image: Image | None = None) -> str | None:
        """The latest preview (or `image`) as base64 PNG; the last one encoded is cached."""
        image = image if image is not None else self.preview
        if image is None:
            return None
        cached = self.preview_png
        if cached is not None and cached[0] is image:
            return cached[1]
        data = await asyncio.to_thread(encode, image, "png")
        text = base64.b64encode(data).decode("ascii")
        self.preview_png = (image, text)
        return text

    async def result_body(self) -> dict[str, Any] | None:
        """The generations response of a completed job, b64_json items read from its files."""
        if self.result is None:
            return None
        body = dict(self.result)
        if self.as_b64:

            def read() -> list[str]:
                return [base64.b64encode(p.read_bytes()).decode("ascii") for p in self.paths]

            try:
                encoded = await asyncio.to_thread(read)
            except OSError:
                encoded = []  # expired under us: the store drops the job on its next read
            items = []
            for item, text in zip(body["data"], encoded, strict=False):
                shown = {k: v for k, v in item.items() if k != "url"}
                shown["b64_json"] = text
                items.append(shown)
            body["data"] = items
        return body

    async def render(
        self,
        engine: Engine,
        *,
        preview: bool = False,
        event: ProgressEvent | None = None,
    ) -> dict[str, Any]:
        """The whole job object: with the result when completed and, on request, the preview
        (the one `event` carried, else the latest)."""
        step = total = None
        if event is not None and event.phase in STEP_PHASES and event.total:
            step, total = event.step, event.total
        body = self.public(engine, step=step, total=total)
        if preview:
            body["preview"] = await self.preview_b64(event.preview if event else None)
        if self.final_status == "completed":
            body["result"] = await self.result_body()
        return body


# -- finishing -------------------------------------------------------------------------------


async def finish(entry: ImageJob, job: EngineJob, output_dir: Path) -> None:
    """Await the engine job, write its images into the output folder, record the outcome."""
    try:
        await _record(entry, job, output_dir)
    except asyncio.CancelledError:  # server shutdown
        job.cancel()
        entry.final_status = entry.final_status or "cancelled"
        raise
    finally:
        entry.close()


async def _record(entry: ImageJob, job: EngineJob, output_dir: Path) -> None:
    prepared = entry.prepared
    assert prepared is not None
    try:
        result = await asyncio.wrap_future(job.future)
        if entry.cancel_requested:  # it got past its last step before the cancel was seen
            entry.final_status = "cancelled"
            return
        items = await asyncio.to_thread(_write, result, entry, prepared, output_dir)
        if entry.cancel_requested:  # deleted while its files were being written
            for path in entry.paths:
                path.unlink(missing_ok=True)
            entry.paths = []
            entry.final_status = "cancelled"
            return
    except Cancelled:
        entry.final_status = "cancelled"
        return
    except Exception as exc:  # an unexpected failure must still end the job visibly
        entry.fail(exc)
        return
    body = schemas.response_body(result, items, prepared)
    videos.annotate(body, result, prepared)
    ignored = [*prepared.ignored, *result.ignored]  # the result's: what the model left out
    if ignored:
        body["ignored"] = ignored
    entry.result = body
    if result.request is not None and result.request.steps:
        entry.total = entry.total or result.request.steps
        entry.step = entry.total
    entry.completed_at = int(time.time())
    entry.final_status = "completed"


def _write(
    result: ImageResult, entry: ImageJob, prepared: schemas.Prepared, output_dir: Path
) -> list[dict[str, Any]]:
    """The result's items as files in the output folder (url items); which to show as b64."""
    items = output.encode_items(
        result,
        prepared.output_format,
        prepared.compression,
        "url",
        output_dir,
        entry.url_prefix,
        video_format=prepared.video_format,
    )
    entry.paths = [output_dir / str(item["url"]).rsplit("/", 1)[1] for item in items]
    # The same choice as the generations route: b64_json unless url was asked for, but a video
    # comes as a url unless b64_json was asked for.
    as_url = prepared.response_format == "url" or (
        not prepared.response_format_given and result.fps is not None
    )
    entry.as_b64 = not as_url
    return items
