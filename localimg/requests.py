"""The contract between front ends and backends: what is asked, what comes back, what happens.

A front end (CLI, HTTP) builds an `ImageRequest` with only what the user said; fields left
`None` are filled by `engine.merge_request` from the model's YAML and then from the backend's
defaults, so a backend always receives a request with every field set. Nothing here is
backend-specific.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from localimg.errors import InvalidRequest
from localimg.request_parts import (
    MAX_SIDE,
    ControlUnit,
    HiresFix,
)

if TYPE_CHECKING:
    from PIL.Image import Image

MAX_N = 10
MAX_STEPS = 500
MAX_SEED = 2**32 - 1  # the range every backend (torch generators, sd.cpp) accepts
MAX_FRAMES = 256
MAX_FPS = 120
# OpenAI's limit for gpt-image prompts; longer text is refused rather than copied into every
# image's metadata (and a text encoder reads at most a few hundred tokens of it anyway).
MAX_PROMPT_CHARS = 32_000
# OpenAI's edits take up to 16 `image[]` files; a family's own limit (Kontext 1, Qwen-Image-Edit-
# Plus 3, ...) is checked by its backend, which names it.
MAX_INPUT_IMAGES = 16
# Partial images (previews) of a running generation a request may ask for: OpenAI streams up to
# 3; the job and A1111 APIs may ask for more, at most one per step.
MAX_PREVIEWS = 50
# ControlNet units in one request (A1111's sd-webui-controlnet defaults to 3 unit slots).
MAX_CONTROL_UNITS = 4

# OpenAI's `quality` → a multiple of the model's own step count (its YAML `step`, else the
# backend's default). `engine.merge` applies it, where the backend's default is known.
QUALITY_STEP_FACTORS: dict[str, float] = {
    "low": 0.5,
    "medium": 0.75,
    "standard": 1.0,
    "auto": 1.0,
    "high": 1.0,
    "hd": 1.5,
}

# What a request asks a model to do (`mode`). None lets the backend choose from the inputs: a
# mask means inpaint, an image means the model's image task (img2img, depth2img or img2vid), no
# image means txt2img or txt2vid. LocalAI's integer `mode` (0: default) maps to None. "edit" is a
# reference edit: the input images guide a new image (FLUX.1 Kontext, Qwen-Image-Edit, FLUX.2)
# instead of being noised and denoised (img2img); on those families it is what None chooses.
MODES = ("txt2img", "img2img", "inpaint", "depth2img", "variation", "edit", "img2vid", "txt2vid")
IMAGE_MODES = frozenset({"img2img", "inpaint", "depth2img", "variation", "edit", "img2vid"})
VIDEO_MODES = frozenset({"img2vid", "txt2vid"})


# Step caching (issue 16): a method name the backend knows (diffusers' first_block_cache,
# taylorseer_cache, mag_cache, faster_cache; stable-diffusion.cpp's easycache, ucache, dbcache,
# taylorseer, cachedit, spectrum) and the method's own knobs. A request's "none" (or "off") turns
# off a cache the model's YAML sets. Which methods a loaded model can use is the backend's word.
CACHE_OFF = frozenset({"none", "off"})
_CACHE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MAX_CACHE_OPTIONS = 32


def parse_cache(value: object, param: str = "cache") -> tuple[str | None, dict[str, Any]]:
    """A `cache` as a client sends it → (method, knobs).

    Accepted: a method name (`"first_block_cache"`), a JSON object with the method and its knobs
    (`{"method": "first_block_cache", "threshold": 0.1}`), or the same object as a JSON string (a
    multipart form field). None or "" → (None, {}).
    """
    if value is None or value == "":
        return None, {}
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise InvalidRequest(f"{param}: not a JSON object ({exc.msg})", param=param) from None
    if isinstance(value, str):
        return value.strip().lower(), {}
    if isinstance(value, Mapping):
        knobs = {str(k): v for k, v in value.items() if k != "method"}
        method = value.get("method")
        if method is not None and not isinstance(method, str):
            raise InvalidRequest(f"{param}.method must be a string", param=param)
        return (method.strip().lower() if method else None), knobs
    raise InvalidRequest(
        f'{param} must be a method name or an object {{"method": name, knob: value, ...}}',
        param=param,
    )


def check_cache_fields(method: str | None, knobs: Mapping[str, Any]) -> None:
    """The backend-neutral rules: a method and knob names are lowercase identifiers, knob values
    are scalars or lists of scalars. What each method accepts is the backend's to check."""
    if method is not None and not _CACHE_NAME.match(method):
        raise InvalidRequest(
            f"cache {method!r} is not a method name (lowercase letters, digits and _)",
            param="cache",
        )
    if len(knobs) > MAX_CACHE_OPTIONS:
        raise InvalidRequest(f"at most {MAX_CACHE_OPTIONS} cache options", param="cache")
    for key, value in knobs.items():
        if not _CACHE_NAME.match(key):
            raise InvalidRequest(
                f"cache option {key!r} is not a knob name (lowercase letters, digits and _)",
                param="cache",
            )
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(item, bool | int | float | str) for item in items):
            raise InvalidRequest(
                f"cache option {key}: {value!r} is not a number, a string, a boolean or a list "
                "of them",
                param="cache",
            )


