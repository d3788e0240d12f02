"""sd-webui-controlnet's units in `alwayson_scripts.controlnet.args` → localimg's ControlUnits.

The unit fields and defaults are the extension's (internal_controlnet/args.py), its legacy names
too (`input_image`, `guidance`, `lowvram`). A unit with `enabled: false` is skipped; one that
leaves `enabled` out counts as enabled (the extension's API did so before its 2024 rewrite, and a
unit sent with an image is meant to be used). `image` is base64 or a data URL, or the
`{"image", "mask"}` pair; without one, img2img's own picture is the unit's image, as in A1111.
`model` is a name in the models directory's `controlnet/` folder (A1111's " [hash]" suffix is
dropped; "None" means the model's YAML `control_net`), `module` a preprocessor name, `weight` the
strength, `guidance_start`/`guidance_end` the steps it acts on, -1 meaning "the default" for
`processor_res` and the thresholds. `union_control_type` (a union ControlNet's control type) is
the request's `control_mode` parameter.

`resize_mode` fits the control image to the output's aspect ratio before detection: "Crop and
Resize" (the extension's default) crops it centred, "Resize and Fill" pads it with its median
border colour, "Just Resize" leaves it to be stretched; `pixel_perfect` picks processor_res
from the output size as the extension does. Both need the body's width and height; without them,
and for what localimg does not do (`control_mode` other than Balanced, `low_vram`, a mask, the
extension's other fields), the key is named in X-Localimg-Ignored as `controlnet[i].key`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from localimg._util.validation import first_problem
from localimg.errors import InvalidRequest
from localimg.media import conditioning
from localimg.media.decode import image_from_text
from localimg.request_parts import MAX_CONTROL_STRENGTH, ControlUnit
from localimg.server.a1111.schemas import A1111Error

if TYPE_CHECKING:
    from PIL.Image import Image

    from localimg.engine import Engine

SCRIPT = "controlnet"  # the alwayson_scripts key, matched without case as A1111 does
RESIZE_MODES = {  # the extension's names, its int values and its old aliases
    "just resize": "resize",
    "0": "resize",
    "3": "resize",  # "Just Resize (Latent upscale)"
    "crop and resize": "crop",
    "1": "crop",
    "inner fit (scale to fit)": "crop",
    "scale to fit (inner fit)": "crop",
    "resize and fill": "fill",
    "2": "fill",
    "outer fit (shrink to fit)": "fill",
    "envelope (outer fit)": "fill",
}
BALANCED = ("balanced", "0")
# The extension's other unit fields at their defaults, as clients that send whole units do: they
# ask for nothing, so they are not named as ignored (other values, and unknown keys, are).
EXTENSION_DEFAULTS: dict[str, Any] = {
    "input_mode": "simple",
    "inpaint_crop_input_image": True,
    "hr_option": "Both",
    "save_detected_map": True,
    "pulid_mode": "Fidelity",
}
# A union ControlNet's control type, as the extension names it (and from_str's aliases): the
# index xinsir's union ControlNets use, localimg's `control_mode` request parameter.
UNION_TYPES = {
    "openpose": 0,
    "depth": 1,
    "soft edge": 2,
    "softedge": 2,
    "scribble": 2,
    "hard edge": 3,
    "canny": 3,
    "lineart": 3,
    "mlsd": 3,
    "normal map": 4,
    "normalmap": 4,
    "segmentation": 5,
    "tile": 6,
    "inpaint": 7,
}


class ControlNetUnitBody(BaseModel):
    """One unit of `alwayson_scripts.controlnet.args` (sd-webui-controlnet's ControlNetUnit)."""

    model_config = ConfigDict(extra="allow")

    enabled: bool = True
    module: str = "none"
    model: str | None = "None"
    weight: float = Field(default=1.0, ge=0, le=MAX_CONTROL_STRENGTH)
    image: Any = None
    input_image: Any = None  # the extension's legacy name of `image`
    mask: Any = None
    mask_image: Any = None
    resize_mode: int | str = "Crop and Resize"
    low_vram: bool = False
    lowvram: bool = False
    processor_res: int = -1
    threshold_a: float = -1
    threshold_b: float = -1
    guidance_start: float = Field(default=0.0, ge=0, le=1)
    guidance_end: float = Field(default=1.0, ge=0, le=1)
    guidance: float | None = Field(default=None, ge=0, le=1)  # legacy guidance_end
    pixel_perfect: bool = False
    control_mode: int | str = "Balanced"
    union_control_type: int | str = "Unknown"


def script_args(scripts: dict[str, Any]) -> list[Any] | None:
    """The units list of the controlnet script (None: the body has none)."""
    found = [value for key, value in scripts.items() if key.lower() == SCRIPT]
    if not found:
        return None
    value = found[0]
    args = value.get("args") if isinstance(value, dict) else None
    if not isinstance(args, list):
        raise A1111Error(
            'alwayson_scripts.controlnet must be {"args": [unit, ...]}',
            status=422,
            param="alwayson_scripts",
        )
    return args


def net_name(model: str | None) -> str | None:
    """A1111's model name without its " [hash]"; None for "None" or nothing."""
    name = re.sub(r"\s*\[[0-9a-fA-F]+\]\s*$", "", (model or "").strip())
    return None if name.lower() in ("", "none") else name


def image_and_mask(unit: ControlNetUnitBody, where: str) -> tuple[Any, Any]:
    """The unit's image text and mask, from any of the extension's forms."""
    # An empty string is "no image" (webuiapi sends "" for a unit without one).
    image = unit.image if unit.image not in (None, "") else unit.input_image
    mask = unit.mask if unit.mask not in (None, "") else unit.mask_image
    if isinstance(image, list | tuple):
        if len(image) == 2 and all(isinstance(item, str | None) for item in image):
            image, mask = image  # [image, mask]
        elif len(image) == 1:
            image = image[0]
        else:
            raise A1111Error(
                f"{where}.image holds {len(image)} images; a ControlNet unit takes one",
                status=422,
                param="alwayson_scripts",
            )
    if isinstance(image, dict):
        pair: dict[str, Any] = image
        image, mask = pair.get("image"), pair.get("mask", mask)
    if image is not None and not isinstance(image, str):
        raise A1111Error(
            f"{where}.image must be a base64 image", status=422, param="alwayson_scripts"
        )
    return image or None, mask or None


def fit_aspect(image: Image, mode: str, size: tuple[int, int]) -> Image:
    """`image` cropped (mode "crop") or padded ("fill") to the aspect ratio of `size`."""
    from PIL import Image as PILImage
    from PIL import ImageStat

    width, height = image.size
    target = size[0] / size[1]
    if abs(width / height - target) < 1e-3 or mode == "resize":
        return image
    wider = width / height > target
    if mode == "crop":
        if wider:
            new = round(height * target)
            left = (width - new) // 2
            return image.crop((left, 0, left + new, height))
        new = round(width / target)
        top = (height - new) // 2
        return image.crop((0, top, width, top + new))
    canvas_size = (width, round(width / target)) if wider else (round(height * target), height)
    rgb = image.convert("RGB")
    rotate = PILImage.Transpose.ROTATE_90
    strips = [
        rgb.crop((0, 0, width, 1)),
        rgb.crop((0, height - 1, width, height)),
        rgb.crop((0, 0, 1, height)).transpose(rotate),
        rgb.crop((width - 1, 0, width, height)).transpose(rotate),
    ]
    border = PILImage.new("RGB", (sum(strip.width for strip in strips), 1))
    x = 0
    for strip in strips:
        border.paste(strip, (x, 0))
        x += strip.width
    colour = tuple(int(v) for v in ImageStat.Stat(border).median)
    canvas = PILImage.new("RGB", canvas_size, colour)
    canvas.paste(rgb, ((canvas_size[0] - width) // 2, (canvas_size[1] - height) // 2))
    return canvas


def pixel_perfect(image: Image, mode: str, size: tuple[int, int]) -> int:
    """The extension's pixel-perfect processor_res: the input's short side once fitted."""
    k_w, k_h = size[0] / image.width, size[1] / image.height
    k = min(k_w, k_h) if mode == "fill" else max(k_w, k_h)
    return max(64, min(4096, round(k * min(image.size))))


def resize_mode(value: int | str, where: str) -> str:
    """ "resize", "crop" or "fill" from any of the extension's spellings."""
    found = RESIZE_MODES.get(str(value).strip().lower())
    if found is None:
        raise A1111Error(
            f"{where}.resize_mode {value!r} is not one of Just Resize, Crop and Resize, "
            "Resize and Fill (or 0, 1, 2)",
            status=422,
            param="alwayson_scripts",
        )
    return found


def unsupported(unit: ControlNetUnitBody, raw: dict[str, Any], mask: Any) -> list[str]:
    """The unit's keys that change nothing here (sent with a value that asks for something)."""
    names = [
        key
        for key, value in (unit.model_extra or {}).items()
        if value not in _OFF and value != EXTENSION_DEFAULTS.get(key)
    ]
    if str(unit.control_mode).strip().lower() not in BALANCED:
        names.append("control_mode")
    names += [key for key in ("low_vram", "lowvram") if raw.get(key)]
    if mask is not None:
        names.append("mask")
    return names


_OFF: tuple[Any, ...] = (None, False, "", [], {})


def read_unit(
    raw: Any,
    index: int,
    settings: Any,
    init_image: Image | None,
    size: tuple[int, int] | None,
) -> tuple[ControlUnit | None, list[str]]:
    """One unit of the body (None when disabled) and its ignored keys; blocking (decodes)."""
    where = f"controlnet[{index}]"
    if not isinstance(raw, dict):
        raise A1111Error(
            f"{where} must be a JSON object (a ControlNet unit)",
            status=422,
            param="alwayson_scripts",
        )
    try:
        unit = ControlNetUnitBody.model_validate(raw)
    except ValidationError as exc:
        problem = first_problem(exc, prefix=f"alwayson_scripts.{where}.")
        raise A1111Error(str(problem), status=422, param="alwayson_scripts") from None
    if not unit.enabled:
        return None, []
    text, mask = image_and_mask(unit, where)
    if text is not None:
        picture = image_from_text(
            text, f"{where}.image", settings.image_limits, settings.fetch_policy
        )
        image = conditioning.as_init(picture)
    elif init_image is not None:
        image = init_image
    else:
        raise A1111Error(
            f"{where}: ControlNet is enabled but no input image is given (send image)",
            status=422,
            param="alwayson_scripts",
        )
    ignored = [f"{where}.{key}" for key in unsupported(unit, raw, mask)]
    mode = resize_mode(unit.resize_mode, where)
    resolution = unit.processor_res if unit.processor_res > 0 else None
    if size is not None:
        image = fit_aspect(image, mode, size)
        if unit.pixel_perfect:
            resolution = pixel_perfect(image, mode, size)
    else:
        ignored += [
            f"{where}.{key}"
            for key, asked in (
                ("resize_mode", mode != "resize"),
                ("pixel_perfect", unit.pixel_perfect),
            )
            if asked and key in raw
        ]
    # The legacy `guidance` is guidance_end when that is not sent too.
    end = unit.guidance_end if unit.guidance is None or "guidance_end" in raw else unit.guidance
    try:
        made = ControlUnit(
            image=image,
            net=net_name(unit.model),
            strength=unit.weight,
            start=unit.guidance_start,
            end=end,
            preprocess=unit.module,
            processor_res=resolution,
            threshold_a=unit.threshold_a if unit.threshold_a >= 0 else None,
            threshold_b=unit.threshold_b if unit.threshold_b >= 0 else None,
        )
    except InvalidRequest as exc:
        raise A1111Error(f"{where}: {exc.message}", status=422, param=exc.param) from None
    return made, ignored


@dataclass(frozen=True)
class Controls:
    """What `alwayson_scripts` asks of the engine: the units, the request's extra parameters
    (a union ControlNet's `control_mode`) and the keys it ignores."""

    units: tuple[ControlUnit, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)


def union_type(unit: ControlNetUnitBody, where: str) -> int | None:
    """The unit's union control type as localimg's control_mode (None: "Unknown", not given)."""
    value = unit.union_control_type
    if isinstance(value, int) and 0 <= value <= 7:
        return value
    text = str(value).strip().lower()
    if text == "unknown":
        return None
    if text not in UNION_TYPES:
        raise A1111Error(
            f"{where}.union_control_type {value!r} is not one of OpenPose, Depth, Soft Edge, "
            "Hard Edge, Normal Map, Segmentation, Tile, Inpaint",
            status=422,
            param="alwayson_scripts",
        )
    return UNION_TYPES[text]


def controlnet_units(
    scripts: dict[str, Any],
    settings: Any,
    engine: Engine,
    init_image: Image | None,
    size: tuple[int, int] | None,
) -> Controls:
    """The enabled units of `alwayson_scripts`, and what goes with them (blocking: decodes).
    `size` is the output's (width, height) when the body gives it; every module name is checked
    here so a bad one answers 422 before anything is queued."""
    args = script_args(scripts)
    if not args:
        return Controls()
    units: list[ControlUnit] = []
    ignored: list[str] = []
    modes: set[int] = set()
    for index, raw in enumerate(args):
        unit, skipped = read_unit(raw, index, settings, init_image, size)
        ignored += skipped
        if unit is None:
            continue
        try:
            engine.preprocessor_name(unit.preprocess)
        except InvalidRequest as exc:
            raise A1111Error(
                f"controlnet[{index}].module: {exc.message}", status=422, param="module"
            ) from None
        mode = union_type(ControlNetUnitBody.model_validate(raw), f"controlnet[{index}]")
        modes |= {mode} if mode is not None else set()
        units.append(unit)
    if len(modes) > 1:
        raise A1111Error(
            "the units ask for different union control types; a union ControlNet runs one",
            status=422,
            param="alwayson_scripts",
        )
    extra = {"control_mode": modes.pop()} if modes else {}
    return Controls(tuple(units), extra, ignored)
