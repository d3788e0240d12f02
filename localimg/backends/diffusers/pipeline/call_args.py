"""A merged request → the keyword arguments of one pipeline call.

The generic mapping fits Stable Diffusion and any diffusers class: each request field goes to
the keyword of the same meaning if the pipeline has it, and is refused if not. A pipeline of a
known family (families.py) gets its own guidance, negative prompt, input images and text length
instead. Nothing here imports torch.
"""

from __future__ import annotations

from typing import Any

from localimg.backends.diffusers import families
from localimg.backends.diffusers.options import GENERATION_KEYS
from localimg.backends.diffusers.pipeline import prompt_weights
from localimg.errors import InvalidRequest
from localimg.requests import ImageRequest, ImageResult

# Call arguments localimg sets itself: an option or extra field may not set them directly.
RESERVED_CALL_ARGS = frozenset(
    {
        "self",
        "prompt",
        "generator",
        "callback_on_step_end",
        "callback_on_step_end_tensor_inputs",
        "output_type",
        "return_dict",
        "num_images_per_prompt",
        "callback",
        "callback_steps",
        "kwargs",
        "args",
    }
)


def check_extra(extra: dict[str, Any], where: str, pipe: Any, params: dict[str, Any]) -> None:
    """Extra keywords (options, request extras) must be ones the pipeline takes."""
    allowed = sorted(k for k in params if k not in RESERVED_CALL_ARGS)
    for key in extra:
        if key in RESERVED_CALL_ARGS:
            raise InvalidRequest(
                f"{where}: {key!r} is set by localimg and cannot be given", param=key
            )
        if key not in params:
            raise InvalidRequest(
                f"{where}: {type(pipe).__name__} does not accept {key!r}; it accepts: "
                + ", ".join(allowed),
                param=key,
            )


def generation_settings(request: ImageRequest, options: Any) -> dict[str, Any]:
    """guidance, shift, max_sequence_length: the request's extra, else the YAML's options."""
    found: dict[str, Any] = {}
    for key in GENERATION_KEYS:
        value = request.extra.get(key, getattr(options, key, None))
        if value is not None:
            found[key] = value
    return found


def call_kwargs(
    request: ImageRequest,
    pipe: Any,
    params: dict[str, Any],
    multiple: int,
    generation: dict[str, Any],
) -> dict[str, Any]:
    """Every keyword of the call but the generator and the step callback."""
    pipeline = type(pipe).__name__
    family = families.family_of(pipe)
    assert request.width and request.height and request.steps
    if request.width % multiple or request.height % multiple:
        who = family.name if family else "this model"
        raise InvalidRequest(
            f"size {request.width}x{request.height}: {who} needs both sides to be multiples of "
            f"{multiple} (try {request.width // multiple * multiple or multiple}x"
            f"{request.height // multiple * multiple or multiple})",
            param="size",
        )
    kwargs: dict[str, Any] = {"num_inference_steps": request.steps}
    if "prompt" in params:
        kwargs["prompt"] = request.prompt
    elif request.prompt:
        raise InvalidRequest(f"{pipeline} takes no text prompt", param="prompt")
    wanted: dict[str, Any] = {"clip_skip": request.clip_skip or None, "strength": request.strength}
    if family is not None:
        kwargs.update(families.family_kwargs(family, request, pipe, params, generation))
        if "image" not in kwargs:
            wanted.update(image=request.init_image, mask_image=request.mask)
    else:
        kwargs.update(_unknown_family_kwargs(request, pipeline, params, generation))
        wanted.update(
            negative_prompt=request.negative_prompt,
            image=request.init_image,
            mask_image=request.mask,
        )
    for key, value in wanted.items():
        if value is None:
            continue
        if key not in params:
            raise InvalidRequest(f"{pipeline} does not support {key}", param=key)
        kwargs[key] = value
    for key, value in (("width", request.width), ("height", request.height)):
        if key in params:
            kwargs[key] = value
    kwargs.update(video_kwargs(request, pipeline, params))
    if "prompt" in kwargs:  # A1111 weights, BREAK and long prompts (or their words, stripped)
        texts = kwargs.pop("prompt"), kwargs.pop("negative_prompt", None)
        found, _ignored = prompt_weights.prompt_kwargs(
            pipe,
            params,
            *texts,
            clip_skip=request.clip_skip or 0,
            max_sequence_length=kwargs.get("max_sequence_length"),
        )
        kwargs.update(found)
    if family is not None and family.video:
        families.check_frames(pipe, request.num_frames)
    check_denoising_steps(request, params)
    check_terminal_shift(request, pipe)
    extra = {k: v for k, v in request.extra.items() if k not in GENERATION_KEYS}
    check_extra(extra, where="extra parameters", pipe=pipe, params=params)
    kwargs.update(extra)
    return kwargs


