"""The OpenAI Images API routes: generations, edits, variations, and the model list.

A route parses and validates (schemas.py), resolves the model among those the server serves,
submits an `ImageRequest` to the engine and awaits the job without blocking the event loop. A
client that disconnects, or a request past its time limit, cancels its job: dropped if still
queued, stopped at the next denoising step if running.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from localimg.errors import (
    Cancelled,
    InvalidRequest,
    JobTimeout,
)
from localimg.media import conditioning, output
from localimg.media.decode import image_from_text
from localimg.requests import MAX_CONTROL_UNITS
from localimg.server.http.access_log import record_job
from localimg.server.jobs import videos
from localimg.server.openai import forms, schemas, streaming
from localimg.server.openapi import describe
from localimg.server.served import check_available, served_config

if TYPE_CHECKING:
    from PIL.Image import Image

    from localimg.config import ModelConfig
    from localimg.engine import Engine, Job
    from localimg.requests import ImageResult

log = logging.getLogger("localimg.server")


# -- running a job -------------------------------------------------------------------------------


async def _wait_disconnect(request: Request) -> None:
    """Returns when the client goes away (the body has been read already)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


async def await_job(request: Request, job: Job, timeout: float) -> ImageResult:
    """Await a job off the event loop; cancel it if the client leaves or time runs out."""
    result_future: asyncio.Future[ImageResult] = asyncio.wrap_future(job.future)
    gone: asyncio.Future[Any] = asyncio.ensure_future(_wait_disconnect(request))
    waiting: set[asyncio.Future[Any]] = {result_future, gone}
    try:
        done, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if result_future in done:
            return result_future.result()
        job.cancel()
        if gone in done:
            log.info("%s: client disconnected; job %s cancelled", _rid(request), job.id)
            raise Cancelled("the client disconnected")
        raise JobTimeout(
            f"the request took longer than {timeout:g} s (the server's --timeout) and was cancelled"
        )
    except asyncio.CancelledError:  # server shutdown cut the request off
        job.cancel()
        raise
    finally:
        gone.cancel()
        if not result_future.done():
            result_future.add_done_callback(_consume)


