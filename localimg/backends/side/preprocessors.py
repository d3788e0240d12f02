"""ControlNet preprocessors: the names a request may use, and what every detector shares.

A preprocessor turns an input image into the map a ControlNet reads (edges, depth). Requests
name it as sd-webui-controlnet's `module` does; `MODULES` maps each accepted name to localimg's
preprocessor, None for "none" (the image already is a map: nothing runs, nothing loads). A name
outside the table is refused, never mapped to something close.

Every detector works A1111's way: the input's short side is resized to the resolution
(`processor_res`, 512 by default) before detection, and the map comes back at the input's size,
so a caller never sees the working resolution.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from localimg.errors import InvalidRequest

if TYPE_CHECKING:
    from PIL import Image

DEFAULT_RESOLUTION = 512  # A1111's processor_res default
# Every accepted name → localimg's preprocessor (None: no preprocessing). The A1111 names are
# sd-webui-controlnet's module names and labels ("depth" is labelled "depth_midas"); each depth
# name runs localimg's one depth estimator.
MODULES: dict[str, str | None] = {
    "none": None,
    "canny": "canny",
    "depth": "depth",
    "depth_midas": "depth",
    "depth_anything_v2": "depth",
}
PARAM = "control_preprocess"


def preprocessor_for(module: str, registered: list[str] | None = None) -> str | None:
    """The preprocessor `module` names (None: "none", no preprocessing); InvalidRequest naming
    the accepted names for anything else. `registered`: the registry's preprocessors, which are
    accepted under their own names too (a plugin's)."""
    key = module.strip() if isinstance(module, str) else ""
    for candidate in (key, key.lower()):
        if candidate in MODULES:
            return MODULES[candidate]
        if registered is not None and candidate in registered:
            return candidate
    names = list(dict.fromkeys([*MODULES, *(registered or [])]))
    raise InvalidRequest(
        f"no ControlNet preprocessor {module!r}; available: {', '.join(names)}", param=PARAM
    )


def check_resolution(resolution: int | None) -> int:
    """The working resolution: `resolution`, else the default; 64..4096 as A1111's slider."""
    if resolution is None:
        return DEFAULT_RESOLUTION
    if not 64 <= resolution <= 4096:
        raise InvalidRequest(
            f"processor_res must be between 64 and 4096, got {resolution}", param="processor_res"
        )
    return int(resolution)


def check_threshold(name: str, value: float | None, default: int, low: int, high: int) -> int:
    """A whole-number knob: `value` (None: `default`) within low..high, else InvalidRequest."""
    if value is None:
        return default
    if not low <= value <= high:
        raise InvalidRequest(f"{name} must be between {low} and {high}, got {value:g}", param=name)
    return round(value)


def working_copy(image: Image.Image, resolution: int) -> Image.Image:
    """`image` as RGB with its short side resized to `resolution` (cubic up, area-like down)."""
    from PIL import Image as PILImage

    rgb = image.convert("RGB")
    scale = resolution / min(rgb.size)
    size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
    if size == rgb.size:
        return rgb
    method = PILImage.Resampling.BICUBIC if scale > 1 else PILImage.Resampling.BOX
    return rgb.resize(size, method)


def at_size(detected: Image.Image, size: tuple[int, int], sharp: bool) -> Image.Image:
    """A map made at the working resolution, back at the input's `size` as RGB. `sharp` keeps a
    map of one-pixel lines binary and unbroken: each output pixel takes the brightest of the
    pixels it covers (a max filter, then nearest), where bicubic would grey or drop the lines."""
    from PIL import Image as PILImage
    from PIL import ImageFilter

    rgb = detected.convert("RGB")
    if rgb.size == size:
        return rgb
    if not sharp:
        return rgb.resize(size, PILImage.Resampling.BICUBIC)
    ratio = max(rgb.width / size[0], rgb.height / size[1])
    if ratio > 1:
        rgb = rgb.filter(ImageFilter.MaxFilter(2 * math.ceil(ratio / 2) + 1))
    return rgb.resize(size, PILImage.Resampling.NEAREST)
