"""The rules a family row implies for a request: mode, size, guidance, negative prompt,
references, frames, text length and the model's own prompt enhancer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from localimg.backends.diffusers.families.family import EDIT_FAMILIES, Family
from localimg.backends.diffusers.families.table import FAMILIES
from localimg.errors import BackendNotInstalled, InvalidRequest

if TYPE_CHECKING:
    from localimg.requests import ImageRequest


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
    "Krea2",
    "Ideogram4",
    "ErnieImage",
    "Anima",
)


def published_in_bfloat16(class_name: str | None) -> bool:
    return bool(class_name) and str(class_name).startswith(BFLOAT16_CLASS_PREFIXES)


def family_of(pipe: Any) -> Family | None:
    return FAMILIES.get(type(pipe).__name__)


# Pipelines whose config marks a step-distilled checkpoint (`is_distilled`), which runs without
# guidance: FLUX.2-klein 4B/9B (the pipeline ignores it) and Krea 2's turbo (it would double the
# cost and leave the distilled schedule).
DISTILLED_FLAG_CLASSES = frozenset({"Flux2KleinPipeline", "Krea2Pipeline"})


def is_step_distilled(pipe: Any) -> bool:
    """A step-distilled checkpoint: guidance off (`is_distilled` in the pipeline's config)."""
    return type(pipe).__name__ in DISTILLED_FLAG_CLASSES and bool(
        getattr(pipe, "config", {}).get("is_distilled", False)
    )


def size_multiple(family: Family, pipe: Any) -> int:
    """What both sides must be a multiple of (the pipelines round anything else down, silently,
    or fail): the VAE factor x the 2x2 patches (where the factor leaves them out); video: the
    VAE's spatial factor (Wan's vae_scale_factor_spatial, LTX-2's vae_spatial_compression_ratio)
    x the transformer's patch side (Wan (1, 2, 2), LTX-2 1)."""
    if family.video:
        spatial = int(
            getattr(pipe, "vae_scale_factor_spatial", None)
            or getattr(pipe, "vae_spatial_compression_ratio", None)
            or 8
        )
        transformer = getattr(pipe, "transformer", None) or getattr(pipe, "transformer_2", None)
        patch = getattr(getattr(transformer, "config", None), "patch_size", (1, 2, 2))
        side = patch if isinstance(patch, int) else patch[1]
        return max(16, spatial * int(side))
    return int(getattr(pipe, "vae_scale_factor", 8) or 8) * family.latent_patch


def default_cfg(family: Family, pipe: Any, params: dict[str, Any]) -> float | None:
    if is_step_distilled(pipe):
        return family.cfg_on  # guidance off: 1 for klein, 0 for Krea 2
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
    """An input image on a text-to-video model: image-to-video where the model does both (LTX-2;
    Wan 2.2 TI2V-5B, `expand_timesteps`: the image is the first latent frame); other Wan refuse."""
    if not family.img2vid or request.init_image is None or "Image" in type(pipe).__name__:
        return False
    config = getattr(pipe, "config", {})
    if "expand_timesteps" in config and not config["expand_timesteps"]:
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
    """A video VAE packs `temporal` frames per latent after the first, so the model makes
    temporal*k+1 frames (Wan 4k+1, LTX-2 8k+1, read from the VAE); the pipelines would round other
    counts silently."""
    temporal = int(
        getattr(pipe, "vae_scale_factor_temporal", None)
        or getattr(pipe, "vae_temporal_compression_ratio", None)
        or 4
    )
    if num_frames is not None and num_frames % temporal != 1 % temporal:
        low = (num_frames - 1) // temporal * temporal + 1
        family = family_of(pipe)
        raise InvalidRequest(
            f"{family.name if family else 'this model'} makes {temporal}k+1 frames; "
            f"{num_frames} is not one (try {max(1, low)} or "
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
    if is_step_distilled(pipe) and cfg > family.cfg_on:
        raise InvalidRequest(
            f"this {family.name} checkpoint is step-distilled (is_distilled) and runs without "
            f"guidance: cfg_scale must be at most {family.cfg_on:g}, got {cfg:g}",
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
    kwargs.update(_enhancer(family, pipe, params, generation.get("prompt_enhance")))
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
    if family.adjust is not None:
        family.adjust(request, pipe, params, generation, kwargs)
    return kwargs


def _enhancer(family: Family, pipe: Any, params: dict[str, Any], wanted: Any) -> dict[str, Any]:
    """The model's own prompt enhancer: off unless `prompt_enhance` asks for it (some pipelines
    default it on, and it rewrites the prompt with a language model: slow and not what was
    asked), refused where the family or the loaded pipeline has none."""
    kwarg, component = family.enhancer_kwarg, family.enhancer_component
    if kwarg is None or kwarg not in params:
        if wanted is not None:
            raise InvalidRequest(
                f"{family.name} has no prompt enhancer of its own; remove prompt_enhance",
                param="prompt_enhance",
            )
        return {}
    if wanted and component and getattr(pipe, component, None) is None:
        raise InvalidRequest(
            f"this {family.name} model was loaded without its prompt enhancer ({component}); "
            "prompt_enhance needs a model folder or repo that has it",
            param="prompt_enhance",
        )
    return {kwarg: bool(wanted)}


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
