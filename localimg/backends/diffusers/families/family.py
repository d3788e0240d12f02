"""One family's row: how a request maps onto its pipeline (see the package's docstring)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from localimg.requests import ImageRequest

EDIT_FAMILIES = "FLUX.1 Kontext, Qwen-Image-Edit(-Plus), FLUX.2, Z-Image-Omni"

# A family's own last word on a call's keywords (its quirks): (request, pipe, the pipeline's
# call parameters, the generation settings, the keywords so far) → changes the keywords in place
# or raises InvalidRequest.
Adjust = Callable[["ImageRequest", Any, dict[str, Any], dict[str, Any], dict[str, Any]], None]


@dataclass(frozen=True)
class Family:
    name: str  # as people call it, in messages
    cfg_kwarg: str = "guidance_scale"  # the keyword cfg_scale sets
    cfg_on: float = 1.0  # guidance runs when cfg_scale is above this
    negative: bool = True  # takes a negative prompt
    blank_negative: bool = False  # true CFG runs only with a negative prompt: " " when none
    distilled_kwarg: str | None = None  # the `guidance` option's keyword (distilled guidance)
    references: int = 0  # input images of a reference edit (0: the family does no edits)
    needs_image: bool = False  # cannot run without an input image
    min_reference_side: int = 0  # the pipeline refuses smaller input images
    max_sequence_length: int | None = None  # the pipeline's own limit
    # The Qwen-Image-Edit pipelines take the keyword but never cut the prompt with it: refused.
    truncates_prompt: bool = True
    img2img: str | None = None  # diffusers classes sharing the weights (from_pipe)
    inpaint: str | None = None
    area_kwarg: bool = False  # Kontext rescales the output to `max_area`: pass width x height
    default_cfg: float | None = None  # else the pipeline's own default
    # Guides by its own per-step schedule unless a cfg_scale is given (Ideogram 4): the backend
    # then offers no default cfg_scale, so the merged request says whether one was given.
    cfg_schedule: bool = False
    default_size: tuple[int, int] | None = None  # else from the transformer's sample size
    # Sizes are multiples of vae_scale_factor x this (the transformer's 2x2 patches); 1 where the
    # pipeline's vae_scale_factor already counts the patches (ERNIE-Image).
    latent_patch: int = 2
    video: bool = False
    img2vid: str | None = None  # Wan 2.2 TI2V: the image-to-video class over the same weights

    # The model's own prompt enhancer (the `prompt_enhance` option, off unless asked): the call
    # keyword that switches it and the pipeline component it needs (None: the family has none).
    enhancer_kwarg: str | None = None
    enhancer_component: str | None = None
    adjust: Adjust | None = None
