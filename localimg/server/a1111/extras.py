"""A1111's upscaling routes: the upscaler lists and the Extras tab's upscale of one or more images.

`GET /sdapi/v1/upscalers` lists None, Lanczos and Nearest (A1111's plain ones) and the models of
`upscale_models/`; `GET /sdapi/v1/latent-upscale-modes` the hires fix's latent modes (SillyTavern
puts them after None in its hires upscaler menu). `POST /sdapi/v1/extra-single-image` and
`/extra-batch-images` upscale through the engine's upscalers (side models: loaded on first use,
counted in the memory budget) on a worker thread. As in A1111: `resize_mode` 0 scales by
`upscaling_resize`, 1 fits `upscaling_resize_w` x `upscaling_resize_h` (by the larger ratio,
then center-cropped to that size with `upscaling_crop`); `upscaler_1` "None" leaves the image as
it is; `upscaler_2` is blended over it at `extras_upscaler_2_visibility`. Unlike A1111, sizes are
exact (A1111's upscalers round down to a multiple of 8). Face restoration is not available: a
`gfpgan_visibility` or `codeformer_visibility` above 0 is refused.
"""

from __future__ import annotations

import asyncio
import base64
import html
import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from localimg.errors import InvalidRequest, ModelNotFound, PayloadTooLarge
from localimg.media import encode
from localimg.media.decode import image_from_text
from localimg.request_parts import LATENT_UPSCALERS
from localimg.server.a1111.schemas import A1111Error, json_object
from localimg.server.a1111.state import A1111State
from localimg.server.openapi import describe

if TYPE_CHECKING:
    from PIL.Image import Image

    from localimg.engine import Engine

# A1111's plain upscalers as it lists them → the engine's names ("None": no upscaling).
PLAIN = {"None": None, "Lanczos": "lanczos", "Nearest": "nearest"}
MAX_RESIZE = 8.0  # A1111's upscaling_resize slider ends at 8


class UpscalerItem(BaseModel):
    """One item of GET /sdapi/v1/upscalers (A1111's UpscalerItem)."""

    name: str
    model_name: str | None = None
    model_path: str | None = None
    model_url: str | None = None
    scale: float | None = None


class ExtrasBody(BaseModel):
    """The fields both extras routes share (A1111's ExtrasBaseRequest)."""

    model_config = ConfigDict(extra="allow")

    resize_mode: Literal[0, 1] = 0
    show_extras_results: bool = True
    gfpgan_visibility: float = Field(default=0, ge=0, le=1)
    codeformer_visibility: float = Field(default=0, ge=0, le=1)
    codeformer_weight: float = Field(default=0, ge=0, le=1)
    upscaling_resize: float = Field(default=2, ge=1, le=MAX_RESIZE)
    upscaling_resize_w: int = Field(default=512, ge=1)
    upscaling_resize_h: int = Field(default=512, ge=1)
    upscaling_crop: bool = True
    upscaler_1: str = "None"
    upscaler_2: str = "None"
    extras_upscaler_2_visibility: float = Field(default=0, ge=0, le=1)
    upscale_first: bool = False


class ExtrasSingleBody(ExtrasBody):
    """POST /sdapi/v1/extra-single-image: `image` in base64 (or a data URL)."""

    image: str = ""


class FileData(BaseModel):
    data: str
    name: str = ""


class ExtrasBatchBody(ExtrasBody):
    """POST /sdapi/v1/extra-batch-images: `imageList` of `{"data": base64, "name"}`."""

    imageList: list[FileData] = Field(default_factory=list)  # A1111's name


def model_upscalers(engine: Engine) -> list[str]:
    """The upscaler models of `upscale_models/` the engine knows (scanned again)."""
    engine.refresh_upscalers()
    return engine.side.registry.file_names("upscaler")


def _model_path(engine: Engine, name: str) -> str | None:
    folder = engine.settings.models_path / "upscale_models"
    found = sorted(folder.glob(f"{glob_escape(name)}.*")) if folder.is_dir() else []
    return str(found[0]) if found else None


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def _factor(name: str) -> float | None:
    """A model's factor as its name says it (4x-UltraSharp, RealESRGAN_x4plus), else None."""
    found = re.search(r"(?:^|[^a-z0-9])(\d)x|x(\d)(?:[^0-9]|$)", name, re.IGNORECASE)
    return float(found[1] or found[2]) if found else None


