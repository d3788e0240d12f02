"""The rows of Qwen-Image 2.x (QwenImage21Pipeline) and Qwen-Image-Layered.

Qwen-Image 2.x reads prompt and input images together with a Qwen3-VL encoder: an input image is
a reference (the pipeline has no img2img or mask), several are allowed. It runs true CFG only
with a negative prompt (" " when none), meant to sample without guidance (cfg 1). A checkpoint
may ship its own sampling schedule (`sample_sigmas`, Turbo does): the pipeline then ignores
num_inference_steps, so the steps asked for resample that schedule instead.

Qwen-Image-Layered splits one input image into RGBA layers: one call gives `layers` images. It
works at a fixed bucket (`resolution` 640 or 1024) in the input's aspect; the layers come back
at the size asked (by default the input's own), so they stack over it. Its VAE reads RGBA (the
input is handed over as RGBA). JPEG has no alpha: images with transparency are refused as JPEG
(media/encode.py).

Qwen-Image-2512 is a Qwen-Image fine-tune that loads as QwenImagePipeline: table.py's row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from localimg.backends.diffusers.families.family import Family
from localimg.errors import InvalidRequest

if TYPE_CHECKING:
    from localimg.requests import ImageRequest

LAYERED_RESOLUTIONS = (640, 1024)
MAX_LAYERS = 16  # each layer is a full image of latents: a bound on one call's memory


def _no_previews(request: ImageRequest, name: str) -> None:
    """Their latents are packed in a way the preview projection cannot read (no picture)."""
    if request.previews:
        raise InvalidRequest(
            f"{name} makes no previews (its latents have no preview projection); ask for "
            "previews 0",
            param="previews",
        )


def resampled(schedule: list[float], steps: int) -> list[float]:
    """The model's own sigma schedule at `steps` points (linear in the step position): the same
    curve, so its shape survives a different step count; `steps` equal to its length: itself."""
    if steps == len(schedule):
        return list(schedule)
    import numpy as np

    known = np.linspace(0.0, 1.0, len(schedule))
    wanted = np.linspace(0.0, 1.0, steps)
    return [float(s) for s in np.interp(wanted, known, np.asarray(schedule, dtype=np.float64))]


def _adjust_21(
    request: ImageRequest,
    pipe: Any,
    params: dict[str, Any],
    generation: dict[str, Any],
    kwargs: dict[str, Any],
) -> None:
    """Qwen-Image 2.x: the checkpoint's schedule at the steps asked, and the keywords that act
    only in some calls refused where they would not."""
    _no_previews(request, "Qwen-Image 2.x")
    extra = request.extra
    schedule = getattr(pipe, "config", {}).get("sample_sigmas")
    if schedule and "sigmas" not in extra and request.steps:
        kwargs["sigmas"] = resampled(list(schedule), int(request.steps))
    transformer = getattr(pipe, "transformer", None)
    causal = getattr(getattr(transformer, "config", None), "causal_condition", False)
    if "use_kv_cache" in extra and not causal:
        raise InvalidRequest(
            "use_kv_cache needs a transformer with causal_condition; this one has none, so "
            "there is nothing to cache",
            param="use_kv_cache",
        )


def _adjust_layered(
    request: ImageRequest,
    pipe: Any,
    params: dict[str, Any],
    generation: dict[str, Any],
    kwargs: dict[str, Any],
) -> None:
    """Qwen-Image-Layered: its input as RGBA, and its own keywords checked (the pipeline asserts
    or ignores where localimg says why)."""
    _no_previews(request, "Qwen-Image-Layered")
    if request.hires is not None:
        raise InvalidRequest(
            "Qwen-Image-Layered makes layers, not one picture a hires fix could upscale",
            param="hires",
        )
    image = kwargs.get("image")
    if image is not None and getattr(image, "mode", "RGBA") != "RGBA":
        kwargs["image"] = image.convert("RGBA")  # its VAE reads four channels
    extra = request.extra
    layers = extra.get("layers", params["layers"].default)
    if isinstance(layers, bool) or not isinstance(layers, int) or not 1 <= layers <= MAX_LAYERS:
        raise InvalidRequest(
            f"layers must be a whole number from 1 to {MAX_LAYERS}, got {layers!r}",
            param="layers",
        )
    resolution = extra.get("resolution", params["resolution"].default)
    if resolution not in LAYERED_RESOLUTIONS:
        raise InvalidRequest(
            f"resolution is the bucket Qwen-Image-Layered works at: 640 or 1024, got "
            f"{resolution!r}",
            param="resolution",
        )
    guiding = float(request.cfg_scale or 0) > 1
    if extra.get("cfg_normalize") and not guiding:
        raise InvalidRequest(
            "cfg_normalize rescales true CFG; it needs cfg_scale above 1",
            param="cfg_normalize",
        )


QWEN_IMAGE_21 = Family(
    "Qwen-Image 2.x",
    cfg_kwarg="true_cfg_scale",
    blank_negative=True,
    # No limit in the pipeline: each input is read at output_resolution (about 1 MP) by both the
    # encoder and the VAE; Qwen's edit models take up to 3.
    references=3,
    truncates_prompt=False,
    default_size=(1024, 1024),
    adjust=_adjust_21,
)
QWEN_IMAGE_LAYERED = Family(
    "Qwen-Image-Layered",
    cfg_kwarg="true_cfg_scale",
    blank_negative=True,
    distilled_kwarg="guidance_scale",
    references=1,
    needs_image=True,
    max_sequence_length=1024,
    adjust=_adjust_layered,
)

ROWS: dict[str, Family] = {
    "QwenImage21Pipeline": QWEN_IMAGE_21,
    "QwenImageLayeredPipeline": QWEN_IMAGE_LAYERED,
}
