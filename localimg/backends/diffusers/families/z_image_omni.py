"""The rows of Z-Image-Omni (reference edits).

ZImageOmniPipeline (diffusers 0.42) is Z-Image's transformer with a SigLIP2 image branch: text
to image without an input image, a reference edit with one or more (each image is read twice,
as VAE latents and as SigLIP features). It runs true CFG whenever guidance_scale is above 0
(default 5.0), with "" as the negative prompt when none is given. Three references at most: the
pipeline sets no limit, ComfyUI's Z-Image-Omni text encoder node takes three images; each must
be at least 64 pixels a side and no longer than 8 times its other side (the pipeline's checks).

Its own keywords cfg_normalization and cfg_truncation reach it through the request's extra (or
the YAML's options); they shape the guidance only, so `adjust` refuses them where guidance is
off, and refuses values the pipeline would misread. The same checks serve Z-Image's
ZImagePipeline family, whose call takes the same two keywords (`check_cfg_keywords`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from localimg.backends.diffusers.families.family import Family
from localimg.errors import InvalidRequest

if TYPE_CHECKING:
    from localimg.requests import ImageRequest

NAME = "Z-Image-Omni"
MAX_ASPECT = 8  # diffusers' Flux2ImageProcessor.check_image_input, which the pipeline calls
# Positions a piece of the prompt may take beyond its tokens on the transformer's first RoPE axis:
# each piece is padded to 32 tokens and followed by 2 image positions (see _check_text_axis).
PIECE_POSITIONS = 32


def check_cfg_keywords(request: ImageRequest, cfg: float) -> None:
    """cfg_normalization and cfg_truncation act on the guided prediction only (guidance runs when
    guidance_scale is above 0 on both Z-Image pipelines); the pipeline reads cfg_normalization as
    a number (True: 1) and applies cfg_truncation only up to 1."""
    extra = request.extra
    for key in ("cfg_normalization", "cfg_truncation"):
        if key in extra and cfg <= 0:
            raise InvalidRequest(
                f"{key} applies to classifier-free guidance only: cfg_scale must be above 0 "
                f"(got {cfg:g})",
                param=key,
            )
    norm = extra.get("cfg_normalization")
    if "cfg_normalization" in extra and not (
        isinstance(norm, bool) or (isinstance(norm, int | float) and norm >= 0)
    ):
        raise InvalidRequest(
            f"cfg_normalization {norm!r}: give true (cap the guided prediction's norm at the "
            "conditional one's), false, or a number >= 0 (the cap as a multiple of that norm)",
            param="cfg_normalization",
        )
    cut = extra.get("cfg_truncation")
    if "cfg_truncation" in extra and (
        isinstance(cut, bool) or not isinstance(cut, int | float) or not 0 <= cut <= 1
    ):
        raise InvalidRequest(
            f"cfg_truncation {cut!r}: give a number from 0 to 1 (guidance stops once that "
            "fraction of the schedule has run; 1, the default, never stops it)",
            param="cfg_truncation",
        )


def adjust_z_image(
    request: ImageRequest,
    pipe: Any,
    params: dict[str, Any],
    generation: dict[str, Any],
    kwargs: dict[str, Any],
) -> None:
    """Z-Image (ZImagePipeline and its siblings): the CFG keywords checked."""
    check_cfg_keywords(request, float(kwargs.get("guidance_scale", request.cfg_scale or 0)))


def _adjust(
    request: ImageRequest,
    pipe: Any,
    params: dict[str, Any],
    generation: dict[str, Any],
    kwargs: dict[str, Any],
) -> None:
    """CFG keywords, the references' shapes, the text length and the VAE's input dtype."""
    check_cfg_keywords(request, float(kwargs.get("guidance_scale", 0.0)))
    images = kwargs.get("image") or []
    for index, image in enumerate(images, 1):
        width, height = image.size
        if max(width, height) > MAX_ASPECT * min(width, height):
            raise InvalidRequest(
                f"{NAME}: input image {index} is {width}x{height}; its long side may be at most "
                f"{MAX_ASPECT} times its short side",
                param="image",
            )
    _check_text_axis(pipe, generation.get("max_sequence_length"), len(images))
    if images:
        _check_image_axes(pipe, images, request.width or 1024, request.height or 1024)
        encode_in_vae_dtype(pipe.vae)


def _check_text_axis(pipe: Any, length: Any, references: int) -> None:
    """The prompt's pieces (one, or one per reference plus two) and the images after each take
    positions on the transformer's first RoPE axis; past its end the model indexes out of its
    table (an IndexError on a CPU, a device-side assert that ends the CUDA context on a GPU)."""
    if length is None:
        return
    config = getattr(getattr(pipe, "transformer", None), "config", None)
    axes = getattr(config, "axes_lens", None)
    if not axes:
        return
    pieces = references + 2 if references else 1
    limit = int(axes[0]) - PIECE_POSITIONS * (pieces + 1)
    if int(length) > limit:
        with_images = f" with {references} input image{'s' if references != 1 else ''}"
        raise InvalidRequest(
            f"max_sequence_length {length}: {NAME} reads at most {limit} tokens"
            f"{with_images if references else ''} (its transformer has {axes[0]} text positions)",
            param="max_sequence_length",
        )


def _check_image_axes(pipe: Any, images: list[Any], width: int, height: int) -> None:
    """The pipeline reads a reference over 1 MP at the output's area (scaled up or down), cropped
    to the size multiple; its SigLIP features are placed on the positions of its latent pixels,
    which must fit the transformer's other two RoPE axes (else the out-of-table index again)."""
    import math

    config = getattr(getattr(pipe, "transformer", None), "config", None)
    axes = getattr(config, "axes_lens", None)
    factor = int(getattr(pipe, "vae_scale_factor", 8) or 8)
    if not axes or len(axes) < 3:
        return
    for index, image in enumerate(images, 1):
        w, h = image.size
        if w * h > 1024 * 1024:
            scale = math.sqrt(width * height / (w * h))
            w, h = int(w * scale), int(h * scale)
        w, h = w // (2 * factor) * 2 * factor, h // (2 * factor) * 2 * factor
        if h // factor > int(axes[1]) or w // factor > int(axes[2]):
            most = f"{int(axes[2]) * factor}x{int(axes[1]) * factor}"
            raise InvalidRequest(
                f"{NAME}: input image {index} would be read at {w}x{h} (an image over 1 MP is "
                f"scaled to the output's area); the model places images up to {most}: send a "
                "smaller image or ask for a smaller output",
                param="image",
            )


def encode_in_vae_dtype(vae: Any) -> None:
    """diffusers 0.42 hands the references to the VAE in bfloat16 whatever the VAE's dtype, which
    fails unless the VAE is bfloat16 itself (float32 on a CPU, float16 on GPUs without bfloat16).
    A pre-hook on its encoder casts the input to the encoder's own dtype (nothing changes on a
    bfloat16 VAE); installed once per VAE."""
    encoder = getattr(vae, "encoder", None)
    if encoder is None or getattr(encoder, "_localimg_input_cast", False):
        return

    def cast(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        dtype = next(module.parameters()).dtype
        return tuple(a.to(dtype) if getattr(a, "dtype", dtype) != dtype else a for a in args)

    encoder.register_forward_pre_hook(cast)
    encoder._localimg_input_cast = True


Z_IMAGE_OMNI = Family(
    NAME,
    cfg_on=0.0,
    references=3,
    min_reference_side=64,
    default_size=(1024, 1024),
    adjust=_adjust,
)

ROWS: dict[str, Family] = {"ZImageOmniPipeline": Z_IMAGE_OMNI}
