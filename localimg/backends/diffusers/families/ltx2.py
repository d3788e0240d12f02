"""The rows of LTX-2 video (LTX-2.0, 2.3 and 2.5 through diffusers' LTX2Pipeline; an input image
makes LTX2ImageToVideoPipeline over the same weights).

What the generic rules cannot say about these pipelines (diffusers 0.42), each checked in
`adjust` so that nothing asked is silently dropped or fails deep inside the call:

- guidance runs for the video when cfg_scale (guidance_scale) is above 1 and for the audio when
  audio_guidance_scale (default 7) is; the negative prompt is read whenever either runs, and the
  audio cross-attends to the video, so it is refused only when neither does;
- the request's fps is the pipeline's frame_rate (the audio's length and the transformer's time
  positions follow it), so `frame_rate` may not be set beside it;
- the VAE decoder pads each side by reflection, which fails on a latent one pixel wide: each side
  must be at least two latent pixels (64 px for LTX-2's 32x VAE);
- the image-to-video pipeline re-compresses its input image as H.264 (as the model was trained)
  through PyAV unless image_crf is 0;
- the prompt enhancer needs its processor, and its own keywords need it switched on; the
  auto-duration bounds need a duration head (LTX-2.5) and no num_frames.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any

from localimg.backends.diffusers.families.family import Family
from localimg.errors import BackendNotInstalled, InvalidRequest

if TYPE_CHECKING:
    from localimg.requests import ImageRequest

NAME = "LTX-2"
# Keywords the pipeline reads only while its prompt enhancer runs.
ENHANCER_KEYWORDS = (
    "system_prompt",
    "prompt_max_new_tokens",
    "prompt_enhancement_kwargs",
    "prompt_enhancement_seed",
)
DURATION_KEYWORDS = ("min_seconds", "max_seconds")


def adjust(
    request: ImageRequest,
    pipe: Any,
    params: dict[str, Any],
    generation: dict[str, Any],
    kwargs: dict[str, Any],
) -> None:
    """LTX-2's own rules on a call's keywords (see the module's docstring)."""
    if "frame_rate" in request.extra:
        raise InvalidRequest(
            f"{NAME} takes its frame rate from fps (--fps, or `fps` in the API); do not set "
            "frame_rate",
            param="frame_rate",
        )
    check_min_side(request, pipe)
    check_negative(request, params)
    check_enhancer(request, pipe, kwargs)
    check_duration(request, pipe)
    check_image_crf(request, pipe, params)


def check_min_side(request: ImageRequest, pipe: Any) -> None:
    """A side one latent pixel wide fails in the decoder's reflection padding."""
    vae = getattr(pipe, "vae", None)
    mode = getattr(getattr(vae, "config", None), "decoder_spatial_padding_mode", "reflect")
    if mode != "reflect":
        return
    ratio = int(getattr(pipe, "vae_spatial_compression_ratio", 32) or 32)
    side = min(request.width or 0, request.height or 0)
    if side < 2 * ratio:
        raise InvalidRequest(
            f"size {request.width}x{request.height}: {NAME} needs each side to be at least "
            f"{2 * ratio} pixels (two latent pixels of its {ratio}x VAE)",
            param="size",
        )


def _default(params: dict[str, Any], key: str) -> Any:
    param = params.get(key)
    return getattr(param, "default", None)


def check_negative(request: ImageRequest, params: dict[str, Any]) -> None:
    """The negative prompt is read when the video's or the audio's guidance runs."""
    if request.negative_prompt is None:
        return
    cfg = float(request.cfg_scale if request.cfg_scale is not None else 1.0)
    audio = request.extra.get("audio_guidance_scale", _default(params, "audio_guidance_scale"))
    audio_cfg = float(audio or cfg)  # the pipeline's own `audio_guidance_scale or guidance_scale`
    if cfg <= 1 and audio_cfg <= 1:
        raise InvalidRequest(
            f"{NAME} uses the negative prompt only with guidance: cfg_scale (the video's) or "
            f"audio_guidance_scale must be above 1 (got {cfg:g} and {audio_cfg:g})",
            param="negative_prompt",
        )


def check_enhancer(request: ImageRequest, pipe: Any, kwargs: dict[str, Any]) -> None:
    """The enhancer's keywords act only while it runs, and it runs only with its processor."""
    enhancing = bool(kwargs.get("enable_prompt_enhancement"))
    if enhancing and getattr(pipe, "processor", None) is None:
        raise InvalidRequest(
            f"this {NAME} model was loaded without the processor its prompt enhancer needs; "
            "prompt_enhance needs a model folder or repo that has it",
            param="prompt_enhance",
        )
    for key in ENHANCER_KEYWORDS:
        if key in request.extra and not enhancing:
            raise InvalidRequest(
                f"{key} applies to {NAME}'s prompt enhancer, which is off: set prompt_enhance "
                "true or remove it",
                param=key,
            )


def check_duration(request: ImageRequest, pipe: Any) -> None:
    """min_seconds / max_seconds bound the duration LTX-2.5's duration head predicts."""
    for key in DURATION_KEYWORDS:
        if key not in request.extra:
            continue
        if getattr(pipe, "duration_head", None) is None:
            raise InvalidRequest(
                f"{key} bounds the duration an {NAME} duration head predicts; this model has "
                "none: set num_frames instead",
                param=key,
            )
        if request.num_frames is not None:
            raise InvalidRequest(
                f"{key} applies only when num_frames is left out (the model then picks the "
                "duration); remove one of them",
                param=key,
            )


def check_image_crf(request: ImageRequest, pipe: Any, params: dict[str, Any]) -> None:
    """The image-to-video pipeline re-compresses its input image through PyAV by default."""
    if "image" not in params or request.init_image is None:
        return
    crf = request.extra.get("image_crf")
    if crf is None:
        from diffusers.pipelines.ltx2.utils import resolve_default_image_crf

        crf = resolve_default_image_crf(getattr(pipe, "text_encoder", None))
    if crf and importlib.util.find_spec("av") is None:
        raise BackendNotInstalled(
            f"{NAME} image-to-video re-compresses the input image as H.264 (image_crf {crf}, as "
            "the model was trained), which needs PyAV: pip install av, or set image_crf 0 to use "
            "the image as it is (a request's extra parameters, or the options of a model YAML "
            "with pipeline_type: LTX2ImageToVideoPipeline)"
        )


LTX2 = Family(
    NAME,
    cfg_on=0.0,  # the negative prompt's rule is check_negative's (the audio's guidance too)
    default_size=(768, 512),
    video=True,
    img2vid="LTX2ImageToVideoPipeline",
    enhancer_kwarg="enable_prompt_enhancement",
    enhancer_component="prompt_enhancer",
    adjust=adjust,
)

ROWS: dict[str, Family] = {
    "LTX2Pipeline": LTX2,
    "LTX2ImageToVideoPipeline": LTX2,
}
