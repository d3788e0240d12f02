"""Image jobs: an image generation an app can poll, stream, and cancel (the `/v1/videos` shape).

`POST /v1/images/jobs` takes the body of `/v1/images/generations` (JSON) or of
`/v1/images/edits` (multipart: `image` / `image[]`, `mask`) through the very code of those
routes, plus `previews` (how many previews to make, default min(steps, 10)), queues the engine
job and answers 202 at once. `GET /v1/images/jobs/{id}` reports status (queued, in_progress,
completed, failed, cancelled), step and total, progress 0-100, eta_seconds, queue_position while
queued, the error when failed and the generations response (`result`) when completed;
`?preview=true` adds the latest preview (base64 PNG). `GET .../events` streams the same as
Server-Sent Events, one per change or step, ending with the finished job. `DELETE` cancels a
queued job at once and a running one within a step; on a finished job it deletes it and its files.
A full model queue is a 429 with Retry-After, as on the generations route. Leaving an `/events`
stream does not cancel the job: that is what `DELETE` is for.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, field_validator
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from localimg.errors import InvalidRequest, LocalimgError
from localimg.requests import MAX_PREVIEWS
from localimg.server.http import sse
from localimg.server.http.access_log import record_job
from localimg.server.jobs.image_job import ImageJob, finish
from localimg.server.jobs.routes import JobKind, job_routes
from localimg.server.openai import images as openai_images
from localimg.server.openai import schemas
from localimg.server.openapi import describe
from localimg.server.served import check_available

if TYPE_CHECKING:
    from localimg.engine import Engine

DEFAULT_PREVIEWS = 10
HEARTBEAT_SECONDS = 15.0  # an SSE comment line this often keeps proxies from closing the stream
CHECK_SECONDS = 0.5  # how often a stream looks for changes no event reports (queue position)


class ImageJobNotFound(LocalimgError):
    http_status = 404
    error_type = "invalid_request_error"
    default_code = "image_job_not_found"


class JobFields(BaseModel):
    """What a job body adds to a generations / edits body: how many previews to make (0: none).
    Streaming belongs to the generations routes; a job streams through `/events`."""

    previews: int | None = Field(default=None, ge=0, le=MAX_PREVIEWS)

    @field_validator("stream", check_fields=False)
    @classmethod
    def _no_stream(cls, value: Any) -> Any:
        if value:
            raise ValueError("a job is not streamed; GET /v1/images/jobs/{id}/events streams it")
        return value

    @field_validator("partial_images", check_fields=False)
    @classmethod
    def _no_partial_images(cls, value: Any) -> Any:
        if value is not None:
            raise ValueError(
                f"a job takes 'previews' (0-{MAX_PREVIEWS}) instead; "
                "GET /v1/images/jobs/{id}?preview=true shows the latest"
            )
        return value


class JobGenerationBody(schemas.GenerationBody, JobFields):
    """POST /v1/images/jobs as JSON: a generations body plus `previews`."""


class JobEditFields(schemas.EditFields, JobFields):
    """POST /v1/images/jobs as multipart: the text fields of an edits form plus `previews`."""


def _base_url(request: Request) -> str:
    configured = request.app.state.settings.base_url
    return str(configured or request.base_url).rstrip("/")


def _with_previews(prepared: schemas.Prepared, fields: Any) -> schemas.Prepared:
    """The engine request with the job's previews: as asked, else min(steps, 10)."""
    previews = fields.previews
    if previews is None:
        previews = min(prepared.request.steps or DEFAULT_PREVIEWS, DEFAULT_PREVIEWS)
    request = dataclasses.replace(prepared.request, previews=previews)
    return dataclasses.replace(prepared, request=request)


