"""ControlNet units of a request → the family's ControlNet pipeline and its call keywords.

The model's family picks the pipeline class (families.CONTROLNETS: SD 1.x/2.x, SDXL and its union
ControlNets, FLUX.1, Z-Image, Qwen-Image), one per task (text-to-image, img2img, inpainting). It
is built with `from_pipe` over the loaded pipeline, so the base weights are shared, never loaded
twice; each ControlNet is loaded once per model (load/controlnets.py). Each unit maps onto
diffusers' keywords: the control map (resized to the output size) → `image` or `control_image`,
strength → `controlnet_conditioning_scale`, start/end → `control_guidance_start/end`; several
units go as lists, where the family stacks them.

A unit of strength 0 adds nothing: it is left out, and a request whose units all have strength 0
runs the plain pipeline, so it gives exactly the image it gives without them.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localimg.backends.diffusers import families
from localimg.backends.diffusers.families import CONTROL_FAMILIES, ControlFamily
from localimg.backends.diffusers.load.controlnets import ControlNets, declared_class
from localimg.backends.diffusers.pipeline.tasks import call_params
from localimg.config.controlnets import resolve_controlnet
from localimg.errors import BackendError, InvalidRequest

if TYPE_CHECKING:
    from PIL.Image import Image

    from localimg.config import ModelConfig
    from localimg.requests import ControlUnit, ImageRequest

MAX_PIPELINES = 4  # ControlNet pipelines kept per model (cheap: they share every module)
TASKS = {"txt2img": "txt2img", "img2img": "img2img", "variation": "img2img", "inpaint": "inpaint"}


@dataclass(frozen=True)
class Controlled:
    """The ControlNet pipeline serving a request, its control keywords and infotext fields."""

    pipe: Any
    kwargs: dict[str, Any]
    infotext: dict[str, str] = field(default_factory=dict)


def check_request(request: ImageRequest, config: ModelConfig) -> None:
    """Before queueing: every ControlNet the request (or the YAML) names resolves."""
    for unit in request.controls:
        ref = unit.net or config.default_control_net
        if ref:
            resolve_controlnet(ref, config.models_path)


def active_units(request: ImageRequest) -> list[tuple[int, ControlUnit]]:
    """The units that act (strength above 0), with their index in the request."""
    found = []
    for index, unit in enumerate(request.controls):
        if unit.preprocess != "none":
            raise BackendError(
                f"control unit {index + 1} still needs its {unit.preprocess!r} preprocessor: "
                "the engine runs preprocessors before the backend"
            )
        if unit.strength is None or unit.strength > 0:
            found.append((index, unit))
    return found


def control_family(base: Any) -> ControlFamily:
    """The loaded pipeline's ControlNet rules, or a refusal naming the families that have them."""
    found = families.CONTROLNETS.get(type(base).__name__)
    if found is None:
        family = families.family_of(base)
        who = family.name if family is not None else type(base).__name__
        raise InvalidRequest(
            f"{who} has no ControlNet pipeline in diffusers; ControlNet works with "
            f"{CONTROL_FAMILIES} models",
            param="control_net",
        )
    return found


def refuse_units(family: ControlFamily, units: list[tuple[int, ControlUnit]]) -> None:
    """More units than the family stacks, or a guidance window it cannot run: refused."""
    if len(units) > 1 and family.multi is None:
        raise InvalidRequest(
            f"{family.name} runs one ControlNet unit at a time ({family.txt2img}); got "
            f"{len(units)}",
            param="control_net",
        )
    if not family.window:
        for _index, unit in units:
            if unit.start != 0 or unit.end != 1:
                raise InvalidRequest(
                    f"{family.txt2img} has no control_guidance_start/end: a {family.name} "
                    f"ControlNet acts on every step (control_start 0, control_end 1; got "
                    f"{unit.start:g} and {unit.end:g})",
                    param="control_start",
                )


def pipeline_class(family: ControlFamily, mode: str) -> str:
    task = TASKS.get(mode)
    name = {"txt2img": family.txt2img, "img2img": family.img2img, "inpaint": family.inpaint}.get(
        task or ""
    )
    if name is None:
        raise InvalidRequest(
            f"diffusers has no {family.name} ControlNet pipeline for {mode}; with a ControlNet "
            f"a {family.name} model does "
            + ", ".join(t for t in ("txt2img", "img2img", "inpaint") if getattr(family, t)),
            param="control_net",
        )
    return name


