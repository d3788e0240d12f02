"""The OpenAI Images API routes: generations, edits, variations, and the model list.

A route parses and validates (schemas.py), resolves the model among those the server serves,
submits an `ImageRequest` to the engine and awaits the job without blocking the event loop. A
client that disconnects, or a request past its time limit, cancels its job: dropped if still
queued, stopped at the next denoising step if running.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from localimg.config import DEFAULT_MODEL_ENV, default_model_ref, scan_models
from localimg.errors import (
    Cancelled,
    InvalidRequest,
    JobTimeout,
    ModelLoading,
    ModelNotFound,
)
from localimg.media import conditioning
from localimg.media import encode as images
from localimg.media.decode import ImageLimits, decode_image, image_from_text
from localimg.server import schemas, videos

if TYPE_CHECKING:
    from PIL.Image import Image

    from localimg.config import ModelConfig
    from localimg.engine import Engine, Job
    from localimg.requests import ImageResult

log = logging.getLogger("localimg.server")

MAX_UPLOADS = 16


# -- models ------------------------------------------------------------------------------------


def served_names(state: Any) -> list[str]:
    """The models this server answers for: valid YAML models in the models dir, and preloads.

    Anything else (paths, hub ids) is refused, so a request's `model` can never reach files
    outside the models dir.
    """
    engine: Engine = state.engine
    names = [e.name for e in scan_models(engine.settings.models_path) if e.config is not None]
    names += [name for name in state.settings.preload if name not in names]
    return names


def served_config(state: Any, ref: str | None) -> ModelConfig:
    """Resolve a request's `model` (blocking: reads YAML files)."""
    engine: Engine = state.engine
    names = served_names(state)
    if not ref:
        if not names:
            raise ModelNotFound(
                f"no models are configured in {engine.settings.models_path}; add a YAML file",
                param="model",
            )
        if len(names) == 1:
            ref = names[0]
        elif os.environ.get(DEFAULT_MODEL_ENV):
            ref = default_model_ref(engine.settings.models_path)
        else:
            raise InvalidRequest(
                f"several models are served ({', '.join(names)}): name one in the 'model' field",
                param="model",
            )
    if ref not in names:
        known = ", ".join(names) if names else "none"
        raise ModelNotFound(
            f"model {ref!r} is not served here; available models: {known}", param="model"
        )
    return engine.resolve(ref)


def check_available(state: Any, name: str) -> None:
    if state.shutting_down:
        raise ModelLoading("the server is shutting down", headers={"Retry-After": "30"})
    if name in state.preloading:
        raise ModelLoading(
            f"model {name!r} is still loading; try again shortly",
            param="model",
            code="model_loading",
            headers={"Retry-After": "10"},
        )


def _model_entry(state: Any, name: str, created: int, backend: str | None) -> dict[str, Any]:
    engine: Engine = state.engine
    slot = engine.slots.get(name)
    entry: dict[str, Any] = {
        "id": name,
        "object": "model",
        "created": created,
        "owned_by": "localimg",
        "backend": backend,
        "loaded": slot is not None and slot.state == "loaded",
        "state": slot.state if slot is not None else "unloaded",
        "queued": slot.queue_depth if slot is not None else 0,
    }
    info = getattr(slot, "info", None)
    if callable(info):
        entry["worker"] = info()
    entry.update(_lifecycle_facts(engine, slot))
    return entry


def _lifecycle_facts(engine: Engine, slot: Any) -> dict[str, Any]:
    """Memory, keep-alive and use of a model's slot (lifecycle.py), for /v1/models."""
    from localimg.engine.lifecycle import keep_alive_for

    if slot is None:
        return {"memory_bytes": None, "keep_alive": engine.settings.keep_alive}
    need = getattr(slot, "memory_need", None)
    loaded = need is not None or slot.state == "loaded"
    idle = time.monotonic() - slot.last_used if loaded and not slot.busy else 0.0
    return {
        "memory_bytes": slot.memory_bytes if loaded else None,
        "memory_device": need.where if need is not None else None,
        "keep_alive": keep_alive_for(slot.config, engine.settings.keep_alive),
        "idle_seconds": round(idle, 1),
        "busy": slot.busy,
        "loads": getattr(slot, "loads", None),
    }