def random_seed() -> int:
    """A fresh seed for a request that gave none; reported back so the image can be remade."""
    return secrets.randbelow(MAX_SEED - MAX_N)


def split_prompt(prompt: str, negative_prompt: str | None = None) -> tuple[str, str | None]:
    """Apply LocalAI's `positive|negative` convention.

    The text after the first `|` is the negative prompt. An explicit negative prompt wins over the
    one in the text, so a client that sends both gets what it sent in the dedicated field.
    """
    positive, sep, negative = prompt.partition("|")
    if not sep:
        return prompt, negative_prompt
    if negative_prompt is not None:
        return positive.strip(), negative_prompt
    return positive.strip(), negative.strip() or None


def parse_size(text: str) -> tuple[int, int]:
    """`"512x768"` → (512, 768), with an error that says what a size looks like."""
    width_s, sep, height_s = text.lower().strip().partition("x")
    if not sep or not width_s.strip().isdigit() or not height_s.strip().isdigit():
        raise InvalidRequest(
            f"size {text!r} is not WIDTHxHEIGHT (for example 512x512)", param="size"
        )
    width, height = int(width_s), int(height_s)
    check_side("size", width)
    check_side("size", height)
    return width, height


def parse_mode(value: object) -> str | None:
    """A `mode` as a client sends it: a name from MODES, or LocalAI's integer 0 (the default).

    LocalAI's other integers chose compute kernels of its NCNN backend (1: winograd/sgemm), which
    localimg does not have, so they are refused instead of being ignored.
    """
    if value is None or value == "" or value == 0 or value == "0":
        return None
    if isinstance(value, str) and value.strip().lower() in MODES:
        return value.strip().lower()
    raise InvalidRequest(
        f"mode {value!r} is not supported; use one of {', '.join(MODES)} or 0 (choose from the "
        "inputs). LocalAI's mode 1 selected kernels of its NCNN backend, which localimg lacks",
        param="mode",
    )


def request_extra(**settings: Any) -> dict[str, Any]:
    """A request's `extra` from the per-request settings an interface takes (union ControlNet's
    control_mode, the model's prompt enhancer): the ones given, none that were left out (so the
    YAML's value stays in force)."""
    return {key: value for key, value in settings.items() if value is not None}


def check_side(param: str, value: int) -> None:
    if not 8 <= value <= MAX_SIDE:
        raise InvalidRequest(
            f"{param}: {value} pixels is out of range; each side must be between 8 and {MAX_SIDE}",
            param=param,
        )


