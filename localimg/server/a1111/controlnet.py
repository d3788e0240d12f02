"""sd-webui-controlnet's routes under /controlnet, in that extension's shapes.

`version`, `model_list` (the ControlNets of the models directory's `controlnet/` folder),
`module_list` (the preprocessors, by name or with `?alias_names=true` by label, with their
sliders), `control_types` (the extension's tabs: which modules and models go together),
`settings` (how many units a request may hold) and `detect` (a preprocessor run on its own: the
maps as base64 PNG). The units of txt2img and img2img are read by control_units.py. The module
names are the extension's; each runs one of the engine's preprocessors (canny, depth), which the
engine loads, keeps and evicts like its other side models.
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from localimg.config import controlnet_items
from localimg.errors import InvalidRequest
from localimg.media import conditioning, encode
from localimg.media.decode import image_from_text
from localimg.requests import MAX_CONTROL_UNITS
from localimg.server.a1111.schemas import A1111Error, json_object
from localimg.server.a1111.state import A1111State
from localimg.server.openapi import describe

if TYPE_CHECKING:
    from PIL.Image import Image

API_VERSION = 2
MAX_DETECT_IMAGES = 16  # one request may not hold the preprocessor forever


def _slider(name: str, value: float, low: float, high: float, step: float) -> dict[str, Any]:
    return {"name": name, "value": value, "min": low, "max": high, "step": step}


RESOLUTION = _slider("Resolution", 512, 64, 2048, 8)


@dataclass(frozen=True)
class Module:
    """One preprocessor as the extension lists it."""

    name: str  # its key (what `module` sends)
    label: str  # its UI label (`alias_names=true`)
    model_free: bool
    sliders: tuple[dict[str, Any], ...] = ()
    tag: str | None = None  # its control type


MODULES = (
    Module("none", "none", True),
    Module(
        "canny",
        "canny",
        True,
        (
            RESOLUTION,
            _slider("Low Threshold", 100, 1, 255, 1),
            _slider("High Threshold", 200, 1, 255, 1),
        ),
        "Canny",
    ),
    Module("depth", "depth_midas", False, (RESOLUTION,), "Depth"),
    Module("depth_anything_v2", "depth_anything_v2", False, (RESOLUTION,), "Depth"),
)
CONTROL_TYPES = ("All", "Canny", "Depth")


class DetectBody(BaseModel):
    """POST /controlnet/detect (the extension's field names; -1: the preprocessor's default)."""

    controlnet_module: str = "none"
    controlnet_input_images: list[str] = Field(default_factory=list)
    controlnet_images: list[str] | None = None  # what the webuiapi client sends instead
    controlnet_processor_res: int = -1
    controlnet_threshold_a: float = -1
    controlnet_threshold_b: float = -1
    controlnet_masks: list[str] = Field(default_factory=list)
    low_vram: bool = False


class DetectAnswer(BaseModel):
    images: list[str]
    info: str


def _names(request: Request) -> list[str]:
    return [
        str(item["name"])
        for item in controlnet_items(request.app.state.engine.settings.models_path)
    ]


async def version(request: Request, a1: A1111State) -> Response:
    """The sd-webui-controlnet API version these routes follow."""
    return JSONResponse({"version": API_VERSION})


async def model_list(request: Request, a1: A1111State) -> Response:
    """The ControlNets of the models directory's controlnet/ folder (a unit's `model`)."""
    return JSONResponse({"model_list": await asyncio.to_thread(_names, request)})


async def module_list(request: Request, a1: A1111State) -> Response:
    """The preprocessors (a unit's `module`); `?alias_names=true`: their UI labels."""
    alias = request.query_params.get("alias_names", "false").lower() in ("1", "true")
    names = [m.label if alias else m.name for m in MODULES]
    detail = {
        (m.label if alias else m.name): {"model_free": m.model_free, "sliders": list(m.sliders)}
        for m in MODULES
    }
    return JSONResponse({"module_list": names, "module_detail": detail})


def _control_type(tag: str, models: list[str]) -> dict[str, Any]:
    """One tab of the extension: its modules, its models ("None" first), the defaults."""
    if tag == "All":
        return {
            "module_list": [m.label for m in MODULES],
            "model_list": ["None", *models],
            "default_option": "none",
            "default_model": "None",
        }
    modules = [m for m in MODULES if m.tag == tag]
    fitting = [name for name in models if tag.lower() in name.lower()]
    default = next((name for name in fitting if "11" in name), fitting[0] if fitting else "None")
    return {
        "module_list": ["none", *(m.label for m in modules)],
        "model_list": ["None", *fitting],
        "default_option": modules[0].label,
        "default_model": default,
    }


async def control_types(request: Request, a1: A1111State) -> Response:
    """The control types (Canny, Depth) with the modules and models that go together."""
    models = await asyncio.to_thread(_names, request)
    types = {tag: _control_type(tag, models) for tag in CONTROL_TYPES}
    return JSONResponse({"control_types": types})


async def settings(request: Request, a1: A1111State) -> Response:
    """How many ControlNet units one request may hold."""
    return JSONResponse({"control_net_unit_count": MAX_CONTROL_UNITS})


def _detect(request: Request, body: DetectBody) -> list[str]:
    """Each input image's map as base64 PNG (blocking: decodes and runs the preprocessor)."""
    state = request.app.state
    engine = state.engine
    resolution = body.controlnet_processor_res if body.controlnet_processor_res > 0 else None
    a = body.controlnet_threshold_a if body.controlnet_threshold_a >= 0 else None
    b = body.controlnet_threshold_b if body.controlnet_threshold_b >= 0 else None
    found = []
    for index, text in enumerate(body.controlnet_input_images):
        param = f"controlnet_input_images[{index}]"
        picture = image_from_text(
            text, param, state.settings.image_limits, state.settings.fetch_policy
        )
        image: Image = engine.preprocess(
            conditioning.as_init(picture), body.controlnet_module, resolution, a, b
        )
        found.append(base64.b64encode(encode.encode(image, "png")).decode("ascii"))
    return found


@describe(body=DetectBody, response=DetectAnswer)
async def detect(request: Request, a1: A1111State) -> Response:
    """Run a preprocessor on images: the control maps, as base64 PNG."""
    body = DetectBody.model_validate(await json_object(request))
    if not body.controlnet_input_images and body.controlnet_images:
        body.controlnet_input_images = body.controlnet_images
    try:
        request.app.state.engine.preprocessor_name(body.controlnet_module)
    except InvalidRequest as exc:
        raise A1111Error(exc.message, status=422, param="controlnet_module") from None
    if not body.controlnet_input_images:
        raise A1111Error("No image selected", status=422, param="controlnet_input_images")
    if len(body.controlnet_input_images) > MAX_DETECT_IMAGES:
        raise A1111Error(
            f"{len(body.controlnet_input_images)} images; at most {MAX_DETECT_IMAGES} per request",
            status=422,
            param="controlnet_input_images",
        )
    try:
        images = await asyncio.to_thread(_detect, request, body)
    except InvalidRequest as exc:  # a knob out of range: the extension's 422
        raise A1111Error(exc.message, status=422, param=exc.param) from None
    headers = {"X-Localimg-Ignored": "controlnet_masks"} if body.controlnet_masks else {}
    return JSONResponse({"images": images, "info": "Success"}, headers=headers)


def table() -> list[tuple[str, Any, str]]:
    return [
        ("version", version, "GET"),
        ("model_list", model_list, "GET"),
        ("module_list", module_list, "GET"),
        ("control_types", control_types, "GET"),
        ("settings", settings, "GET"),
        ("detect", detect, "POST"),
    ]
