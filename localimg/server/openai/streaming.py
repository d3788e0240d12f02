"""OpenAI's image streaming: `stream: true` answers with Server-Sent Events, as OpenAI sends them.

    event: image_generation.partial_image        (image_edit.partial_image for edits)
    data: {"type": ..., "b64_json", "partial_image_index", "size", "quality", "background",
           "output_format", "created_at"}

    event: image_generation.completed            (image_edit.completed)
    data: {the same fields but partial_image_index, plus "usage"}

A partial image is a real preview of the running generation (ImageRequest.previews: the backends
make them at evenly spaced steps, backends/previews.py), encoded in the request's output format.
The stream holds one image: OpenAI streams `n` 1 only, and so does localimg (schemas.py refuses
more, and `partial_images` without `stream`). Errors found before the stream starts (a bad body,
an unknown model, a full queue) are ordinary JSON errors with their HTTP status; one after it
started is an `error` event whose data is OpenAI's error object (`{"type": "error", "error":
{message, type, param, code}}`, which the official client raises as an APIError), and the stream
ends. A client that disconnects cancels the job, and so does the server's --timeout. A long
wait with nothing to send (a queued job, slow steps) sends an SSE comment every KEEPALIVE seconds.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from localimg.errors import Cancelled, JobTimeout, LocalimgError
from localimg.media import encode as images
from localimg.media import output
from localimg.server.http import sse
from localimg.server.http.access_log import record_job
from localimg.server.openai import schemas
from localimg.server.served import check_available

if TYPE_CHECKING:
    from PIL.Image import Image

    from localimg.config import ModelConfig
    from localimg.engine import Engine, Job
    from localimg.requests import ImageResult, ProgressEvent

log = logging.getLogger("localimg.server")

Kind = Literal["image_generation", "image_edit"]

# Seconds without an event before a comment line keeps idle proxies from closing the stream.
KEEPALIVE = 15.0


def _common(prepared: schemas.Prepared, size: str) -> dict[str, Any]:
    return {
        "background": prepared.background,
        "created_at": int(time.time()),
        "output_format": prepared.output_format,
        "quality": prepared.quality,
        "size": size,
    }


def _asked_size(prepared: schemas.Prepared) -> str:
    request = prepared.request
    if request.width and request.height:
        return f"{request.width}x{request.height}"
    return "auto"


def partial_event(kind: Kind, prepared: schemas.Prepared, image: Image, index: int) -> bytes:
    data = images.encode(image, prepared.output_format, quality=prepared.compression)
    body = {
        "type": f"{kind}.partial_image",
        "b64_json": base64.b64encode(data).decode("ascii"),
        "partial_image_index": index,
        **_common(prepared, _asked_size(prepared)),
    }
    return sse.compact_event(body["type"], body)


def completed_event(kind: Kind, prepared: schemas.Prepared, result: ImageResult) -> bytes:
    if result.fps is not None:
        raise LocalimgError(
            "this model makes videos, which are not streamed: use /v1/videos or stream: false",
            code="video_not_streamed",
        )
    # b64_json items write no file: the folder is not used.
    items = output.encode_items(
        result, prepared.output_format, prepared.compression, "b64_json", Path("."), ""
    )
    request = result.request
    size = f"{request.width}x{request.height}" if request is not None else _asked_size(prepared)
    if result.images:  # the image's own size: a hires fix makes it bigger than the request
        size = "{}x{}".format(*result.images[0].size)
    body = {
        "type": f"{kind}.completed",
        "b64_json": items[0]["b64_json"],
        **_common(prepared, size),
        "usage": schemas.usage(result),
    }
    return sse.compact_event(body["type"], body)


def error_event(error: LocalimgError) -> bytes:
    return sse.compact_event("error", {"type": "error", **error.to_openai()})


async def respond(
    request: Request, config: ModelConfig, prepared: schemas.Prepared, kind: Kind
) -> Response:
    """Submit the job (its refusals are JSON errors), then stream its partial images and result."""
    state = request.app.state
    engine: Engine = state.engine
    loop = asyncio.get_running_loop()
    previews: asyncio.Queue[Image] = asyncio.Queue()

    def on_progress(event: ProgressEvent) -> None:  # the runner's thread
        if event.preview is not None:
            loop.call_soon_threadsafe(previews.put_nowait, event.preview)

    check_available(state, config.name)
    job: Job = await asyncio.to_thread(engine.submit, config.name, prepared.request, on_progress)
    record_job(request, job)
    events = _events(request, job, prepared, kind, previews, state.settings.request_timeout)
    return StreamingResponse(events, media_type=sse.MEDIA_TYPE, headers=sse.HEADERS)


async def _wait_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _events(
    request: Request,
    job: Job,
    prepared: schemas.Prepared,
    kind: Kind,
    previews: asyncio.Queue[Image],
    timeout: float,
) -> AsyncIterator[bytes]:
    wanted = prepared.stream_partials or 0
    sent = 0
    result_future: asyncio.Future[ImageResult] = asyncio.wrap_future(job.future)
    gone: asyncio.Future[Any] = asyncio.ensure_future(_wait_disconnect(request))
    deadline = loop_time() + timeout
    try:
        while True:
            getter: asyncio.Future[Any] = asyncio.ensure_future(previews.get())
            waiting: set[asyncio.Future[Any]] = {getter, result_future, gone}
            left = deadline - loop_time()
            done, _ = await asyncio.wait(
                waiting,
                timeout=max(0.0, min(left, KEEPALIVE)),
                return_when=asyncio.FIRST_COMPLETED,
            )
            if not done and left > KEEPALIVE:
                getter.cancel()
                yield sse.KEEPALIVE_COMMENT.encode()
                continue
            if getter in done:
                if sent < wanted:
                    yield await asyncio.to_thread(
                        partial_event, kind, prepared, getter.result(), sent
                    )
                    sent += 1
                continue
            getter.cancel()
            if gone in done:
                job.cancel()
                log.info("client disconnected from a stream; job %s cancelled", job.id)
                return
            if result_future in done:
                break
            job.cancel()
            raise JobTimeout(
                f"the request took longer than {timeout:g} s (the server's --timeout) and was "
                "cancelled"
            )
        # Previews queued before the result arrived still go out, in order.
        while not previews.empty() and sent < wanted:
            image = previews.get_nowait()
            yield await asyncio.to_thread(partial_event, kind, prepared, image, sent)
            sent += 1
        result = result_future.result()
        yield await asyncio.to_thread(completed_event, kind, prepared, result)
    except LocalimgError as exc:
        if not isinstance(exc, Cancelled) or not gone.done():
            yield error_event(exc)
    except asyncio.CancelledError:  # the client went away (or the server is stopping)
        job.cancel()
        raise
    except Exception as exc:
        log.exception("stream of job %s failed", job.id)
        yield error_event(LocalimgError(f"internal error: {type(exc).__name__}"))
    finally:
        gone.cancel()
        if not job.future.done():
            job.cancel()
        result_future.add_done_callback(_consume)


def _consume(future: asyncio.Future[Any]) -> None:
    """Retrieve a finished future's exception (one nobody awaits must not be logged)."""
    if not future.cancelled():
        future.exception()


def loop_time() -> float:
    return asyncio.get_running_loop().time()
