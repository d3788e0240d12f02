"""`POST /v1/images/upscale` (LocalAI's route) and `GET /v1/upscalers`.

LocalAI's clients send a multipart form: the `image` file, `model` (the upscaler) and `scale`;
the answer is OpenAI's images shape with a `url`. localimg also takes a JSON body with `image` as
base64, a data URL or an http(s) URL, `response_format` (b64_json or url), `output_format` and
any scale above 0 up to 8. The upscaler is one of the engine's side models (resampling filters,
`upscale_models/` files): it runs on a worker thread, never on the event loop, and its output is
checked against the server's pixel limit before anything is computed.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from localimg.errors import InvalidRequest, ModelNotFound, PayloadTooLarge
from localimg.media import output
from localimg.media.decode import decode_image, image_from_text
from localimg.server.openai import forms, schemas
from localimg.server.openapi import describe

if TYPE_CHECKING:
    from PIL.Image import Image

    from localimg.engine import Engine

MAX_SCALE = 8.0
HINT = "GET /v1/upscalers lists them"


class UpscaleFields(BaseModel):
    """The text fields of POST /v1/images/upscale (multipart), LocalAI's and localimg's."""

    model_config = ConfigDict(extra="forbid")

    # The upscaler: lanczos, bicubic, nearest or an upscale_models/ name. Required, as in LocalAI.
    model: str | None = None
    scale: float = Field(default=2.0, gt=0, le=MAX_SCALE)
    # LocalAI answers with a url; b64_json as on the generations route.
    response_format: Literal["b64_json", "url"] = "url"
    output_format: Literal["png", "jpeg", "jpg", "webp"] = "png"
    output_compression: int | None = Field(default=None, ge=0, le=100)
    user: str | None = None


class UpscaleBody(UpscaleFields):
    """POST /v1/images/upscale as JSON: `image` is base64, a data URL or an http(s) URL."""

    image: str | None = None


class UpscalerList(BaseModel):
    """GET /v1/upscalers: `{"object": "list", "data": [{"id", "object": "upscaler"}]}`."""

    object: Literal["list"] = "list"
    data: list[dict[str, str]]


def upscaler_names(engine: Engine, refresh: bool = False) -> list[str]:
    """The upscalers the engine knows: the resampling filters, then the upscale_models/ files
    (`refresh`: the folder scanned again first, for a file added since; blocking)."""
    return engine.refresh_upscalers() if refresh else engine.upscaler_names()


async def _read(request: Request) -> tuple[UpscaleFields, Image]:
    """The body (multipart or JSON) → its fields and the decoded image."""
    settings = request.app.state.settings
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        form = await request.form(max_files=2, max_fields=16)
        try:
            text: dict[str, Any] = {}
            upload: UploadFile | None = None
            for key, value in form.multi_items():
                if key == "image" and isinstance(value, UploadFile) and upload is None:
                    upload = value
                elif isinstance(value, UploadFile) or key == "image":
                    what = "more than one image" if key == "image" else f"a file in {key!r}"
                    raise InvalidRequest(
                        f"got {what}; the one image file goes in 'image'", param=key
                    )
                else:
                    text[key] = value
            fields = schemas.parse_model(UpscaleFields, text)
            if upload is None:
                raise InvalidRequest("an image file is required in 'image'", param="image")
            data = await upload.read()
        finally:
            await form.close()
        image = await asyncio.to_thread(decode_image, data, "image", settings.image_limits)
        return fields, image
    body = schemas.parse_model(UpscaleBody, await forms.json_body(request))
    if not body.image:
        raise InvalidRequest(
            "image is required: base64, a data URL or an http(s) URL (or a multipart file part)",
            param="image",
        )
    image = await asyncio.to_thread(
        image_from_text, body.image, "image", settings.image_limits, settings.fetch_policy
    )
    return body, image


def _check(fields: UpscaleFields, image: Image, engine: Engine, max_pixels: int) -> str:
    """The upscaler's name; 400 for a missing one or an output over the pixel limit, 404 (naming
    the upscalers) for an unknown one."""
    names = upscaler_names(engine)
    if fields.model and fields.model.strip() not in names:
        names = upscaler_names(engine, refresh=True)  # a file dropped in upscale_models/
    if not fields.model or not fields.model.strip():
        raise InvalidRequest(
            f"model is required: the upscaler, one of {', '.join(names)}", param="model"
        )
    if fields.output_compression is not None and fields.output_format == "png":
        raise InvalidRequest(
            "output_compression applies to jpeg and webp output, not png",
            param="output_compression",
        )
    name = fields.model.strip()
    if name not in names and name.lower() in names:
        name = name.lower()  # Lanczos, as A1111 writes it
    if name not in names:
        raise ModelNotFound(
            f"no upscaler named {name!r}; installed: {', '.join(names) or 'none'} ({HINT})",
            param="model",
        )
    width = max(1, round(image.width * fields.scale))
    height = max(1, round(image.height * fields.scale))
    if width * height > max_pixels:
        raise InvalidRequest(
            f"scale {fields.scale:g} makes {image.width}x{image.height} into {width}x{height} = "
            f"{width * height} pixels; the server's limit is {max_pixels} pixels",
            param="scale",
        )
    return name


def _upscaled(engine: Engine, image: Image, name: str, scale: float) -> Image:
    try:
        return engine.upscale(image, name, scale)
    except ModelNotFound as exc:  # gone from upscale_models/ since the check
        raise ModelNotFound(exc.message, param="model") from None
    except PayloadTooLarge as exc:
        raise InvalidRequest(exc.message, param="scale") from None


@describe(body=UpscaleBody, form=UpscaleFields, files=("image",))
async def upscale(request: Request) -> Response:
    """POST /v1/images/upscale: one image enlarged by an upscaler (LocalAI's route).

    Multipart (`image` file, `model`, `scale`) as LocalAI's clients send it, or JSON with `image`
    as base64, a data URL or an http(s) URL. Answers `{"created", "data": [{"url"|"b64_json"}]}`.
    """
    state = request.app.state
    engine: Engine = state.engine
    fields, image = await _read(request)
    name = await asyncio.to_thread(
        _check, fields, image, engine, state.settings.image_limits.max_pixels
    )
    started = time.monotonic()
    parameters = image.info.get("parameters") if isinstance(image.info, dict) else None
    bigger = await asyncio.to_thread(_upscaled, engine, image, name, fields.scale)
    image_format: Literal["png", "jpeg", "webp"] = (
        "jpeg" if fields.output_format == "jpg" else fields.output_format
    )
    base = state.settings.base_url or str(request.base_url)
    item = await asyncio.to_thread(
        output.image_item,
        bigger,
        image_format,
        fields.output_compression,
        fields.response_format == "url",
        state.output_dir,
        str(base).rstrip("/") + state.files_path,
        parameters if isinstance(parameters, str) else None,
    )
    body = {
        "id": secrets.token_hex(16),
        "created": int(time.time()),
        "data": [item],
        "usage": {"total_tokens": 0, "input_tokens": 0, "output_tokens": 0},
        "model": name,
        "output_format": image_format,
        "size": f"{bigger.width}x{bigger.height}",
    }
    headers = {"X-Localimg-Generation-Time": f"{time.monotonic() - started:.3f}"}
    return JSONResponse(body, headers=headers)


@describe(response=UpscalerList)
async def upscalers(request: Request) -> Response:
    """GET /v1/upscalers: the names `/v1/images/upscale` and `hires_upscaler` take."""
    names = await asyncio.to_thread(upscaler_names, request.app.state.engine, True)
    return JSONResponse(
        {"object": "list", "data": [{"id": n, "object": "upscaler"} for n in names]}
    )


def routes() -> list[Route]:
    return [
        Route("/v1/images/upscale", upscale, methods=["POST"]),
        Route("/v1/upscalers", upscalers, methods=["GET"]),
    ]


__all__ = ["routes", "upscaler_names"]