@describe(
    body=JobGenerationBody, form=JobEditFields, files=("image", "image[]", "mask", "control_image")
)
async def create_job(request: Request) -> Response:
    """POST /v1/images/jobs: a generations (JSON) or edits (multipart) body; 202 at once."""
    state = request.app.state
    fields: schemas.ImageParams
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        config, prepared, fields = await openai_images.prepare_conditioned(
            request, "edits", needs_prompt=True, fields=JobEditFields
        )
    else:
        config, prepared, fields = await openai_images.prepare_generation(
            request, JobGenerationBody
        )
    prepared = _with_previews(prepared, fields)
    check_available(state, config.name)
    engine: Engine = state.engine
    entry = ImageJob(
        id="imgjob_" + secrets.token_hex(12),
        model=config.name,
        prepared=prepared,
        url_prefix=_base_url(request) + state.files_path,
        loop=asyncio.get_running_loop(),
        ttl=state.image_jobs.ttl,
    )
    job = await asyncio.to_thread(engine.submit, config.name, prepared.request, entry.on_progress)
    record_job(request, job)
    entry.job = job
    KIND.start(request, entry, finish(entry, job, state.output_dir))
    headers = {"X-Localimg-Ignored": ",".join(prepared.ignored)} if prepared.ignored else None
    return JSONResponse(entry.public(engine), status_code=202, headers=headers)


def _flag(request: Request, name: str) -> bool:
    value = request.query_params.get(name, "false").strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no", ""):
        return False
    raise InvalidRequest(f"{name} must be true or false, got {value!r}", param=name)


async def get_job(request: Request, entry: ImageJob) -> Response:
    """GET /v1/images/jobs/{id}[?preview=true]."""
    body = await entry.render(request.app.state.engine, preview=_flag(request, "preview"))
    return JSONResponse(body)


async def delete_job(request: Request, entry: ImageJob) -> Response:
    """DELETE /v1/images/jobs/{id}: cancel a queued or running job; delete a finished one."""
    state = request.app.state
    if not entry.finished:
        entry.cancel()
        return JSONResponse({**entry.public(state.engine), "deleted": False})
    state.image_jobs.remove(entry.id)  # and its files
    return JSONResponse({**entry.public(state.engine), "deleted": True})


def _frame(body: dict[str, Any]) -> str:
    return sse.frame(f"image.job.{body['status']}", json.dumps(body))


async def _events(entry: ImageJob, engine: Engine, preview: bool) -> AsyncIterator[str]:
    """The job's state now, then one event per step or change, the finished job last.

    Step events come in the order the engine made them, each with its own step (a slow reader
    gets every one, late); other changes (queue position, queued → in_progress) are looked for
    between events. The finished job is always the last event, then the stream ends.
    """
    queue = entry.subscribe()
    last: tuple[Any, ...] = ()
    quiet = 0.0

    def changed(body: dict[str, Any]) -> bool:
        nonlocal last, quiet
        shown = (body["status"], body["step"], body["total"], body["queue_position"])
        if shown == last or (last and shown[0] == last[0] and shown[1] < last[1]):
            return False
        last, quiet = shown, 0.0
        return True

    try:
        if not entry.finished:
            body = await entry.render(engine, preview=preview)
            if changed(body):
                yield _frame(body)
        while not entry.finished:
            try:
                event = await asyncio.wait_for(queue.get(), timeout=CHECK_SECONDS)
            except TimeoutError:
                body = await entry.render(engine, preview=preview)
                if changed(body):
                    yield _frame(body)
                else:
                    quiet += CHECK_SECONDS
                    if quiet >= HEARTBEAT_SECONDS:
                        yield sse.KEEPALIVE_COMMENT
                        quiet = 0.0
                continue
            if event is None or entry.finished:
                break
            body = await entry.render(engine, preview=preview, event=event)
            if changed(body):
                yield _frame(body)
        yield _frame(await entry.render(engine, preview=preview))
    finally:
        entry.subscribers.discard(queue)


async def job_events(request: Request, entry: ImageJob) -> Response:
    """GET /v1/images/jobs/{id}/events[?preview=true]: Server-Sent Events."""
    stream = _events(entry, request.app.state.engine, _flag(request, "preview"))
    return StreamingResponse(stream, media_type=sse.MEDIA_TYPE, headers=sse.HEADERS)


def _not_found(job_id: str) -> LocalimgError:
    return ImageJobNotFound(f"no image job {job_id!r} (unknown, deleted or expired)")


KIND = JobKind(
    path="/v1/images/jobs",
    param="job_id",
    store="image_jobs",
    tasks="image_job_tasks",
    not_found=_not_found,
    create=create_job,
    show=get_job,
    delete=delete_job,
    sub_path="/events",
    sub=job_events,
)


def routes() -> list[Route]:
    """POST and GET /v1/images/jobs, GET and DELETE /v1/images/jobs/{id}, GET .../events."""
    return job_routes(KIND)