def upscaler_items(engine: Engine) -> list[dict[str, Any]]:
    plain = [UpscalerItem(name=name, scale=4).model_dump() for name in PLAIN]
    models = [
        UpscalerItem(
            name=name,
            model_name=name,
            model_path=_model_path(engine, name),
            scale=_factor(name),
        ).model_dump()
        for name in model_upscalers(engine)
    ]
    return plain + models


async def upscalers(request: Request, a1: A1111State) -> Response:
    """GET /sdapi/v1/upscalers: None, Lanczos, Nearest and the models of upscale_models/."""
    engine: Engine = request.app.state.engine
    return JSONResponse(await asyncio.to_thread(upscaler_items, engine))


def latent_mode_names() -> list[str]:
    """The latent modes as A1111 writes them ("Latent (bicubic antialiased)")."""
    return [name[:1].upper() + name[1:] for name in LATENT_UPSCALERS]


async def latent_upscale_modes(request: Request, a1: A1111State) -> Response:
    """GET /sdapi/v1/latent-upscale-modes: `[{"name": "Latent"}, ...]`."""
    return JSONResponse([{"name": name} for name in latent_mode_names()])


def engine_name(engine: Engine, asked: str, param: str) -> str | None:
    """The engine's name of an A1111 upscaler name (None: "None"); 422 naming the known ones."""
    text = asked.strip()
    for shown, mine in PLAIN.items():
        if text.lower() == shown.lower():
            return mine
    names = engine.upscaler_names()
    for name in names:
        if text == name or text.lower() == name.lower():
            return name
    known = [*PLAIN, *(n for n in names if n not in PLAIN.values())]
    raise A1111Error(
        f"could not find upscaler named {asked!r}; available: {', '.join(known)}",
        status=422,
        param=param,
    )


def _check(body: ExtrasBody) -> None:
    for param in ("gfpgan_visibility", "codeformer_visibility"):
        if getattr(body, param):
            raise A1111Error(
                f"{param}: face restoration is not available in localimg (send 0)",
                status=422,
                param=param,
            )


def target(body: ExtrasBody, size: tuple[int, int]) -> tuple[float, tuple[int, int]]:
    """(scale, final size) of one image: by `upscaling_resize`, or to fit w x h."""
    width, height = size
    if body.resize_mode == 0:
        scale = body.upscaling_resize
        return scale, (max(1, round(width * scale)), max(1, round(height * scale)))
    wanted = (body.upscaling_resize_w, body.upscaling_resize_h)
    scale = max(wanted[0] / width, wanted[1] / height)
    if body.upscaling_crop:
        return scale, wanted
    return scale, (max(1, round(width * scale)), max(1, round(height * scale)))


def upscale_one(engine: Engine, body: ExtrasBody, image: Image, max_pixels: int) -> Image:
    """One image through upscaler_1 (and upscaler_2 blended), at the target size."""
    from PIL import Image as PILImage

    first = engine_name(engine, body.upscaler_1, "upscaler_1")
    second = engine_name(engine, body.upscaler_2, "upscaler_2")
    if first is None:
        return image  # A1111: no upscaler_1, no upscaling
    scale, size = target(body, image.size)
    if size[0] * size[1] > max_pixels:
        raise A1111Error(
            f"upscaling {image.width}x{image.height} to {size[0]}x{size[1]} makes "
            f"{size[0] * size[1]} pixels; the server's limit is {max_pixels}",
            status=422,
            param="upscaling_resize",
        )
    big = _fit(_upscaled(engine, image, first, scale), size)
    visibility = body.extras_upscaler_2_visibility
    if second is not None and visibility > 0:
        other = _fit(_upscaled(engine, image, second, scale), size)
        big = PILImage.blend(big, other.convert(big.mode), visibility)
    return big


def _upscaled(engine: Engine, image: Image, name: str, scale: float) -> Image:
    try:
        return engine.upscale(image.convert("RGB"), name, scale)
    except (ModelNotFound, PayloadTooLarge, InvalidRequest) as exc:
        raise A1111Error(exc.message, status=422, param=exc.param or "upscaler_1") from None