def with_ignored(
    result: ImageResult, request: ImageRequest, pipe: Any, params: dict[str, Any]
) -> ImageResult:
    """The result, naming what the call left out of the request (for X-Localimg-Ignored): prompt
    weights on a pipeline that cannot weight them (their words were drawn, plain)."""
    if "prompt" in params:
        result.ignored += prompt_weights.ignored(
            pipe, params, request.prompt, request.negative_prompt
        )
    return result


def set_batch_prompts(kwargs: dict[str, Any], prompts: list[str]) -> None:
    """A batch call's own prompt strings, in place of any embeddings of its first request's
    (requests with weights never batch: engine/batching.py; long ones are cut at 77 tokens)."""
    for key in prompt_weights.EMBED_KEYS:
        kwargs.pop(key, None)
    kwargs["prompt"] = prompts


def _unknown_family_kwargs(
    request: ImageRequest, pipeline: str, params: dict[str, Any], generation: dict[str, Any]
) -> dict[str, Any]:
    """The guidance and sequence-length keywords of a pipeline no family rule describes: the
    generic names where the pipeline takes them, a refusal for the family-only settings."""
    families.refuse_references(pipeline, request)
    if "prompt_enhance" in generation:
        raise InvalidRequest(
            f"prompt_enhance switches the prompt enhancer of the model families that have one "
            f"(Ideogram 4, ERNIE-Image, LTX-2); {pipeline} is none of them",
            param="prompt_enhance",
        )
    for key in ("guidance", "max_sequence_length"):
        if key in generation and key not in params:
            raise InvalidRequest(
                f"{key} applies to the model families localimg knows ({pipeline} is none of them)",
                param=key,
            )
    kwargs: dict[str, Any] = {}
    if "max_sequence_length" in generation:
        kwargs["max_sequence_length"] = int(generation["max_sequence_length"])
    if "guidance_scale" in params:
        kwargs["guidance_scale"] = request.cfg_scale
    elif "max_guidance_scale" in params:
        kwargs["max_guidance_scale"] = request.cfg_scale
    return kwargs


def check_denoising_steps(request: ImageRequest, params: dict[str, Any]) -> None:
    """img2img runs steps x strength steps; zero would fail deep inside diffusers."""
    if "strength" not in params or request.init_image is None or not request.steps:
        return
    strength = request.strength if request.strength is not None else params["strength"].default
    if isinstance(strength, int | float) and int(request.steps * strength) < 1:
        raise InvalidRequest(
            f"{request.steps} steps at strength {strength:g} leave no denoising step "
            "(steps x strength must be at least 1): raise steps or strength",
            param="steps",
        )


def check_terminal_shift(request: ImageRequest, pipe: Any) -> None:
    """A flow scheduler that stretches its sigmas to a terminal value (`shift_terminal`, as
    Qwen-Image's does) divides by zero at one step: the image comes out NaN, so one step is
    refused there."""
    config = getattr(getattr(pipe, "scheduler", None), "config", None) or {}
    if config.get("shift_terminal") and request.steps is not None and request.steps < 2:
        raise InvalidRequest(
            f"{request.steps} step: this model's scheduler stretches its schedule to a terminal "
            "shift, which needs at least 2 steps (one gives a NaN image); use 2 or more",
            param="steps",
        )


def video_kwargs(request: ImageRequest, pipeline: str, params: dict[str, Any]) -> dict[str, Any]:
    """num_frames and fps for a video pipeline; refused by an image pipeline. fps is `fps` where
    the pipeline conditions on it (SVD, an integer), `frame_rate` where that sets the video's time
    (LTX: its positions and LTX-2's audio length), else only the encoder's rate."""
    video = "num_frames" in params
    kwargs: dict[str, Any] = {}
    if video:
        kwargs["output_type"] = "pil"
        if request.n > 1:
            raise InvalidRequest(f"{pipeline} makes one video per request; n must be 1", param="n")
    for key, value in (("num_frames", request.num_frames), ("fps", request.fps)):
        if value is None:
            continue
        if not video:
            raise InvalidRequest(
                f"{pipeline} makes images; {key} applies to video models only", param=key
            )
        if key in params:
            kwargs[key] = round(value)
        elif key == "fps" and "frame_rate" in params:
            kwargs["frame_rate"] = float(value)
    return kwargs
