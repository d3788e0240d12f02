"""Request and response shapes of the OpenAI Images API, with LocalAI's and localimg's extensions.

Parsing is strict: an unknown field or a value out of range is a 400 that names the field and
says what is allowed, so nothing a client sends is silently dropped. Fields that are accepted for
compatibility but cannot change what localimg does (`style`, `moderation`) are
reported back in the `X-Localimg-Ignored` response header and documented in docs/server/openai.md.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from localimg._util.validation import first_problem
from localimg.errors import InvalidRequest
from localimg.media.controls import ControlSettings, as_list, control_units
from localimg.requests import (
    MAX_N,
    ImageRequest,
    parse_cache,
    parse_mode,
    parse_size,
    request_extra,
)
from localimg.server.openai.hires import hires_fix

if TYPE_CHECKING:
    from PIL.Image import Image

    from localimg.config import ModelConfig
    from localimg.requests import ImageResult

Quality = Literal["low", "medium", "high", "auto", "standard", "hd"]


class ImageParams(BaseModel):
    """Fields shared by generations, edits and variations."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = ""
    model: str | None = None
    n: int = Field(default=1, ge=1, le=MAX_N)
    size: str | None = None
    response_format: Literal["b64_json", "url"] = "b64_json"
    output_format: Literal["png", "jpeg", "jpg", "webp", "gif", "mp4"] = "png"
    output_compression: int | None = Field(default=None, ge=0, le=100)
    quality: Quality | None = None
    background: Literal["transparent", "opaque", "auto"] | None = None
    style: Literal["vivid", "natural"] | None = None
    moderation: Literal["low", "auto"] | None = None
    user: str | None = None
    # LocalAI and localimg extensions
    negative_prompt: str | None = None
    seed: int | None = None
    step: int | None = Field(default=None, ge=1, le=500)
    steps: int | None = Field(default=None, ge=1, le=500)
    cfg_scale: float | None = Field(default=None, ge=0, le=100)
    scheduler: str | None = None
    clip_skip: int | None = Field(default=None, ge=0, le=24)
    # OpenAI's streaming (openai/streaming.py): Server-Sent Events with up to 3 partial images
    # (previews of the running generation), then the final image. Generations and edits only.
    stream: bool = False
    partial_images: int | None = Field(default=None, ge=0, le=3)
    # Step caching (issue 16): a method name, "none", or {"method": name, knob: value, ...} (a
    # JSON string of it in a multipart form); requests.parse_cache reads it.
    # Checked by requests.parse_cache, whose error says what a cache looks like.
    cache: Any = None
    # ControlNet (stable-diffusion.cpp server's names, plus control_start / control_end): each
    # one value for every control image or a list with one per image, in order; the images are
    # `control_image` (a JSON string or list, a multipart file part). media/controls.py pairs
    # them and ControlUnit checks the ranges.
    control_net: str | list[str] | None = None
    control_strength: float | list[float] | None = None
    control_start: float | list[float] | None = None
    control_end: float | list[float] | None = None
    control_preprocess: str | list[str] | None = None
    # A union ControlNet's control type (xinsir's SDXL union: 0 openpose, 1 depth, 2 hed/scribble,
    # 3 canny/lineart, 4 normal, 5 segmentation, 6 tile, 7 repaint): the pipeline keyword.
    control_mode: int | None = Field(default=None, ge=0, le=7)
    # The model's own prompt enhancer (Ideogram 4, ERNIE-Image, LTX-2); None: the YAML's option.
    prompt_enhance: bool | None = None
    # Qwen-Image-Layered: the RGBA layers one image is split into (one data[] item each).
    layers: int | None = Field(default=None, ge=1, le=16)
    # A1111's hires fix (openai/hires.py): any hires_* field asks for one; `hires` false turns
    # off the model YAML's, true alone asks for one with the YAML's or the default settings.
    hires: bool | None = None
    hires_scale: float | None = Field(default=None, ge=1, le=8)  # HiresFix: the same
    hires_size: str | None = None  # WxH of the second pass; wins over hires_scale
    hires_upscaler: str | None = None  # latent, lanczos, ... or an upscale_models/ name
    hires_steps: int | None = Field(default=None, ge=0, le=500)  # 0: the first pass's steps
    hires_denoise: float | None = Field(default=None, gt=0, le=1)
    hires_prompt: str | None = None
    hires_negative_prompt: str | None = None


# The fields that take one value or a list (one per control image).
ONE_OR_LIST = frozenset(
    {
        "control_image",
        "control_net",
        "control_strength",
        "control_start",
        "control_end",
        "control_preprocess",
    }
)