def fitted(image: Image, width: int, height: int) -> Image:
    """A control map in RGB at the output size (a map of another size is stretched to it)."""
    from PIL import Image as PILImage

    image = image.convert("RGB")
    if image.size != (width, height):
        image = image.resize((width, height), PILImage.Resampling.LANCZOS)
    return image


def infotext(units: list[tuple[int, ControlUnit]]) -> dict[str, str]:
    """A1111's `ControlNet N` fields (sd-webui-controlnet's wording)."""
    return {
        f"ControlNet {index}": (
            f"Module: {unit.made_by}, Model: {unit.net}, Weight: {unit.strength:g}, "
            f"Guidance Start: {unit.start:g}, Guidance End: {unit.end:g}"
        )
        for index, unit in units
    }


def control_kwargs(
    family: ControlFamily,
    params: dict[str, Any],
    units: list[tuple[int, ControlUnit]],
    request: ImageRequest,
) -> dict[str, Any]:
    """The control keywords of one call: a value for one unit, lists for several."""
    assert request.width and request.height
    images = [fitted(unit.image, request.width, request.height) for _i, unit in units]
    union = "ControlNetUnion" in family.txt2img
    if union and "control_mode" not in request.extra:
        raise InvalidRequest(
            "a union ControlNet (ControlNetUnionModel) needs its control type: set control_mode "
            "(0 openpose, 1 depth, 2 hed/scribble, 3 canny/lineart, 4 normal, 5 segmentation, "
            "6 tile...) as an extra request parameter",
            param="control_mode",
        )
    many = len(units) > 1

    def value(items: list[Any]) -> Any:
        return items if many else items[0]

    key = "control_image" if "control_image" in params else "image"
    kwargs: dict[str, Any] = {
        key: images if union else value(images),  # the union pipeline takes a list
        "controlnet_conditioning_scale": value(
            [float(unit.strength if unit.strength is not None else 1.0) for _i, unit in units]
        ),
    }
    if family.window:
        kwargs["control_guidance_start"] = value([unit.start for _i, unit in units])
        kwargs["control_guidance_end"] = value([unit.end for _i, unit in units])
    return kwargs


class ControlPipelines:
    """The ControlNets and ControlNet pipelines of one loaded model; dropped with it."""

    def __init__(self) -> None:
        self.nets = ControlNets()
        self.pipes: OrderedDict[tuple[str, tuple[str, ...]], Any] = OrderedDict()

    def prepare(
        self, base: Any, mode: str, request: ImageRequest, models_path: Path | None
    ) -> Controlled | None:
        """The pipeline and keywords that run the request's units on the loaded pipeline `base`
        in task `mode`; None when no unit acts (none, or all at strength 0)."""
        units = active_units(request)
        if not units:
            return None
        family = control_family(base)
        locations = [resolve_controlnet(str(unit.net), models_path) for _i, unit in units]
        if family is families.SDXL_CONTROL and any(
            declared_class(place) == "ControlNetUnionModel" for place in locations
        ):
            family = families.SDXL_UNION_CONTROL
        refuse_units(family, units)
        class_name = pipeline_class(family, mode)
        from localimg.backends.diffusers.speed import denoiser_of

        denoiser = denoiser_of(base)
        nets = [
            self.nets.get(str(unit.net), place, family, base, denoiser)
            for (_i, unit), place in zip(units, locations, strict=True)
        ]
        key = (class_name, tuple(locations))
        pipe = self.pipes.get(key)
        if pipe is None:
            pipe = build(class_name, family, base, [net.model for net in nets])
            self.pipes[key] = pipe
            while len(self.pipes) > MAX_PIPELINES:
                self.pipes.popitem(last=False)
        self.pipes.move_to_end(key)
        kwargs = control_kwargs(family, call_params(pipe), units, request)
        return Controlled(pipe, kwargs, infotext(units))

    def describe(self) -> str:
        return self.nets.describe()

    @property
    def nbytes(self) -> int:
        return self.nets.nbytes

    def clear(self) -> None:
        self.pipes = OrderedDict()
        self.nets.clear()


def build(class_name: str, family: ControlFamily, base: Any, models: list[Any]) -> Any:
    """The ControlNet pipeline over the loaded pipeline's modules (from_pipe: nothing copied)."""
    import diffusers

    controlnet: Any = models[0]
    if len(models) > 1:
        assert family.multi is not None
        controlnet = getattr(diffusers, family.multi)(models)
    pipe = getattr(diffusers, class_name).from_pipe(base, controlnet=controlnet)
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)
    return pipe