@dataclass(frozen=True)
class ImageRequest:
    """One generation request. `None` means "not said": the YAML or the backend decides."""

    prompt: str
    negative_prompt: str | None = None
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    cfg_scale: float | None = None
    seed: int | None = None
    n: int = 1
    scheduler: str | None = None
    init_image: Image | None = None
    mask: Image | None = None
    strength: float | None = None
    clip_skip: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    mode: str | None = None  # one of MODES; None: chosen from the inputs
    num_frames: int | None = None  # video models: frames per video
    fps: float | None = None  # video models: frames per second (SVD also conditions on it)
    quality: str | None = None  # OpenAI's quality: scales the model's steps when steps is unset
    # The input images after the first (`init_image`), in the order given: `image[]` files 2..N,
    # `--image` given again. Only reference-edit families use them; others refuse them.
    reference_images: tuple[Image, ...] = ()
    # How many previews of the running generation to send as ProgressEvents with `preview` set,
    # at evenly spaced steps (0: none). A backend makes them cheaply (a tiny decoder or a
    # latent-to-RGB projection); they never change the final image.
    previews: int = 0
    # Step caching: the method (None: the YAML's, else none; "none"/"off": none even if the YAML
    # sets one) and its knobs, by the method's own knob names. After the merge `cache` is a
    # method name or None, and `cache_options` holds the YAML's knobs with the request's over them.
    cache: str | None = None
    cache_options: Mapping[str, Any] = field(default_factory=dict)
    # ControlNet units, in the order given (several stack where the family allows it).
    controls: tuple[ControlUnit, ...] = ()
    # A1111's hires fix: a second, upscaled img2img pass (None: the YAML's `hires:` decides).
    hires: HiresFix | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every field's range; raise `InvalidRequest` naming the field."""
        if not isinstance(self.prompt, str):
            raise InvalidRequest("prompt must be a string", param="prompt")
        for name in ("prompt", "negative_prompt"):
            text = getattr(self, name)
            if text is not None and len(text) > MAX_PROMPT_CHARS:
                raise InvalidRequest(
                    f"{name} is {len(text)} characters long; the limit is {MAX_PROMPT_CHARS}",
                    param=name,
                )
        if self.quality is not None and self.quality not in QUALITY_STEP_FACTORS:
            raise InvalidRequest(
                f"quality {self.quality!r} is not one of {', '.join(QUALITY_STEP_FACTORS)}",
                param="quality",
            )
        if not 0 <= self.previews <= MAX_PREVIEWS:
            raise InvalidRequest(
                f"previews must be between 0 and {MAX_PREVIEWS}, got {self.previews}",
                param="partial_images",
            )
        check_cache_fields(self.cache, self.cache_options)
        if not 1 <= self.n <= MAX_N:
            raise InvalidRequest(f"n must be between 1 and {MAX_N}, got {self.n}", param="n")
        if self.width is not None:
            check_side("width", self.width)
        if self.height is not None:
            check_side("height", self.height)
        if self.steps is not None and not 1 <= self.steps <= MAX_STEPS:
            raise InvalidRequest(
                f"steps must be between 1 and {MAX_STEPS}, got {self.steps}", param="steps"
            )
        if self.cfg_scale is not None and not 0 <= self.cfg_scale <= 100:
            raise InvalidRequest(
                f"cfg_scale must be between 0 and 100, got {self.cfg_scale}", param="cfg_scale"
            )
        if self.seed is not None and not 0 <= self.seed <= MAX_SEED - self.n:
            raise InvalidRequest(
                f"seed must be between 0 and {MAX_SEED - self.n} (image i uses seed+i), "
                f"got {self.seed}",
                param="seed",
            )
        if self.strength is not None and not 0 < self.strength <= 1:
            raise InvalidRequest(
                f"strength must be in (0, 1], got {self.strength}", param="strength"
            )
        if self.clip_skip is not None and not 0 <= self.clip_skip <= 24:
            raise InvalidRequest(
                f"clip_skip must be between 0 and 24, got {self.clip_skip}", param="clip_skip"
            )
        self._validate_conditioning()

    def _validate_conditioning(self) -> None:
        """Mode, input images and video fields must agree with each other."""
        if self.mode is not None and self.mode not in MODES:
            raise InvalidRequest(
                f"mode {self.mode!r} is not one of {', '.join(MODES)}", param="mode"
            )
        if self.mask is not None and self.init_image is None:
            raise InvalidRequest("a mask needs an image to edit", param="mask")
        if self.reference_images:
            self._validate_references()
        if len(self.controls) > MAX_CONTROL_UNITS:
            raise InvalidRequest(
                f"{len(self.controls)} ControlNet units; at most {MAX_CONTROL_UNITS} are accepted",
                param="control_image",
            )
        if self.mode in IMAGE_MODES and self.init_image is None:
            raise InvalidRequest(f"mode {self.mode} needs an input image", param="image")
        if self.mode == "inpaint" and self.mask is None:
            raise InvalidRequest(
                "mode inpaint needs a mask (or an image whose transparent area is the mask)",
                param="mask",
            )
        if self.mode in ("txt2img", "txt2vid") and self.init_image is not None:
            raise InvalidRequest(f"mode {self.mode} takes no input image", param="image")
        if self.mask is not None and self.mode not in (None, "inpaint"):
            raise InvalidRequest(f"mode {self.mode} takes no mask", param="mask")
        if self.num_frames is not None and not 1 <= self.num_frames <= MAX_FRAMES:
            raise InvalidRequest(
                f"num_frames must be between 1 and {MAX_FRAMES}, got {self.num_frames}",
                param="num_frames",
            )
        if self.fps is not None and not 0 < self.fps <= MAX_FPS:
            raise InvalidRequest(f"fps must be in (0, {MAX_FPS}], got {self.fps}", param="fps")

    def _validate_references(self) -> None:
        """Several input images: a reference edit of one picture made from all of them."""
        count = 1 + len(self.reference_images)
        if self.init_image is None:
            raise InvalidRequest("reference images need a first input image", param="image")
        if count > MAX_INPUT_IMAGES:
            raise InvalidRequest(
                f"{count} input images; at most {MAX_INPUT_IMAGES} are accepted", param="image"
            )
        if self.mask is not None:
            raise InvalidRequest(
                f"a mask applies to one input image; got {count} images with it", param="mask"
            )
        if self.mode not in (None, "edit"):
            raise InvalidRequest(
                f"mode {self.mode} takes one input image; got {count} (several images are a "
                "reference edit: mode edit)",
                param="image",
            )

    @property
    def input_images(self) -> list[Image]:
        """Every input image in the order given: `init_image`, then `reference_images`."""
        if self.init_image is None:
            return []
        return [self.init_image, *self.reference_images]

    def with_(self, **changes: Any) -> ImageRequest:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    @property
    def seeds(self) -> list[int]:
        """The seed of each image: seed, seed+1, ... (only once the seed is resolved)."""
        if self.seed is None:
            raise ValueError("seed is not resolved yet")
        return [self.seed + i for i in range(self.n)]


