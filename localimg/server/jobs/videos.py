"""Video over HTTP: video results of the Images API, and OpenAI's video job API.

The Images API (`/v1/images/generations`, LocalAI's img2vid and txt2vid examples) answers a video
as one item: a `url` by default (a video is large for JSON) or `b64_json` when asked, with its
`mime_type`. `output_format` picks mp4 (default), webp (animated) or gif.

A long video should not hold one HTTP request open, so OpenAI's job API is here too:
`POST /v1/videos` queues the job and answers at once with a video object (`status: queued`);
`GET /v1/videos/{id}` reports `in_progress` with `progress` 0-100, then `completed` or `failed`;
`GET /v1/videos/{id}/content` returns the MP4 (`?variant=thumbnail`: the first frame as WebP).
`GET /v1/videos` lists the jobs and `DELETE /v1/videos/{id}` cancels one and frees its file.
Finished files live in the server's output folder and expire like url-format images.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from localimg.errors import InvalidRequest, LocalimgError
from localimg.media import conditioning, output, video
from localimg.requests import MAX_FRAMES, ImageRequest, parse_mode, parse_size
from localimg.server.http.access_log import record_job
from localimg.server.jobs.base import Job
from localimg.server.jobs.routes import JobKind, job_routes
from localimg.server.jobs.store import JobStore
from localimg.server.openapi import describe

if TYPE_CHECKING:
    from localimg.engine import Engine
    from localimg.engine import Job as EngineJob
    from localimg.requests import ImageResult, ProgressEvent
    from localimg.server.openai.schemas import Prepared


FRAME_STEP = 8  # `seconds` becomes 8k+1 frames
DEFAULT_FPS = 8.0
MAX_FINISHED_VIDEOS = 100  # finished video jobs kept (each also expires after the url TTL)


class VideoFields(BaseModel):
    """The fields of POST /v1/videos: OpenAI's, then localimg's extensions (as in the Images
    API). build_request reads them (a multipart form's come as text); this model is what
    /openapi.json shows and where the list of accepted names comes from."""

    prompt: str | None = None
    model: str | None = None
    seconds: str | float | None = None
    size: str | None = None
    input_reference: str | None = None  # base64, data URL or http(s) URL; or a file (multipart)
    negative_prompt: str | None = None
    seed: int | None = None
    steps: int | None = None
    cfg_scale: float | None = None
    num_frames: int | None = None
    fps: float | None = None
    strength: float | None = None
    scheduler: str | None = None
    mode: int | str | None = None


VIDEO_FIELDS = tuple(VideoFields.model_fields)


class VideoNotFound(LocalimgError):
    http_status = 404
    error_type = "invalid_request_error"
    default_code = "video_not_found"


class VideoNotReady(LocalimgError):
    http_status = 409
    error_type = "invalid_request_error"
    default_code = "video_not_ready"


# -- video results of the Images API -------------------------------------------------------------


def annotate(body: dict[str, Any], result: ImageResult, prepared: Prepared) -> None:
    """Fix the response's `output_format` for a video answer."""
    if output.is_video(result, prepared.video_format):
        body["output_format"] = video.video_format(prepared.video_format or "mp4")


# -- the job API ---------------------------------------------------------------------------------


@dataclass(kw_only=True)
class VideoJob(Job):
    """One POST /v1/videos and what became of it."""

    label: ClassVar[str] = "video"

    prompt: str
    size: str
    seconds: str
    status: str = "queued"
    progress: int = 0
    completed_at: int | None = None
    expires_at: int | None = None
    path: Path | None = None
    thumbnail: Path | None = None
    seed: int | None = None
    deleted: bool = False  # DELETEd: files written after that are removed at once

    def files(self) -> list[Path]:
        return [path for path in (self.path, self.thumbnail) if path is not None]

    def set_status(self, status: str) -> None:
        self.status = status

    def error_of(self, exc: Exception) -> dict[str, Any]:
        """OpenAI's video error: a code and a message."""
        if isinstance(exc, LocalimgError):
            return {"code": exc.code or "failed", "message": exc.message}
        return {"code": "internal_error", "message": f"{type(exc).__name__}: {exc}"}

    def public(self, engine: Engine | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "video",
            "model": self.model,
            "status": self.status,
            "progress": self.progress,
            "created_at": self.created_at,
            "completed_at": self.completed_at,
            "expires_at": self.expires_at,
            "prompt": self.prompt,
            "size": self.size,
            "seconds": self.seconds,
            "error": self.error,
            "remixed_from_video_id": None,
            "seed": self.seed,
        }


class VideoStore(JobStore[VideoJob]):
    """The video jobs, bounded (job_store.py): finished ones kept at most `max_finished` and
    `ttl` seconds (the url TTL), oldest dropped first with its files."""

    def __init__(self, max_finished: int = MAX_FINISHED_VIDEOS, ttl: float = 3600.0) -> None:
        super().__init__(max_finished, ttl)


async def _fields(request: Request) -> tuple[dict[str, Any], UploadFile | None]:
    """POST /v1/videos as multipart (the openai client) or JSON (curl)."""
    content_type = request.headers.get("content-type", "")
    upload: UploadFile | None = None
    data: dict[str, Any] = {}
    if content_type.startswith("multipart/form-data"):
        form = await request.form(max_files=2, max_fields=32)
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                if key != "input_reference":
                    raise InvalidRequest(
                        f"unexpected file field {key!r}; the image goes in 'input_reference'",
                        param=key,
                    )
                upload = value
            else:
                data[key] = value
    else:
        import json

        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidRequest(f"the request body is not valid JSON ({exc})") from None
        if not isinstance(body, dict):
            raise InvalidRequest("the request body must be a JSON object")
        data = body
    unknown = sorted(set(data) - set(VIDEO_FIELDS))
    if unknown:
        raise InvalidRequest(
            f"unknown field {unknown[0]!r}; POST /v1/videos accepts: {', '.join(VIDEO_FIELDS)}",
            param=unknown[0],
            code="unknown_parameter",
        )
    return data, upload


def _number(data: dict[str, Any], key: str, kind: type) -> Any:
    value = data.get(key)
    if value is None or value == "":
        return None
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise InvalidRequest(f"{key} must be a number, got {value!r}", param=key) from None


def build_request(data: dict[str, Any], init_image: Any) -> tuple[ImageRequest, str]:
    """The engine request of a video job, and its `seconds` as reported back."""
    fps = _number(data, "fps", float)
    frames = _number(data, "num_frames", int)
    seconds = _number(data, "seconds", float)
    if seconds is not None:
        if seconds <= 0:
            raise InvalidRequest(f"seconds must be positive, got {seconds:g}", param="seconds")
        if frames is not None:
            raise InvalidRequest("give seconds or num_frames, not both", param="seconds")
        fps = fps or DEFAULT_FPS
        # The nearest count every video family makes: Wan takes 4k+1 frames, LTX-2 8k+1, the
        # others any; seconds is a duration, not an exact count (4 s at 24 fps: 97 frames).
        frames = max(1, round((seconds * fps - 1) / FRAME_STEP) * FRAME_STEP + 1)
        if frames > MAX_FRAMES:
            raise InvalidRequest(
                f"{seconds:g} s at {fps:g} fps is {frames} frames; the limit is {MAX_FRAMES}",
                param="seconds",
            )
    width = height = None
    if data.get("size"):
        width, height = parse_size(str(data["size"]))
    prompt = str(data.get("prompt") or "")
    if not prompt.strip() and init_image is None:
        raise InvalidRequest(
            "prompt is required (or an input_reference image for image-to-video)",
            param="prompt",
        )
    request = ImageRequest(
        prompt=prompt,
        negative_prompt=data.get("negative_prompt"),
        width=width,
        height=height,
        steps=_number(data, "steps", int),
        cfg_scale=_number(data, "cfg_scale", float),
        seed=_number(data, "seed", int),
        scheduler=data.get("scheduler"),
        strength=_number(data, "strength", float),
        init_image=init_image,
        mode=parse_mode(data.get("mode")),
        num_frames=frames,
        fps=fps,
    )
    shown = f"{seconds:g}" if seconds is not None else ""
    return request, shown


@describe(body=VideoFields, form=VideoFields, files=("input_reference",))
async def create_video(request: Request) -> Response:
    """POST /v1/videos: queue a video job and answer at once."""
    from localimg.media.decode import decode_image, image_from_text
    from localimg.server.served import check_available, served_config

    state = request.app.state
    data, upload = await _fields(request)
    limits = state.settings.image_limits
    init_image = None
    if upload is not None:
        raw = await upload.read()
        init_image = await asyncio.to_thread(decode_image, raw, "input_reference", limits)
    elif isinstance(data.get("input_reference"), str) and data["input_reference"]:
        init_image = await asyncio.to_thread(
            image_from_text,
            data["input_reference"],
            "input_reference",
            limits,
            state.settings.fetch_policy,
        )
    if init_image is not None:
        init_image = conditioning.as_init(init_image)
    config = await asyncio.to_thread(served_config, state, data.get("model"))
    check_available(state, config.name)
    engine_request, seconds = build_request(data, init_image)
    engine: Engine = state.engine
    entry = VideoJob(
        id="video_" + secrets.token_hex(12),
        model=config.name,
        prompt=engine_request.prompt,
        size=str(data.get("size") or ""),
        seconds=seconds,
    )

    def on_progress(event: ProgressEvent) -> None:
        if event.phase == "step" and event.total:
            entry.status = "in_progress"
            entry.progress = min(99, int(100 * event.step / event.total))
        elif event.phase in ("load", "decode"):
            entry.status = "in_progress"

    job = await asyncio.to_thread(engine.submit, config.name, engine_request, on_progress)
    record_job(request, job)
    entry.job = job
    KIND.start(request, entry, _finish(state, entry, job))
    return JSONResponse(entry.public())


async def _finish(state: Any, entry: VideoJob, job: EngineJob) -> None:
    """Wait for the job, encode the MP4 and a thumbnail, record the outcome.

    The job (and so its result's frames) is let go once the files are written or it failed.
    """
    try:
        await _record(state, entry, job)
    finally:
        entry.close()


async def _record(state: Any, entry: VideoJob, job: EngineJob) -> None:
    folder: Path = state.output_dir
    path = folder / f"{entry.id}.mp4"
    thumbnail = folder / f"{entry.id}.thumbnail.webp"
    try:
        result = await asyncio.wrap_future(job.future)
        if not entry.deleted:  # deleted after its last step: nothing to encode
            await asyncio.to_thread(output.write_video_files, result, path, thumbnail)
    except Exception as exc:  # an unexpected failure must still end the job visibly
        _discard(path, thumbnail)  # an MP4 whose thumbnail failed
        entry.fail(exc)
        return
    if entry.deleted:
        # DELETE came while the files were encoded: the store, which deleted the job's files
        # then, could not see these yet, and nothing else would remove them before the url TTL.
        _discard(path, thumbnail)
        return
    entry.path, entry.thumbnail = path, thumbnail
    entry.seed = result.seeds[0] if result.seeds else None
    request = result.request
    if request is not None:
        entry.size = f"{request.width}x{request.height}"
        if not entry.seconds and result.fps:
            entry.seconds = f"{len(result.images) / result.fps:g}"
    entry.completed_at = int(time.time())
    entry.expires_at = entry.completed_at + int(state.settings.url_ttl)
    entry.progress = 100
    entry.status = "completed"


def _discard(*paths: Path) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


async def get_video(request: Request, entry: VideoJob) -> Response:
    """GET /v1/videos/{id}."""
    return JSONResponse(entry.public())


async def video_content(request: Request, entry: VideoJob) -> Response:
    """GET /v1/videos/{id}/content[?variant=video|thumbnail]."""
    variant = request.query_params.get("variant", "video")
    if variant not in ("video", "thumbnail"):
        raise InvalidRequest(
            f"variant {variant!r} is not available; use video or thumbnail", param="variant"
        )
    if entry.status != "completed":
        detail = f": {entry.error['message']}" if entry.error else ""
        raise VideoNotReady(f"video {entry.id} is {entry.status}{detail}")
    path = entry.path if variant == "video" else entry.thumbnail
    if path is None or not path.is_file():
        raise VideoNotFound(f"video {entry.id} has expired")
    media = "video/mp4" if variant == "video" else "image/webp"
    return FileResponse(path, media_type=media)


async def delete_video(request: Request, entry: VideoJob) -> Response:
    """DELETE /v1/videos/{id}: cancel it if running, delete its files (now, or as soon as they
    are written when it is being encoded)."""
    entry.deleted = True
    entry.cancel()
    request.app.state.videos.remove(entry.id)  # and its files
    return JSONResponse({"id": entry.id, "object": "video.deleted", "deleted": True})


def _not_found(video_id: str) -> LocalimgError:
    return VideoNotFound(f"no video {video_id!r} (unknown, deleted or expired)")


KIND = JobKind(
    path="/v1/videos",
    param="video_id",
    store="videos",
    tasks="video_tasks",
    not_found=_not_found,
    create=create_video,
    show=get_video,
    delete=delete_video,
    sub_path="/content",
    sub=video_content,
)


def routes() -> list[Route]:
    """POST and GET /v1/videos, GET and DELETE /v1/videos/{id}, GET .../content."""
    return job_routes(KIND)