class GenerationBody(ImageParams):
    """POST /v1/images/generations (JSON)."""

    file: str | None = None  # LocalAI: base64, data URL or http(s) URL of an input image
    # LocalAI's reference images (FLUX.1 Kontext, Qwen-Image-Edit, FLUX.2): each base64, a data
    # URL or an http(s) URL; with `file` they follow it, alone the first one leads.
    ref_images: list[str] | None = Field(default=None, max_length=16)
    # LocalAI's integer mode (0: default) or a task name; see requests.parse_mode.
    mode: int | str | None = None
    strength: float | None = Field(default=None, gt=0, le=1)
    # ControlNet control images: base64, a data URL or an http(s) URL; a list for several units.
    control_image: str | list[str] | None = None
    num_frames: int | None = Field(default=None, ge=1, le=256)
    fps: float | None = Field(default=None, gt=0, le=120)


class EditFields(ImageParams):
    """The text fields of POST /v1/images/edits and /variations (multipart)."""

    strength: float | None = Field(default=None, gt=0, le=1)
    input_fidelity: Literal["high", "low"] | None = None


def parse_model(cls: type[BaseModel], data: Any) -> Any:
    """Validate a body; a failure is a 400 naming the first bad field and what is allowed."""
    if not isinstance(data, dict):
        raise InvalidRequest("the request body must be a JSON object")
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        problem = first_problem(exc)
        param = problem.key if problem.key != "(top level)" else None
        if problem.kind == "extra_forbidden":
            allowed = ", ".join(sorted(cls.model_fields))
            raise InvalidRequest(
                f"unknown field {param!r}; the fields this endpoint accepts are: {allowed}",
                param=param,
                code="unknown_parameter",
            ) from None
        root = problem.key.split(".")[0]
        if root in ONE_OR_LIST:  # a union's error names its branch (control_net.str): not useful
            raise InvalidRequest(
                f"{root} takes one value or a list of them (one per control image): "
                f"{problem.message} (got {problem.given!r})",
                param=root,
            ) from None
        raise InvalidRequest(problem.describe(), param=param) from None


@dataclass(frozen=True)
class Prepared:
    """A parsed body turned into what the engine and the response need."""

    request: ImageRequest
    response_format: str
    output_format: Literal["png", "jpeg", "webp"]
    compression: int | None
    ignored: tuple[str, ...]
    # Video results (jobs/videos.py): the format asked for (mp4, webp, gif; None: mp4) and
    # whether response_format was given (a video answers with a url unless asked otherwise).
    video_format: str | None = None
    response_format_given: bool = True
    # Streaming: how many partial images (None: not streamed), and what the events echo back.
    stream_partials: int | None = None
    quality: str = "auto"
    background: str = "auto"


def _steps(params: ImageParams) -> int | None:
    """The step count the client asked for (`steps` or LocalAI's `step`), or None.

    OpenAI's `quality` goes to the engine as `ImageRequest.quality`: `engine.merge_request`
    scales the model's own steps (its YAML `step`, else the backend's default) by it.
    """
    if params.step is not None and params.steps is not None and params.step != params.steps:
        raise InvalidRequest(
            f"step ({params.step}) and steps ({params.steps}) disagree; send one of them",
            param="steps",
        )
    return params.steps if params.steps is not None else params.step


def prepare(
    params: ImageParams,
    config: ModelConfig,
    *,
    init_image: Image | None = None,
    reference_images: tuple[Image, ...] = (),
    mask: Image | None = None,
    strength: float | None = None,
    mode: str | None = None,
    control_images: Sequence[Image] = (),
) -> Prepared:
    """Check the cross-field rules and build the engine's `ImageRequest`."""
    if not params.prompt.strip() and init_image is None:
        raise InvalidRequest("prompt is required (a non-empty string)", param="prompt")
    asked, video_format, output_format = _output_formats(params)
    given = params.model_fields_set
    stream_partials = _stream_partials(params, asked in ("mp4", "gif"))
    width = height = None
    if params.size and params.size.strip().lower() != "auto":
        width, height = parse_size(params.size)
    ignored = _ignored(params)
    cache, cache_options = parse_cache(params.cache)
    controls = control_units(control_images, control_settings(params))
    request = ImageRequest(
        prompt=params.prompt,
        negative_prompt=params.negative_prompt,
        width=width,
        height=height,
        steps=_steps(params),
        quality=params.quality,
        cfg_scale=params.cfg_scale,
        seed=params.seed,
        n=params.n,
        scheduler=params.scheduler,
        clip_skip=params.clip_skip,
        init_image=init_image,
        reference_images=reference_images,
        mask=mask,
        strength=strength,
        mode=mode if mode is not None else parse_mode(getattr(params, "mode", None)),
        num_frames=getattr(params, "num_frames", None),
        fps=getattr(params, "fps", None),
        previews=stream_partials or 0,
        cache=cache,
        cache_options=cache_options,
        controls=controls,
        extra=request_extra(
            control_mode=params.control_mode,
            prompt_enhance=params.prompt_enhance,
            layers=params.layers,
        ),
        hires=hires_fix(params),
    )
    return Prepared(
        request=request,
        response_format=params.response_format,
        output_format=output_format,
        compression=params.output_compression,
        ignored=ignored,
        video_format=video_format,
        response_format_given="response_format" in given,
        stream_partials=stream_partials,
        quality=params.quality if params.quality in ("low", "medium", "high") else "auto",
        background=params.background or "auto",
    )