def _fit(image: Image, size: tuple[int, int]) -> Image:
    """`image` at exactly `size`: resized to cover it (keeping the aspect), then center-cropped."""
    from PIL import Image as PILImage

    if image.size == size:
        return image
    scale = max(size[0] / image.width, size[1] / image.height)
    cover = (max(size[0], round(image.width * scale)), max(size[1], round(image.height * scale)))
    if cover != image.size:
        image = image.resize(cover, PILImage.Resampling.LANCZOS)
    left, top = (cover[0] - size[0]) // 2, (cover[1] - size[1]) // 2
    return image.crop((left, top, left + size[0], top + size[1]))


def info_text(body: ExtrasBody) -> str:
    """A1111's postprocessing infotext as html_info shows it (`<p>...</p>`)."""
    if body.upscaler_1.strip().lower() == "none":
        return ""
    fields: list[str] = []
    if body.resize_mode == 0:
        fields.append(f"Postprocess upscale by: {body.upscaling_resize:g}")
    else:
        fields.append(
            f"Postprocess upscale to: {body.upscaling_resize_w}x{body.upscaling_resize_h}"
        )
    fields.append(f"Postprocess upscaler: {body.upscaler_1.strip()}")
    if body.upscaler_2.strip().lower() != "none" and body.extras_upscaler_2_visibility > 0:
        fields.append(f"Postprocess upscaler 2: {body.upscaler_2.strip()}")
    return ", ".join(fields)


def _run(
    engine: Engine, body: ExtrasBody, texts: list[str], request: Request
) -> tuple[list[str], str]:
    """Decode, upscale and encode each image (blocking); the base64 PNGs and the html_info."""
    settings = request.app.state.settings
    _check(body)
    images: list[str] = []
    for index, text in enumerate(texts):
        param = "image" if isinstance(body, ExtrasSingleBody) else f"imageList.{index}.data"
        if not text.strip():
            raise A1111Error(f"{param} is required: a base64 image", status=422, param=param)
        image = image_from_text(text, param, settings.image_limits, settings.fetch_policy)
        kept = image.info.get("parameters")
        big = upscale_one(engine, body, image, settings.image_limits.max_pixels)
        data = encode.encode(big, "png", parameters=kept if isinstance(kept, str) else None)
        images.append(base64.b64encode(data).decode("ascii"))
    text = info_text(body)
    return images, f"<p>{html.escape(text)}</p>" if text else ""


@describe(body=ExtrasSingleBody)
async def extra_single_image(request: Request, a1: A1111State) -> Response:
    """POST /sdapi/v1/extra-single-image → `{"html_info", "image"}`."""
    body = ExtrasSingleBody.model_validate(await json_object(request))
    engine: Engine = request.app.state.engine
    images, info = await asyncio.to_thread(_run, engine, body, [body.image], request)
    return JSONResponse({"html_info": info, "image": images[0]}, headers=_ignored(body))


@describe(body=ExtrasBatchBody)
async def extra_batch_images(request: Request, a1: A1111State) -> Response:
    """POST /sdapi/v1/extra-batch-images → `{"html_info", "images"}`."""
    body = ExtrasBatchBody.model_validate(await json_object(request))
    if not body.imageList:
        raise A1111Error("imageList is empty: send at least one image", 422, param="imageList")
    engine: Engine = request.app.state.engine
    texts = [item.data for item in body.imageList]
    images, info = await asyncio.to_thread(_run, engine, body, texts, request)
    return JSONResponse({"html_info": info, "images": images}, headers=_ignored(body))


def _ignored(body: ExtrasBody) -> dict[str, str]:
    """X-Localimg-Ignored: unknown keys, and those that only matter with face restoration."""
    names = sorted(body.model_extra or {})
    names += [n for n in ("codeformer_weight", "upscale_first") if n in body.model_fields_set]
    return {"X-Localimg-Ignored": ",".join(names)} if names else {}


def table() -> list[tuple[str, Any, str]]:
    return [
        ("upscalers", upscalers, "GET"),
        ("latent-upscale-modes", latent_upscale_modes, "GET"),
        ("extra-single-image", extra_single_image, "POST"),
        ("extra-batch-images", extra_batch_images, "POST"),
    ]
