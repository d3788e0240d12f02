"""The model families of 2025-26 (Z-Image, FLUX.2, Qwen-Image, FLUX.1 Kontext, Chroma, Wan): one
row per family saying how a request maps onto its pipeline, read from each pipeline's code
(diffusers 0.42).

The generic request mapping (pipeline/call_args.py) was written for Stable Diffusion: `cfg_scale` is
`guidance_scale`, a negative prompt is always welcome, an image means img2img. These families
differ, and a difference handled wrongly is a parameter silently ignored, so each row says:

- which keyword really does guidance (`cfg_kwarg`) and above which value guidance runs;
- whether there is a negative prompt, and whether true CFG needs one (Qwen-Image and Kontext run
  CFG only when one is given: with none, localimg passes " ", as diffusers' docs do);
- which keyword takes the distilled guidance (the `guidance` option), where a family has one
  besides true CFG; it only acts when the transformer embeds guidance (`guidance_embeds`);
- how many input images a reference edit takes (0: none; an image then means img2img through the
  family's own img2img pipeline, if it has one);
- the limit the pipeline puts on `max_sequence_length`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from localimg.errors import BackendNotInstalled, InvalidRequest

if TYPE_CHECKING:
    from localimg.requests import ImageRequest

EDIT_FAMILIES = "FLUX.1 Kontext, Qwen-Image-Edit(-Plus), FLUX.2"


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
    default_size: tuple[int, int] | None = None  # else from the transformer's sample size
    video: bool = False
    img2vid: str | None = None  # Wan 2.2 TI2V: the image-to-video class over the same weights


Z_IMAGE = Family(
    "Z-Image",
    cfg_on=0.0,
    img2img="ZImageImg2ImgPipeline",
    inpaint="ZImageInpaintPipeline",
)
# Reference limits from BFL's docs (diffusers has none): FLUX.2 up to 10 (6 recommended for
# [dev]), klein up to 4.
FLUX2 = Family("FLUX.2", negative=False, references=10, min_reference_side=64)
FLUX2_KLEIN = Family("FLUX.2-klein", negative=False, references=4, min_reference_side=64)
QWEN_IMAGE = Family(
    "Qwen-Image",
    cfg_kwarg="true_cfg_scale",
    blank_negative=True,
    distilled_kwarg="guidance_scale",
    max_sequence_length=1024,
    img2img="QwenImageImg2ImgPipeline",
    inpaint="QwenImageInpaintPipeline",
)
QWEN_IMAGE_EDIT_PLUS = Family(
    "Qwen-Image-Edit-Plus",
    truncates_prompt=False,
    cfg_kwarg="true_cfg_scale",
    blank_negative=True,
    distilled_kwarg="guidance_scale",
    references=3,
    needs_image=True,
    max_sequence_length=1024,
)
QWEN_IMAGE_EDIT = Family(  # the first Qwen-Image-Edit: one input image
    "Qwen-Image-Edit",
    truncates_prompt=False,
    cfg_kwarg="true_cfg_scale",
    blank_negative=True,
    distilled_kwarg="guidance_scale",
    references=1,
    needs_image=True,
    max_sequence_length=1024,
)
KONTEXT = Family(
    "FLUX.1 Kontext",
    cfg_kwarg="true_cfg_scale",
    blank_negative=True,
    distilled_kwarg="guidance_scale",
    references=1,
    max_sequence_length=512,
    area_kwarg=True,
    default_cfg=1.0,
)
# ChromaInpaintPipeline (diffusers 0.42) reads transformer.config.guidance_embeds, which Chroma's
# transformer does not have, and fails: no inpainting for Chroma until diffusers fixes it.
CHROMA = Family("Chroma", max_sequence_length=512, img2img="ChromaImg2ImgPipeline")
WAN = Family("Wan", default_size=(832, 480), video=True, img2vid="WanImageToVideoPipeline")

FAMILIES: dict[str, Family] = {
    "ZImagePipeline": Z_IMAGE,
    "ZImageImg2ImgPipeline": Z_IMAGE,
    "ZImageInpaintPipeline": Z_IMAGE,
    "Flux2Pipeline": FLUX2,
    "Flux2KleinPipeline": FLUX2_KLEIN,
    "QwenImagePipeline": QWEN_IMAGE,
    "QwenImageImg2ImgPipeline": QWEN_IMAGE,
    "QwenImageInpaintPipeline": QWEN_IMAGE,
    "QwenImageEditPlusPipeline": QWEN_IMAGE_EDIT_PLUS,
    "QwenImageEditPipeline": QWEN_IMAGE_EDIT,
    "FluxKontextPipeline": KONTEXT,
    "ChromaPipeline": CHROMA,
    "ChromaImg2ImgPipeline": CHROMA,
    "WanPipeline": WAN,
    "WanImageToVideoPipeline": WAN,
    # the ControlNet pipelines of these families (CONTROLNETS below) read requests the same way
    "ZImageControlNetPipeline": Z_IMAGE,
    "ZImageControlNetInpaintPipeline": Z_IMAGE,
    "QwenImageControlNetPipeline": QWEN_IMAGE,
}


@dataclass(frozen=True)
class ControlFamily:
    """How a family runs ControlNets: its ControlNet model classes, the pipelines per task
    (diffusers' classes, built with from_pipe over the loaded pipeline), how several units stack
    (`multi`: the class that wraps a list; None: one unit) and whether the pipeline takes
    control_guidance_start/end. `matches` are the config keys a ControlNet shares with the
    family's denoiser (a ControlNet of another family or size differs in one of them)."""

    name: str
    models: tuple[str, ...]
    txt2img: str
    img2img: str | None
    inpaint: str | None
    multi: str | None
    window: bool = True
    matches: tuple[str, ...] = ()


_SD_KEYS = ("cross_attention_dim", "addition_embed_type")
_SD = "StableDiffusion"
SD_CONTROL = ControlFamily(
    "SD 1.x/2.x", ("ControlNetModel",), f"{_SD}ControlNetPipeline",
    f"{_SD}ControlNetImg2ImgPipeline", f"{_SD}ControlNetInpaintPipeline",
    "MultiControlNetModel", matches=_SD_KEYS,
)  # fmt: skip
SDXL_CONTROL = ControlFamily(
    "SDXL", ("ControlNetModel",), f"{_SD}XLControlNetPipeline",
    f"{_SD}XLControlNetImg2ImgPipeline", f"{_SD}XLControlNetInpaintPipeline",
    "MultiControlNetModel", matches=_SD_KEYS,
)  # fmt: skip
SDXL_UNION_CONTROL = ControlFamily(  # ControlNet++ (xinsir's union): one net, several modes
    "SDXL", ("ControlNetUnionModel",), f"{_SD}XLControlNetUnionPipeline",
    f"{_SD}XLControlNetUnionImg2ImgPipeline", f"{_SD}XLControlNetUnionInpaintPipeline",
    None, matches=_SD_KEYS,
)  # fmt: skip
_DIT_KEYS = ("joint_attention_dim", "num_attention_heads", "attention_head_dim")
FLUX1_CONTROL = ControlFamily(
    "FLUX.1", ("FluxControlNetModel",), "FluxControlNetPipeline",
    "FluxControlNetImg2ImgPipeline", "FluxControlNetInpaintPipeline",
    "FluxMultiControlNetModel", matches=(*_DIT_KEYS, "pooled_projection_dim", "in_channels"),
)  # fmt: skip
Z_IMAGE_CONTROL = ControlFamily(
    "Z-Image", ("ZImageControlNetModel",), "ZImageControlNetPipeline", None,
    "ZImageControlNetInpaintPipeline", None, window=False, matches=("dim", "n_heads"),
)  # fmt: skip
# Its ControlNet inpaint pipeline takes no image (not used); QwenImageMultiControlNetModel
# (diffusers 0.42) takes a single union ControlNet only: one unit.
QWEN_IMAGE_CONTROL = ControlFamily(
    "Qwen-Image", ("QwenImageControlNetModel",), "QwenImageControlNetPipeline", None, None,
    None, matches=_DIT_KEYS,
)  # fmt: skip

# The loaded pipeline's class → its family's ControlNet rules (SDXL's union ControlNets: the
# union row, chosen by the ControlNet's class).
CONTROLNETS: dict[str, ControlFamily] = {
    **dict.fromkeys((f"{_SD}Pipeline", f"{_SD}Img2ImgPipeline", f"{_SD}InpaintPipeline"),
                    SD_CONTROL),
    **dict.fromkeys((f"{_SD}XLPipeline", f"{_SD}XLImg2ImgPipeline", f"{_SD}XLInpaintPipeline"),
                    SDXL_CONTROL),
    **dict.fromkeys(("FluxPipeline", "FluxImg2ImgPipeline", "FluxInpaintPipeline"),
                    FLUX1_CONTROL),
    **dict.fromkeys(("ZImagePipeline", "ZImageImg2ImgPipeline", "ZImageInpaintPipeline"),
                    Z_IMAGE_CONTROL),
    **dict.fromkeys(("QwenImagePipeline", "QwenImageImg2ImgPipeline", "QwenImageInpaintPipeline"),
                    QWEN_IMAGE_CONTROL),
}  # fmt: skip
CONTROL_FAMILIES = "SD 1.x/2.x, SDXL, FLUX.1, Z-Image and Qwen-Image"


# Modules a family's diffusers 0.42 / transformers 5 code needs beyond localimg's extra: without
# them the load or the first call fails deep inside with a NameError or ImportError.
NEEDS: dict[str, tuple[str, str]] = {
    "WanImageToVideoPipeline": ("ftfy", "its prompt cleaning calls ftfy unguarded"),
}


def check_needs(class_name: str) -> None:
    """Refuse, naming the package, a family whose code needs a module that is not installed."""
    import importlib.util

    need = NEEDS.get(class_name)
    if need is not None and importlib.util.find_spec(need[0]) is None:
        raise BackendNotInstalled(
            f"{class_name} needs the {need[0]} package ({need[1]}): pip install {need[0]}"
        )


# Pipelines whose weights are published in bfloat16: float16 overflows in some of them (black or
# NaN images from FLUX and Wan), so half precision on a GPU means bfloat16 for these.
BFLOAT16_CLASS_PREFIXES = (
    "Flux",
    "StableDiffusion3",
    "ZImage",
    "QwenImage",
    "Chroma",
    "Wan",
    "HunyuanVideo",
    "LTX",
    "HiDream",
    "Lumina2",
    "CogView4",
)


def published_in_bfloat16(class_name: str | None) -> bool:
    return bool(class_name) and str(class_name).startswith(BFLOAT16_CLASS_PREFIXES)


def family_of(pipe: Any) -> Family | None:
    return FAMILIES.get(type(pipe).__name__)


def is_distilled_klein(pipe: Any) -> bool:
    """FLUX.2-klein's step-distilled checkpoints ignore guidance (`is_distilled` in its config)."""
    return type(pipe).__name__ == "Flux2KleinPipeline" and bool(
        getattr(pipe, "config", {}).get("is_distilled", False)
    )


def size_multiple(family: Family, pipe: Any) -> int:
    """What both sides must be a multiple of (the pipelines round anything else down, silently,
    or fail): the VAE factor x the 2x2 patches; Wan: its spatial factor x the patch size."""
    if family.video:
        spatial = int(getattr(pipe, "vae_scale_factor_spatial", 8) or 8)
        transformer = getattr(pipe, "transformer", None) or getattr(pipe, "transformer_2", None)
        patch = getattr(getattr(transformer, "config", None), "patch_size", (1, 2, 2))
        return max(16, spatial * int(patch[1]))
    return int(getattr(pipe, "vae_scale_factor", 8) or 8) * 2


def default_cfg(family: Family, pipe: Any, params: dict[str, Any]) -> float | None:
    if is_distilled_klein(pipe):
        return 1.0
    if family.default_cfg is not None:
        return family.default_cfg
    param = params.get(family.cfg_kwarg)
    default = getattr(param, "default", None)
    return float(default) if isinstance(default, int | float) else None


def choose_mode(family: Family, request: ImageRequest) -> str | None:
    """The task on this family, where it differs from the generic choice (None: the generic one).

    On a reference-edit family an input image is a reference edit; masks and img2img are refused
    (these pipelines do neither). On the others, references and mode edit are refused.
    """
    if family.references:
        if request.mask is not None or request.mode == "inpaint":
            raise InvalidRequest(
                f"{family.name} does reference edits and does not inpaint: send no mask "
                "(the image and the prompt say what to change)",
                param="mask",
            )
        if request.mode in ("img2img", "variation", "depth2img"):
            raise InvalidRequest(
                f"{family.name} does reference edits (mode edit), not {request.mode}",
                param="mode",
            )
        if request.init_image is not None:
            return "edit"
        if family.needs_image:
            raise InvalidRequest(
                f"{family.name} edits images: it needs an input image (--image, or `image` "
                "in the API)",
                param="image",
            )
        return None
    refuse_references(family.name, request)
    return None


def refuse_references(name: str, request: ImageRequest) -> None:
    """A family (or any other pipeline) without reference edits refuses them by name."""
    if request.mode == "edit" or request.reference_images:
        count = len(request.input_images)
        raise InvalidRequest(
            f"{name} takes no reference images (mode edit, {count} input image"
            f"{'s' if count != 1 else ''}); reference edits need {EDIT_FAMILIES}",
            param="image",
        )


def video_from_image(family: Family, pipe: Any, request: ImageRequest) -> bool:
    """An input image on a Wan text-to-video model: image-to-video where the model does both
    (Wan 2.2 TI2V-5B, `expand_timesteps`: the image is the first latent frame); others refuse."""
    if not family.img2vid or request.init_image is None or "Image" in type(pipe).__name__:
        return False
    if not getattr(pipe, "config", {}).get("expand_timesteps", False):
        raise InvalidRequest(
            f"this {family.name} model makes video from text only; image-to-video needs a Wan "
            "I2V model (WanImageToVideoPipeline) or Wan 2.2 TI2V-5B",
            param="image",
        )
    return True


def check_references(family: Family, request: ImageRequest) -> None:
    images = request.input_images
    if len(images) > family.references:
        raise InvalidRequest(
            f"{family.name} takes {family.references} input image"
            f"{'s' if family.references != 1 else ''}; got {len(images)}",
            param="image",
        )
    for index, image in enumerate(images, 1):
        if min(image.size) < family.min_reference_side:
            raise InvalidRequest(
                f"{family.name}: input image {index} is {image.size[0]}x{image.size[1]}; each "
                f"side must be at least {family.min_reference_side} pixels",
                param="image",
            )


def check_frames(pipe: Any, num_frames: int | None) -> None:
    """Wan makes 4k+1 frames (its VAE packs 4 frames per latent after the first); it would round
    other counts silently."""
    temporal = int(getattr(pipe, "vae_scale_factor_temporal", 4) or 4)
    if num_frames is not None and num_frames % temporal != 1:
        low = (num_frames - 1) // temporal * temporal + 1
        raise InvalidRequest(
            f"Wan makes {temporal}k+1 frames; {num_frames} is not one (try {max(1, low)} or "
            f"{low + temporal})",
            param="num_frames",
        )


def family_kwargs(
    family: Family,
    request: ImageRequest,
    pipe: Any,
    params: dict[str, Any],
    generation: dict[str, Any],
) -> dict[str, Any]:
    """Guidance, negative prompt, input images and text length of a request on this family."""
    kwargs: dict[str, Any] = {}
    cfg = float(request.cfg_scale if request.cfg_scale is not None else 1.0)
    if is_distilled_klein(pipe) and cfg > 1:
        raise InvalidRequest(
            f"this {family.name} checkpoint is step-distilled (is_distilled) and runs without "
            f"guidance: cfg_scale must be at most 1, got {cfg:g}",
            param="cfg_scale",
        )
    if family.cfg_kwarg in params:
        kwargs[family.cfg_kwarg] = cfg
    guiding = cfg > family.cfg_on
    negative = request.negative_prompt
    if negative is not None:
        if not family.negative:
            raise InvalidRequest(
                f"{family.name} takes no negative prompt (its pipeline has none); remove it",
                param="negative_prompt",
            )
        if not guiding:
            raise InvalidRequest(
                f"{family.name} uses the negative prompt only with guidance: cfg_scale must be "
                f"above {family.cfg_on:g} (got {cfg:g})",
                param="negative_prompt",
            )
        kwargs["negative_prompt"] = negative
    elif family.blank_negative and guiding:
        kwargs["negative_prompt"] = " "  # true CFG needs a negative prompt (diffusers' docs)
    kwargs.update(_distilled(family, pipe, generation.get("guidance")))
    length = generation.get("max_sequence_length")
    if length is not None:
        if "max_sequence_length" not in params or not family.truncates_prompt:
            raise InvalidRequest(
                f"{type(pipe).__name__} has no max_sequence_length (its prompt is read whole)",
                param="max_sequence_length",
            )
        if family.max_sequence_length and length > family.max_sequence_length:
            raise InvalidRequest(
                f"max_sequence_length {length}: {family.name} reads at most "
                f"{family.max_sequence_length} tokens",
                param="max_sequence_length",
            )
        kwargs["max_sequence_length"] = int(length)
    if family.references and request.init_image is not None:
        check_references(family, request)
        images = request.input_images
        kwargs["image"] = images[0] if family.references == 1 else list(images)
    if family.area_kwarg and request.width and request.height:
        # Kontext scales its output to max_area at the asked aspect: width x height makes exactly
        # the size asked. It also resizes its input image to one of its preferred resolutions:
        # an image already at the output size (as the engine fits it) is used as it is.
        kwargs["max_area"] = request.width * request.height
        image = request.init_image
        kwargs["_auto_resize"] = image is not None and image.size != (
            request.width,
            request.height,
        )
    return kwargs


def _distilled(family: Family, pipe: Any, guidance: Any) -> dict[str, Any]:
    if guidance is None:
        return {}
    if family.distilled_kwarg is None:
        cfg_word = "cfg_scale sets its only guidance"
        raise InvalidRequest(
            f"{family.name} has no separate distilled guidance ({cfg_word}); the guidance "
            "option applies to FLUX.1 Kontext and guidance-distilled Qwen-Image",
            param="guidance",
        )
    transformer = getattr(pipe, "transformer", None)
    if not getattr(getattr(transformer, "config", None), "guidance_embeds", False):
        raise InvalidRequest(
            f"this {family.name} transformer is not guidance-distilled (guidance_embeds is off), "
            "so the guidance option would be ignored; use cfg_scale",
            param="guidance",
        )
    return {family.distilled_kwarg: float(guidance)}