def _rid(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", "-"))


async def _submit(request: Request, config: ModelConfig, prepared: schemas.Prepared) -> Job:
    state = request.app.state
    engine: Engine = state.engine
    check_available(state, config.name)
    job: Job = await asyncio.to_thread(engine.submit, config.name, prepared.request)
    record_job(request, job)
    return job


def _encode_items(
    result: ImageResult, prepared: schemas.Prepared, output_dir: Path, url_prefix: str
) -> list[dict[str, Any]]:
    return output.encode_items(
        result,
        prepared.output_format,
        prepared.compression,
        prepared.response_format,
        output_dir,
        url_prefix,
        video_format=prepared.video_format,
        response_format_given=prepared.response_format_given,
    )


def _base_url(request: Request) -> str:
    configured = request.app.state.settings.base_url
    if configured:
        return str(configured).rstrip("/")
    return str(request.base_url).rstrip("/")


async def _respond(request: Request, config: ModelConfig, prepared: schemas.Prepared) -> Response:
    state = request.app.state
    started = time.monotonic()
    job = await _submit(request, config, prepared)
    result = await await_job(request, job, state.settings.request_timeout)
    generation = time.monotonic() - started
    items = await asyncio.to_thread(
        _encode_items, result, prepared, state.output_dir, _base_url(request) + state.files_path
    )
    body = schemas.response_body(result, items, prepared)
    videos.annotate(body, result, prepared)
    headers = {
        "X-Localimg-Seeds": ",".join(str(s) for s in result.seeds),
        "X-Localimg-Generation-Time": f"{generation:.3f}",
    }
    ignored = [*prepared.ignored, *result.ignored]  # the result's: what the model left out
    if ignored:
        headers["X-Localimg-Ignored"] = ",".join(ignored)
    return JSONResponse(body, headers=headers)


# -- generations -----------------------------------------------------------------------------


@describe(body=schemas.GenerationBody)
async def generations(request: Request) -> Response:
    """POST /v1/images/generations."""
    config, prepared, _ = await prepare_generation(request)
    if prepared.stream_partials is not None:
        return await streaming.respond(request, config, prepared, "image_generation")
    return await _respond(request, config, prepared)


async def prepare_generation(
    request: Request, body: type[schemas.GenerationBody] = schemas.GenerationBody
) -> tuple[ModelConfig, schemas.Prepared, schemas.GenerationBody]:
    """A generations body (JSON) → its model, the engine request and the parsed fields.

    The image job API (jobs/images.py) takes the same body through here, with `body` a subclass
    that adds its own fields.
    """
    state = request.app.state
    params: schemas.GenerationBody = schemas.parse_model(body, await forms.json_body(request))
    if params.user:
        log.info("%s: user %s", _rid(request), params.user)
    config = await asyncio.to_thread(served_config, state, params.model)
    check_available(state, config.name)
    sources = [("file", params.file)] if params.file else []
    sources += [(f"ref_images[{i}]", text) for i, text in enumerate(params.ref_images or [])]
    images = [
        conditioning.as_init(  # EXIF orientation, alpha over white
            await asyncio.to_thread(
                image_from_text,
                text,
                param,
                state.settings.image_limits,
                state.settings.fetch_policy,
            )
        )
        for param, text in sources
    ]
    prepared = schemas.prepare(
        params,
        config,
        init_image=images[0] if images else None,
        reference_images=tuple(images[1:]),
        strength=params.strength,
        # Reference images ask for a reference edit, never img2img of the first one.
        mode="edit" if params.ref_images and params.mode in (None, 0, "0", "") else None,
        control_images=await _control_images(request, params.control_image),
    )
    return config, prepared, params


async def _control_images(request: Request, value: str | list[str] | None) -> list[Image]:
    """`control_image` of a JSON body (one text or a list) decoded like `file`."""
    settings = request.app.state.settings
    texts = value if isinstance(value, list) else [value] if value else []
    if len(texts) > MAX_CONTROL_UNITS:
        raise InvalidRequest(
            f"{len(texts)} control images; at most {MAX_CONTROL_UNITS} are accepted",
            param="control_image",
        )
    return [
        await asyncio.to_thread(
            image_from_text,
            text,
            f"control_image[{index}]" if isinstance(value, list) else "control_image",
            settings.image_limits,
            settings.fetch_policy,
        )
        for index, text in enumerate(texts)
    ]


# -- edits and variations (multipart) ----------------------------------------------------------


async def prepare_conditioned(
    request: Request,
    what: str,
    needs_prompt: bool,
    fields: type[schemas.EditFields] = schemas.EditFields,
) -> tuple[ModelConfig, schemas.Prepared, schemas.EditFields]:
    """An edits / variations form (multipart) → its model, the engine request and the fields.

    `what` is "edits" or "variations"; the image job API reuses this with its own `fields`.
    """
    state = request.app.state
    form = await forms.parse_image_form(
        request, state.settings.image_limits, needs_prompt=needs_prompt, fields=fields
    )
    config = await asyncio.to_thread(served_config, state, form.fields.model)
    check_available(state, config.name)
    if len(form.images) > 1:
        if what != "edits":
            raise InvalidRequest(
                f"a variation is made from one image; got {len(form.images)} in 'image[]'",
                param="image",
            )
        # Several images are a reference edit (FLUX.1 Kontext, Qwen-Image-Edit, FLUX.2): the
        # model's backend takes them up to its family's limit, or refuses naming it.
        images = [conditioning.as_init(each) for each in form.images]
        prepared = schemas.prepare(
            form.fields,
            config,
            init_image=images[0],
            reference_images=tuple(images[1:]),
            mask=form.mask,
            strength=form.fields.strength,
            control_images=form.control_images,
        )
        return config, prepared, form.fields
    image, mask = form.images[0], form.mask
    mode: str | None = "variation"
    if what == "edits":
        # OpenAI's rule: the mask's (or else the image's own) transparent area is what changes;
        # an opaque image with no mask is edited as a whole (img2img).
        mode = None
        if mask is not None or conditioning.has_transparency(image):
            image, mask = conditioning.edit_inputs(image, mask)
        else:
            image = conditioning.as_init(image)
    else:
        image = conditioning.as_init(image)
    prepared = schemas.prepare(
        form.fields,
        config,
        init_image=image,
        mask=mask,
        strength=form.fields.strength,
        mode=mode,
        control_images=form.control_images,
    )
    return config, prepared, form.fields


@describe(form=schemas.EditFields, files=("image", "image[]", "mask", "control_image"))
async def edits(request: Request) -> Response:
    """POST /v1/images/edits (multipart)."""
    config, prepared, _ = await prepare_conditioned(request, "edits", needs_prompt=True)
    if prepared.stream_partials is not None:
        return await streaming.respond(request, config, prepared, "image_edit")
    return await _respond(request, config, prepared)


@describe(form=schemas.EditFields, files=("image", "control_image"))
async def variations(request: Request) -> Response:
    """POST /v1/images/variations (multipart)."""
    config, prepared, _ = await prepare_conditioned(request, "variations", needs_prompt=False)
    if prepared.stream_partials is not None:
        raise InvalidRequest(
            "stream: true applies to /v1/images/generations and /v1/images/edits, not variations",
            param="stream",
        )
    return await _respond(request, config, prepared)


def routes() -> list[Route]:
    return [
        Route("/v1/images/generations", generations, methods=["POST"]),
        Route("/v1/images/edits", edits, methods=["POST"]),
        Route("/v1/images/variations", variations, methods=["POST"]),
    ]


__all__ = ["await_job", "prepare_conditioned", "prepare_generation", "routes"]