def hires_second_pass(request: ImageRequest, image: Image, seed: int) -> ImageRequest:
    """The second pass of a merged request's hires fix for one image: img2img over `image` (the
    first pass's, upscaled) at the hires size, steps, denoise and prompts, with that image's
    seed; no ControlNet units (their maps fit the first size; the upscaled image already holds
    the composition) and no hires fix of its own, even where the YAML turns one on."""
    hires = request.hires
    if hires is None:
        raise ValueError("the request has no hires fix")
    negative = hires.negative_prompt
    return replace(
        request,
        prompt=hires.prompt or request.prompt,
        negative_prompt=negative if negative is not None else request.negative_prompt,
        width=hires.width,
        height=hires.height,
        steps=hires.steps,
        strength=hires.denoise,
        init_image=image,
        seed=seed,
        n=1,
        mode="img2img",
        controls=(),
        hires=HiresFix(enabled=False),
    )


@dataclass
class ImageResult:
    """What a backend returns: the images (or video frames), their seeds and where time went."""

    images: list[Image]
    seeds: list[int]
    timings: dict[str, float] = field(default_factory=dict)
    request: ImageRequest | None = None  # the fully resolved request that made the images
    model: str = ""
    scheduler: str = ""
    fps: float | None = None  # set for video results: `images` are then frames
    # What the request asked for that the model could not do and was left out (e.g.
    # "prompt-weights" on a model that cannot weight prompts): X-Localimg-Ignored, a CLI warning.
    ignored: list[str] = field(default_factory=list)
    # A1111 infotext fields the backend adds to the PNG `parameters` text ("Lora hashes").
    infotext: dict[str, str] = field(default_factory=dict)


Phase = Literal["queued", "load", "step", "decode", "done"]


@dataclass(frozen=True)
class ProgressEvent:
    """A progress report. `step`/`total` count denoising steps over all images of the request."""

    phase: Phase
    step: int = 0
    total: int = 0
    image_index: int = 0
    message: str = ""
    # A preview of the image being made (phase "step"), when the request asked for previews.
    preview: Image | None = None