def _model_list(state: Any) -> list[dict[str, Any]]:
    engine: Engine = state.engine
    entries = []
    seen = set()
    for entry in scan_models(engine.settings.models_path):
        if entry.config is None:
            continue
        seen.add(entry.name)
        created = int(entry.path.stat().st_mtime) if entry.path.exists() else 0
        entries.append(_model_entry(state, entry.name, created, entry.config.backend))
    for name in state.settings.preload:
        if name not in seen:
            entries.append(_model_entry(state, name, 0, None))
    return entries


async def list_models(request: Request) -> Response:
    data = await asyncio.to_thread(_model_list, request.app.state)
    return JSONResponse({"object": "list", "data": data})


async def get_model(request: Request) -> Response:
    name = request.path_params["model"]
    data = await asyncio.to_thread(_model_list, request.app.state)
    for entry in data:
        if entry["id"] == name:
            return JSONResponse(entry)
    known = ", ".join(e["id"] for e in data) or "none"
    raise ModelNotFound(f"model {name!r} is not served here; available models: {known}")


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
    return job


def _encode_items(
    result: ImageResult, prepared: schemas.Prepared, output_dir: Path, base_url: str
) -> list[dict[str, Any]]:
    if videos.is_video_response(result, prepared):
        return videos.encode_items(result, prepared, output_dir, base_url)
    items = []
    for index, image in enumerate(result.images):
        data = images.encode(
            image,
            prepared.output_format,
            parameters=images.a1111_parameters(result, index),
            quality=prepared.compression,
        )
        if prepared.response_format == "url":
            ext = "jpg" if prepared.output_format == "jpeg" else prepared.output_format
            name = f"{secrets.token_urlsafe(16)}.{ext}"
            images.write_atomic(output_dir / name, data)
            items.append({"url": f"{base_url}/generated/{name}"})
        else:
            items.append({"b64_json": base64.b64encode(data).decode("ascii")})
    return items


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
        _encode_items, result, prepared, state.output_dir, _base_url(request)
    )
    body = schemas.response_body(result, items, prepared)
    videos.annotate(body, result, prepared)
    headers = {
        "X-Localimg-Seeds": ",".join(str(s) for s in result.seeds),
        "X-Localimg-Generation-Time": f"{generation:.3f}",
    }
    if prepared.ignored:
        headers["X-Localimg-Ignored"] = ",".join(prepared.ignored)
    return JSONResponse(body, headers=headers)


# -- generations -----------------------------------------------------------------------------


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(
            f"the request body is not valid JSON ({exc}); send Content-Type: application/json "
            "with a JSON object"
        ) from None


async def generations(request: Request) -> Response:
    """POST /v1/images/generations."""
    state = request.app.state
    params: schemas.GenerationBody = schemas.parse_model(
        schemas.GenerationBody, await _json_body(request)
    )
    if params.user:
        log.info("%s: user %s", _rid(request), params.user)
    config = await asyncio.to_thread(served_config, state, params.model)
    check_available(state, config.name)
    init_image = None
    if params.file:
        init_image = await asyncio.to_thread(
            image_from_text,
            params.file,
            "file",
            state.settings.image_limits,
            state.settings.fetch_policy,
        )
        init_image = conditioning.as_init(init_image)  # EXIF orientation, alpha over white
    prepared = schemas.prepare(params, config, init_image=init_image, strength=params.strength)
    return await _respond(request, config, prepared)


# -- edits and variations (multipart) ----------------------------------------------------------


@dataclass
class ImageForm:
    """A parsed multipart edits/variations request: validated fields and decoded images."""

    fields: schemas.EditFields
    images: list[Image] = field(default_factory=list)
    mask: Image | None = None


