"""The parts of a request that carry settings of their own: ControlNet units and the hires fix.

They live apart from `ImageRequest` (requests.py, which re-exports them) to keep each module one
idea; like it, they hold only what was said, validated, and nothing backend-specific.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from localimg.errors import InvalidRequest

if TYPE_CHECKING:
    from PIL.Image import Image

MAX_SIDE = 4096  # pixels per side of any image a request makes
MAX_CONTROL_STRENGTH = 2.0
MAX_HIRES_SCALE = 8.0
# A1111's hires defaults: the second pass at 0.7 denoise; "latent" resizes the latents.
HIRES_DEFAULT_SCALE = 2.0
HIRES_DEFAULT_DENOISE = 0.7
HIRES_LATENT = "latent"
# A1111's latent upscale modes, lowercased → torch's interpolate mode and its antialias flag.
LATENT_UPSCALERS: dict[str, tuple[str, bool]] = {
    "latent": ("bilinear", False),
    "latent (nearest)": ("nearest", False),
    "latent (nearest-exact)": ("nearest-exact", False),
    "latent (bicubic)": ("bicubic", False),
    "latent (antialiased)": ("bilinear", True),
    "latent (bicubic antialiased)": ("bicubic", True),
}


def is_latent_upscaler(name: str) -> bool:
    """Whether a hires upscaler name (any case) is one of the latent modes."""
    return name.strip().lower() in LATENT_UPSCALERS


@dataclass(frozen=True)
class ControlUnit:
    """One ControlNet unit: a control image and the ControlNet that reads it.

    `net` is a name in the models directory's `controlnet/` folder, a path or a hub repo id;
    None means the model's YAML `control_net`. `strength` None means the YAML's
    `control_strength`, else 1.0 (0 gives the plain image). `start`/`end` are the fraction of the
    steps the unit acts on. `preprocess` turns `image` into the control map first ("none": the
    image already is one); `processor_res` and the thresholds are the preprocessor's knobs
    (A1111's names). After the engine's preparation every unit has a net, a strength and
    preprocess "none": a backend only ever receives control maps.
    """

    image: Image
    net: str | None = None
    strength: float | None = None
    start: float = 0.0
    end: float = 1.0
    preprocess: str = "none"
    processor_res: int | None = None
    threshold_a: float | None = None
    threshold_b: float | None = None
    # The preprocessor that made `image` once the engine ran it (A1111's "Module" in the PNG
    # parameters); "none" for an image sent as a control map.
    made_by: str = "none"

    def __post_init__(self) -> None:
        if self.strength is not None and not 0 <= self.strength <= MAX_CONTROL_STRENGTH:
            raise InvalidRequest(
                f"control_strength must be between 0 and {MAX_CONTROL_STRENGTH:g}, got "
                f"{self.strength:g}",
                param="control_strength",
            )
        if not 0 <= self.start < self.end <= 1:
            raise InvalidRequest(
                f"control_start and control_end must satisfy 0 <= start < end <= 1, got "
                f"{self.start:g} and {self.end:g}",
                param="control_start",
            )
        if self.processor_res is not None and not 64 <= self.processor_res <= MAX_SIDE:
            raise InvalidRequest(
                f"processor_res must be between 64 and {MAX_SIDE}, got {self.processor_res}",
                param="processor_res",
            )
        if self.net is not None and not self.net.strip():
            raise InvalidRequest("control_net must not be empty", param="control_net")


@dataclass(frozen=True)
class HiresFix:
    """A1111's hires fix: generate at the asked size, upscale the result, then run a second
    img2img pass over it that adds the detail the small image lacks.

    `upscaler` is "latent" (the latents resized, A1111's "Latent"), a resampling filter
    (lanczos, bicubic, nearest) or an upscaler model's name in `upscale_models/`. The final size
    is `width` x `height` when given (one of them: the other follows the aspect), else the first
    pass's size times `scale`. `steps` None or 0: the first pass's count. `denoise` is the
    second pass's strength. `prompt`/`negative_prompt` None: the first pass's. Every None is
    filled from the model's YAML `hires:` block, else the HIRES_DEFAULT_* values, by the merge.
    """

    scale: float | None = None
    width: int | None = None
    height: int | None = None
    upscaler: str | None = None
    steps: int | None = None
    denoise: float | None = None
    prompt: str | None = None
    negative_prompt: str | None = None
    # False: no hires fix for this request even where the model's YAML turns it on.
    enabled: bool = True

    def __post_init__(self) -> None:
        if self.scale is not None and not 1 <= self.scale <= MAX_HIRES_SCALE:
            raise InvalidRequest(
                f"hires_scale must be between 1 and {MAX_HIRES_SCALE:g}, got {self.scale:g}",
                param="hires_scale",
            )
        for name in ("width", "height"):
            value = getattr(self, name)
            if value is not None and not 8 <= value <= MAX_SIDE:
                raise InvalidRequest(
                    f"hires_{name} must be between 8 and {MAX_SIDE} pixels, got {value}",
                    param="hires_size",
                )
        if self.steps is not None and not 0 <= self.steps <= 500:
            raise InvalidRequest(
                f"hires_steps must be between 0 and 500, got {self.steps}", param="hires_steps"
            )
        if self.denoise is not None and not 0 < self.denoise <= 1:
            raise InvalidRequest(
                f"hires_denoise must be in (0, 1], got {self.denoise:g}", param="hires_denoise"
            )
        if self.upscaler is not None and not self.upscaler.strip():
            raise InvalidRequest("hires_upscaler must not be empty", param="hires_upscaler")
