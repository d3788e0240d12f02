"""ControlNet units made ready for a backend: each unit's preprocessor run, its map in its place.

A front end passes units as the user gave them: a photo and a preprocessor name ("canny",
A1111's "depth_midas", ...). Before a request is checked and queued, `prepare_controls` runs each
unit's preprocessor as a side model (loaded on first use, kept, evicted and counted in the memory
budget like a pipeline) and replaces the unit by one holding the map with preprocess "none", so
a backend, in this process or a worker's, only ever receives control maps. Every name is checked
before anything runs: an unknown one in the last unit costs nothing.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, cast

from localimg.backends.side import Preprocessor, preprocessor_for
from localimg.requests import ControlUnit, ImageRequest

if TYPE_CHECKING:
    from PIL import Image

    from localimg.engine.side_models import SideModels

NONE = "none"


def preprocessor_name(side: SideModels, module: str) -> str | None:
    """The registered preprocessor `module` names (None: no preprocessing); InvalidRequest
    naming the available ones otherwise."""
    return preprocessor_for(module, side.registry.names("preprocessor"))


def run_preprocessor(
    side: SideModels,
    name: str | None,
    image: Image.Image,
    resolution: int | None,
    threshold_a: float | None,
    threshold_b: float | None,
) -> Image.Image:
    """The map the preprocessor `name` makes of `image` (None: the image as it is)."""
    if name is None:
        return image
    with side.use("preprocessor", name) as model:
        # The registry checked the kind: a "preprocessor" is a Preprocessor.
        return cast(Preprocessor, model).preprocess(image, resolution, threshold_a, threshold_b)


def prepare_controls(side: SideModels, request: ImageRequest) -> ImageRequest:
    """`request` with every control unit's map made (the request itself when no unit needs a
    preprocessor)."""
    if all(unit.preprocess == NONE for unit in request.controls):
        return request
    names = [preprocessor_name(side, unit.preprocess) for unit in request.controls]
    units: list[ControlUnit] = []
    for unit, name in zip(request.controls, names, strict=True):
        image = run_preprocessor(
            side, name, unit.image, unit.processor_res, unit.threshold_a, unit.threshold_b
        )
        units.append(
            replace(
                unit,
                image=image,
                preprocess=NONE,
                made_by=unit.preprocess,
                processor_res=None,
                threshold_a=None,
                threshold_b=None,
            )
        )
    return request.with_(controls=tuple(units))
