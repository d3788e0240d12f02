"""Which diffusers pipeline serves a request: the loaded one, or a sibling made with `from_pipe`.

A model is loaded once, as the pipeline class its YAML names. A request may need another task
over the same weights: an image sent to a text-to-image model means img2img, a mask means
inpainting, a text-only request to an img2img model means txt2img. diffusers' AutoPipelines build
that sibling with `from_pipe`, which reuses the loaded modules (no second copy of the weights), and
the sibling is kept for the next request. Tasks that need other weights (depth2img, img2vid,
txt2vid) are served only by a model loaded for them; asking another model is a clear error.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from localimg.errors import InvalidRequest

if TYPE_CHECKING:
    from PIL.Image import Image

    from localimg.requests import ImageRequest

# Tasks a text-to-image / img2img / inpainting model serves through an AutoPipeline sibling.
DERIVED: dict[str, str] = {
    "txt2img": "AutoPipelineForText2Image",
    "img2img": "AutoPipelineForImage2Image",
    "variation": "AutoPipelineForImage2Image",
    "inpaint": "AutoPipelineForInpainting",
}
SD_FAMILY = frozenset({"txt2img", "img2img", "inpaint"})
VIDEO_KINDS = frozenset({"img2vid", "txt2vid"})


def call_params(pipe: Any) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(pipe.__call__).parameters)


def pipeline_kind(pipe: Any) -> str:
    """What a loaded pipeline does, from its class and call signature."""
    params = call_params(pipe)
    if "Depth2Img" in type(pipe).__name__:
        return "depth2img"
    if "num_frames" in params:
        return "img2vid" if "image" in params else "txt2vid"
    if "mask_image" in params:
        return "inpaint"
    if "image" in params:
        return "img2img"
    return "txt2img"


def choose_mode(request: ImageRequest, kind: str) -> str:
    """The task of a request on a model of `kind`: its explicit `mode`, else from its inputs."""
    if request.mode is not None:
        return request.mode
    if request.mask is not None:
        return "inpaint"
    if request.init_image is not None:
        if kind in ("depth2img", "img2vid"):
            return kind
        if kind == "txt2vid":
            raise InvalidRequest(
                "this model makes videos from text and takes no input image", param="image"
            )
        return "img2img"
    if kind in ("depth2img", "img2vid"):
        raise InvalidRequest(
            f"this model does {kind} and needs an input image (--image, or `file` in the API)",
            param="image",
        )
    return "txt2vid" if kind == "txt2vid" else "txt2img"


def serves(mode: str, kind: str) -> bool:
    """True if the loaded pipeline itself serves `mode`."""
    return mode == kind or (mode == "variation" and kind == "img2img")


def derive(base: Any, mode: str, kind: str, family: Any = None) -> Any:
    """A sibling pipeline for `mode` sharing the base pipeline's modules: the family's own
    img2img / inpaint class where it names one (families.py), else diffusers' AutoPipeline; a
    modular pipeline's adapter makes its own (pipeline/modular.py)."""
    if hasattr(type(base), "task_sibling"):
        return base.task_sibling(mode)
    own = (
        {
            "img2img": family.img2img,
            "variation": family.img2img,
            "inpaint": family.inpaint,
            "img2vid": family.img2vid,
        }
        if family is not None
        else {}
    )
    if own.get(mode):
        import diffusers

        from localimg.backends.diffusers.families import check_needs

        check_needs(str(own[mode]))
        pipe = getattr(diffusers, str(own[mode])).from_pipe(base)
        if hasattr(pipe, "set_progress_bar_config"):
            pipe.set_progress_bar_config(disable=True)
        return pipe
    if family is not None:
        raise InvalidRequest(
            f"{family.name} ({type(base).__name__}) does {kind}; diffusers has no {mode} "
            "pipeline for it",
            param="mode",
        )
    if mode not in DERIVED or kind not in SD_FAMILY:
        raise InvalidRequest(
            f"this model ({type(base).__name__}) does {kind}; it cannot do {mode}. Use a model "
            f"made for {mode}",
            param="mode",
        )
    import diffusers

    auto = getattr(diffusers, DERIVED[mode])
    try:
        pipe = auto.from_pipe(base)
    except (ValueError, KeyError, AttributeError, TypeError) as exc:
        raise InvalidRequest(
            f"{type(base).__name__} has no {mode} counterpart in diffusers ({exc})", param="mode"
        ) from None
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)
    return pipe


def first_video(output: Any) -> list[Image] | None:
    """The frames of the first video of a pipeline output (None for an image output)."""
    frames = getattr(output, "frames", None)
    if frames is None:
        return None
    video = frames[0]
    if isinstance(video, list):
        return list(video)
    import numpy as np
    from PIL import Image as PILImage

    array = np.asarray(video)
    if array.dtype != np.uint8:
        array = (np.clip(array, 0, 1) * 255).round().astype(np.uint8)
    return [PILImage.fromarray(frame) for frame in array]


def output_images(output: Any, request: ImageRequest) -> list[Image]:
    """The pictures of one call: a video's frames, else its images. A pipeline that answers a
    list of images per prompt (Qwen-Image-Layered's RGBA layers) gives all of them, each at the
    size asked (it works at a fixed bucket; the layers must stack over the input)."""
    frames = first_video(output)
    if frames is not None:
        return frames
    images = list(output.images)
    if not images or not isinstance(images[0], list):
        return images
    from PIL import Image as PILImage

    size = (request.width or 0, request.height or 0)
    lanczos = PILImage.Resampling.LANCZOS  # Pillow premultiplies alpha for RGBA resizes
    return [
        layer if layer.size == size or not all(size) else layer.resize(size, lanczos)
        for group in images
        for layer in group
    ]


def image_seeds(seeds: list[int], images: int, video: bool) -> list[int]:
    """The seed of each image: several images per seed (layers) repeat it; a video's frames
    share the request's seeds."""
    if video or not seeds or images == len(seeds) or images % len(seeds):
        return seeds
    return [seed for seed in seeds for _ in range(images // len(seeds))]


def default_fps(params: dict[str, inspect.Parameter]) -> float:
    """The pipeline's own fps (SVD) or frame_rate (LTX) default, else 8 like diffusers' exports."""
    fps = params.get("fps") or params.get("frame_rate")
    if fps is not None and isinstance(fps.default, int | float):
        return float(fps.default)
    return 8.0


def steps_done(pipe: Any, call_index: int, steps: int) -> int:
    """Steps finished after the step callback's `call_index`-th call: a second-order scheduler
    (Heun) calls the denoiser, and the callback, about twice per step."""
    timesteps = getattr(getattr(pipe, "scheduler", None), "timesteps", None)
    calls = len(timesteps) if timesteps is not None else 0
    if calls <= steps:
        return min(call_index + 1, steps)
    return min(steps, max(1, round((call_index + 1) * steps / calls)))


class Interrupted(Exception):
    """Raised from a legacy step callback to stop a pipeline that has no `_interrupt` flag."""


def legacy_callback(pipe: Any, on_step: Any, cancel: Any) -> Any:
    """Adapt `callback_on_step_end`-style progress to the older `callback(step, t, latents)`."""

    def callback(step: int, timestep: Any, _latents: Any) -> None:
        on_step(pipe, step, timestep, {})
        if cancel.is_set():
            raise Interrupted

    return callback