def control_settings(params: ImageParams) -> ControlSettings:
    """The body's ControlNet settings, each as a list (media/controls.py pairs them)."""
    return ControlSettings(
        nets=as_list(params.control_net),
        strengths=as_list(params.control_strength),
        starts=as_list(params.control_start),
        ends=as_list(params.control_end),
        preprocess=as_list(params.control_preprocess),
    )


def _output_formats(
    params: ImageParams,
) -> tuple[str, str | None, Literal["png", "jpeg", "webp"]]:
    """The format asked for, the video format it names (when given), the still-image format;
    the output options that cannot apply to it are refused."""
    asked = "jpeg" if params.output_format == "jpg" else params.output_format
    given = params.model_fields_set
    video_format = asked if asked in ("mp4", "gif", "webp") and "output_format" in given else None
    output_format: Literal["png", "jpeg", "webp"] = (
        asked if asked in ("png", "jpeg", "webp") else "png"
    )
    if params.output_compression is not None and asked in ("png", "gif"):
        raise InvalidRequest(
            f"output_compression applies to jpeg, webp and mp4 output, not {asked}",
            param="output_compression",
        )
    if params.background == "transparent":
        raise InvalidRequest(
            "background 'transparent' is not supported: diffusion models here paint opaque "
            "images (use 'opaque' or 'auto')",
            param="background",
        )
    return asked, video_format, output_format


def _ignored(params: ImageParams) -> tuple[str, ...]:
    """Fields accepted for compatibility that change nothing (named in X-Localimg-Ignored)."""
    ignored = tuple(
        name for name in ("style", "moderation") if getattr(params, name, None) is not None
    )
    if getattr(params, "mode", None) in (0, "0"):
        ignored += ("mode",)  # LocalAI's default NCNN kernel choice: nothing to do here
    return ignored


def _stream_partials(params: ImageParams, video: bool) -> int | None:
    """The partial images a streamed request wants (0-3), None when not streamed; the refusals.

    OpenAI streams one image (`n` 1) as base64 only; `partial_images` means nothing unstreamed.
    """
    if not params.stream:
        if params.partial_images is not None:
            raise InvalidRequest(
                "partial_images applies to streamed responses: send stream: true with it",
                param="partial_images",
            )
        return None
    if params.n != 1:
        raise InvalidRequest(
            f"stream: true makes one image; n is {params.n} (send n: 1, or stream: false)",
            param="n",
        )
    if params.response_format == "url" and "response_format" in params.model_fields_set:
        raise InvalidRequest(
            "streamed images come as b64_json only; drop response_format or set it to b64_json",
            param="response_format",
        )
    if video or getattr(params, "num_frames", None) is not None:
        raise InvalidRequest(
            "stream: true is for still images; a video is served by /v1/videos",
            param="stream",
        )
    return params.partial_images or 0


def usage(result: ImageResult) -> dict[str, Any]:
    """A `usage` object in the shape of gpt-image-1's (LiteLLM and friends parse it).

    Diffusion models have no token accounting: input tokens are the prompt's words (positive and
    negative), output and image tokens are 0.
    """
    request = result.request
    words = 0
    if request is not None:
        words = len(request.prompt.split()) + len((request.negative_prompt or "").split())
    return {
        "total_tokens": words,
        "input_tokens": words,
        "output_tokens": 0,
        "input_tokens_details": {"text_tokens": words, "image_tokens": 0},
    }


def response_body(
    result: ImageResult, items: list[dict[str, Any]], prepared: Prepared
) -> dict[str, Any]:
    """`{"created", "data": [...], "usage", ...}`; each item carries its seed."""
    request = result.request
    data = []
    # One video (or an mp4 of still images) comes back as one item: it carries the first seed.
    seeds = result.seeds if len(items) == len(result.seeds) else result.seeds[:1] * len(items)
    for item, seed in zip(items, seeds, strict=True):
        entry = dict(item)
        entry["revised_prompt"] = request.prompt if request is not None else None
        entry["seed"] = seed
        data.append(entry)
    body: dict[str, Any] = {
        "created": int(time.time()),
        "data": data,
        "usage": usage(result),
        "output_format": prepared.output_format,
        "model": result.model,
    }
    if request is not None:
        # The images' own size: a hires fix's second pass makes them bigger than the request.
        width, height = result.images[0].size if result.images else (request.width, request.height)
        body["size"] = f"{width}x{height}"
        body["steps"] = request.steps
    return body