async def _read_upload(upload: UploadFile, param: str, limits: ImageLimits) -> Image:
    data = await upload.read()
    return await asyncio.to_thread(decode_image, data, param, limits)


async def parse_image_form(
    request: Request, limits: ImageLimits, *, needs_prompt: bool
) -> ImageForm:
    """Parse `image` / repeated `image[]`, `mask` and the text fields of a multipart request.

    Reusable by any route that takes uploaded images: the images are decoded under the pixel
    and byte limits (413, 422), the text fields validated like a generation body (400).
    """
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise InvalidRequest(
            "this endpoint takes multipart/form-data with the image file(s) in 'image' "
            f"(or repeated 'image[]') (got Content-Type {content_type or 'none'!r})"
        )
    form = await request.form(max_files=MAX_UPLOADS + 1, max_fields=64)
    try:
        uploads: list[tuple[str, UploadFile]] = []
        text: dict[str, Any] = {}
        mask_upload: UploadFile | None = None
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                if key in ("image", "image[]"):
                    uploads.append((key, value))
                elif key == "mask":
                    mask_upload = value
                else:
                    raise InvalidRequest(
                        f"unexpected file field {key!r}; files go in 'image', 'image[]' or 'mask'",
                        param=key,
                    )
            elif key in ("image", "image[]", "mask"):
                raise InvalidRequest(f"{key} must be an uploaded file", param=key)
            elif key in text:
                raise InvalidRequest(f"field {key!r} is given more than once", param=key)
            else:
                text[key] = value
        if not uploads:
            raise InvalidRequest(
                "an image file is required in 'image' (or 'image[]')", param="image"
            )
        if len(uploads) > MAX_UPLOADS:
            raise InvalidRequest(f"at most {MAX_UPLOADS} images per request", param="image")
        if needs_prompt and not str(text.get("prompt", "")).strip():
            raise InvalidRequest("prompt is required (a non-empty string)", param="prompt")
        fields: schemas.EditFields = schemas.parse_model(schemas.EditFields, text)
        parsed = ImageForm(fields=fields)
        for key, upload in uploads:
            parsed.images.append(await _read_upload(upload, key, limits))
        if mask_upload is not None:
            parsed.mask = await _read_upload(mask_upload, "mask", limits)
            first = parsed.images[0]
            if parsed.mask.size != first.size:
                raise InvalidRequest(
                    f"mask is {parsed.mask.size[0]}x{parsed.mask.size[1]} but the image is "
                    f"{first.size[0]}x{first.size[1]}; they must be the same size",
                    param="mask",
                )
        return parsed
    finally:
        await form.close()


async def _image_conditioned(request: Request, what: str, needs_prompt: bool) -> Response:
    state = request.app.state
    form = await parse_image_form(request, state.settings.image_limits, needs_prompt=needs_prompt)
    config = await asyncio.to_thread(served_config, state, form.fields.model)
    check_available(state, config.name)
    if len(form.images) > 1:
        raise InvalidRequest(
            f"this server's models take one input image; got {len(form.images)} in 'image[]'",
            param="image",
        )
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
        form.fields, config, init_image=image, mask=mask, strength=form.fields.strength, mode=mode
    )
    return await _respond(request, config, prepared)


async def edits(request: Request) -> Response:
    """POST /v1/images/edits (multipart)."""
    return await _image_conditioned(request, "edits", needs_prompt=True)


async def variations(request: Request) -> Response:
    """POST /v1/images/variations (multipart)."""
    return await _image_conditioned(request, "variations", needs_prompt=False)


def routes() -> list[Route]:
    return [
        Route("/v1/images/generations", generations, methods=["POST"]),
        Route("/v1/images/edits", edits, methods=["POST"]),
        Route("/v1/images/variations", variations, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", get_model, methods=["GET"]),
    ]


__all__ = ["ImageForm", "await_job", "parse_image_form", "routes", "served_config"]
