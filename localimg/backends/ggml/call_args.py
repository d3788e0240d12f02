"""A merged request → the keyword arguments of generate_image or generate_video, per family.

Everything a loaded family cannot do is refused here with a message naming what it can do, so
nothing reaches stable-diffusion.cpp that it would silently ignore or change: a negative prompt
at cfg_scale 1 (no unconditioned pass), a distilled `guidance` on a model without that input,
`flow_shift` on a UNet or on FLUX.2 (which sets its own shift from the image size), reference
images beyond a family's limit, an input image on a text-to-video Wan, a frame count Wan rounds.
"""

from __future__ import annotations

from typing import Any

from localimg.backends.ggml import schedulers
from localimg.backends.ggml.families import (
    Family,
    check_frames,
    may_mark_reference_edit,
    reference_edit_families,
)
from localimg.backends.ggml.options import GgmlOptions
from localimg.errors import ConfigError, InvalidRequest
from localimg.requests import ImageRequest

IMAGE_MODES = ("txt2img", "img2img", "inpaint", "edit")
DEFAULT_FRAMES = 33  # about two seconds at Wan's 16 fps (its training length, 81, is five)


def resolve_mode(request: ImageRequest, family: Family) -> str:
    """The mode this request means on this family (None chooses from the inputs)."""
    mode = request.mode
    has_image = request.init_image is not None
    if family.video:
        if mode is None:
            mode = "img2vid" if has_image else "txt2vid"
        if mode not in ("txt2vid", "img2vid"):
            does = "txt2vid and img2vid" if family.image_input_video else "txt2vid"
            raise InvalidRequest(
                f"{family.label} makes videos; it does {does}, not {mode}", param="mode"
            )
        if mode == "img2vid" and not family.image_input_video:
            raise InvalidRequest(
                f"{family.label} is a text-to-video model and takes no input image "
                "(stable-diffusion.cpp would ignore it); image-to-video needs Wan2.2-TI2V-5B, "
                "a Wan I2V model or Wan2.1-FLF2V",
                param="image",
            )
        return mode
    if mode is None:
        if request.mask is not None:
            mode = "inpaint"
        elif has_image:
            mode = "edit" if family.references else "img2img"
        else:
            mode = "txt2img"
    if mode not in IMAGE_MODES:
        raise InvalidRequest(
            f"the stablediffusion-ggml backend does not do {mode} with {family.label}; it does "
            + ", ".join(IMAGE_MODES[:3] + (("edit",) if family.references else ())),
            param="mode",
        )
    for field in ("num_frames", "fps"):
        if getattr(request, field) is not None:
            raise InvalidRequest(
                f"{field} is for video models; {family.label} makes images", param=field
            )
    return mode


def check(request: ImageRequest, family: Family, options: GgmlOptions, mode: str) -> None:
    """Refuse what this family would ignore or change (after resolve_mode)."""
    if mode == "edit":
        _check_edit(request, family)
    elif family.video:
        _check_video(request, family)
    if (
        family.name.startswith(("Qwen Image", "Anima"))
        and options.taesd_path
        and options.vae != "full"
        and request.init_image is not None
    ):
        # 0.4.7 encodes an image with the tiny video autoencoder at the wrong rank and aborts
        # (GGML_ASSERT in ggml_im2col): the whole process would die.
        raise InvalidRequest(
            f"{family.label} with taesd_path cannot take an input image: stable-diffusion.cpp "
            "0.4.7 aborts encoding it with the tiny autoencoder; use vae_path for edits",
            param="image",
        )
    if mode == "inpaint" and family.references:
        raise InvalidRequest(
            f"{family.label} does reference edits and does not inpaint; send the image without a "
            "mask (a reference edit) or use an inpainting model",
            param="mask",
        )
    if request.negative_prompt and request.cfg_scale == 1:
        raise InvalidRequest(
            "negative_prompt needs cfg_scale other than 1: at cfg_scale 1 stable-diffusion.cpp "
            f"runs no unconditioned pass, so {family.label} would ignore it",
            param="negative_prompt",
        )
    guidance = request.extra.get("guidance", options.guidance)
    if guidance is not None and not family.guidance:
        raise InvalidRequest(
            f"guidance is the distilled guidance input of FLUX.1-dev/Kontext and FLUX.2-dev; "
            f"{family.label} has none (use cfg_scale)",
            param="guidance",
        )
    if family.video:
        check_frames(request.num_frames or DEFAULT_FRAMES, family)


def _check_edit(request: ImageRequest, family: Family) -> None:
    """A reference edit: the family takes references, as many as given, and no strength."""
    count = len(request.input_images)
    if not family.references:
        raise InvalidRequest(
            f"{family.label} takes no reference images; reference edits are for FLUX.2 and "
            f"for {reference_edit_families()} marked with options reference_edit:true",
            param="image",
        )
    if count > family.references:
        plural = "s" if family.references > 1 else ""
        raise InvalidRequest(
            f"{family.label} takes {family.references} input image{plural}; got {count}",
            param="image",
        )
    if request.strength is not None:
        raise InvalidRequest(
            "strength is for img2img; a reference edit does not noise the input image "
            "(remove strength from the request or the YAML, or ask for mode img2img)",
            param="strength",
        )


def _check_video(request: ImageRequest, family: Family) -> None:
    """A video: the first (and last) frame at most, one video, no strength or mask."""
    count = len(request.input_images)
    limit = 2 if family.end_image else (1 if family.image_input_video else 0)
    if count > limit:
        raise InvalidRequest(
            f"{family.label} takes {limit} input image{'s' if limit != 1 else ''} "
            f"(first{' and last' if limit == 2 else ''} frame); got {count}",
            param="image",
        )
    if request.n > 1:
        raise InvalidRequest(f"{family.label} makes one video per request; n must be 1", param="n")
    if request.strength is not None:
        raise InvalidRequest(f"strength does not apply to {family.label} videos", param="strength")
    if request.mask is not None:
        raise InvalidRequest(f"{family.label} takes no mask", param="mask")


def check_options(family: Family, options: GgmlOptions, where: str) -> None:
    """Refuse, once the family is known at load, YAML options that would do nothing for it."""
    problem = None
    flux2 = family.name.startswith("Flux.2")
    if options.flow_shift is not None and (family.unet or flux2):
        why = (
            "FLUX.2 sets its shift from the image size"
            if flux2
            else f"{family.label} is not a flow-matching model"
        )
        problem = f"flow_shift has no effect here: {why}"
    elif options.reference_edit and not (family.references or may_mark_reference_edit(family)):
        problem = (
            f"reference_edit:true names a reference-edit model, but this file loads as "
            f"{family.label}; it applies to {reference_edit_families()}"
        )
    elif options.increase_ref_index and (family.references < 2 or flux2):
        problem = "increase_ref_index orders the reference images of Qwen-Image-Edit; " + (
            "FLUX.2 always gives each reference its own index"
            if flux2
            else f"{family.label} takes {family.references or 'no'} reference image(s)"
        )
    elif options.qwen_image_zero_cond_t and not family.name.startswith("Qwen Image"):
        problem = f"qwen_image_zero_cond_t applies to Qwen-Image-Edit-2511; this is {family.label}"
    elif options.high_noise_diffusion_model_path and not family.video:
        problem = (
            "high_noise_diffusion_model_path is Wan 2.2 A14B's high-noise expert; "
            f"this is {family.label}"
        )
    elif options.clip_vision_path and not family.video:
        problem = f"clip_vision_path is the image encoder of Wan 2.1 I2V; this is {family.label}"
    if problem:
        raise ConfigError(f"{where}: options: {problem}")


def common(
    request: ImageRequest,
    options: GgmlOptions,
    prompt: str,
    method: str | None,
    schedule: str | None,
) -> dict[str, Any]:
    """The arguments generate_image and generate_video share."""
    call: dict[str, Any] = {
        "prompt": prompt,
        "negative_prompt": request.negative_prompt or "",
        "clip_skip": request.clip_skip or -1,
        "width": request.width,
        "height": request.height,
        "cfg_scale": request.cfg_scale,
        "sample_method": method or "default",
        "scheduler": schedule or "default",
        "sample_steps": request.steps,
        "vae_tiling": options.vae_tiling,
    }
    guidance = request.extra.get("guidance", options.guidance)
    if guidance is not None:
        call["guidance"] = float(guidance)
    # The wrapper's default eta is 0.0, which turns euler_a and dpm++2s_a into non-ancestral
    # samplers; infinity is the C library's own "per-sampler default" (1 for ancestral ones).
    eta = request.extra.get("eta", options.eta)
    call["eta"] = float(eta) if eta is not None else float("inf")
    if options.flow_shift is not None:
        call["flow_shift"] = options.flow_shift
    return call


def image_call(
    request: ImageRequest, options: GgmlOptions, mode: str, base: dict[str, Any]
) -> dict[str, Any]:
    """generate_image's arguments for txt2img, img2img, inpaint or a reference edit."""
    call = {**base, "batch_count": 1}
    if mode == "edit":
        call["ref_images"] = [image.convert("RGB") for image in request.input_images]
        call["increase_ref_index"] = options.increase_ref_index
        return call
    if request.init_image is not None:
        call["init_image"] = request.init_image.convert("RGB")
        call["strength"] = request.strength if request.strength is not None else 0.75
    if request.mask is not None:
        call["mask_image"] = request.mask.convert("L")
    return call


def video_call(
    request: ImageRequest,
    options: GgmlOptions,
    base: dict[str, Any],
    high_noise: tuple[str | None, str | None],
) -> dict[str, Any]:
    """generate_video's arguments: frames, the first (and last) frame, the high-noise expert."""
    call = {**base, "video_frames": request.num_frames or DEFAULT_FRAMES}
    images = request.input_images
    if images:
        call["init_image"] = images[0].convert("RGB")
    if len(images) > 1:
        call["end_image"] = images[1].convert("RGB")
    if options.high_noise_diffusion_model_path:
        method, schedule = high_noise
        call["high_noise_cfg_scale"] = (
            options.high_noise_cfg_scale
            if options.high_noise_cfg_scale is not None
            else request.cfg_scale
        )
        call["high_noise_sample_method"] = method or base["sample_method"]
        call["high_noise_scheduler"] = schedule or base["scheduler"]
        call["high_noise_sample_steps"] = options.high_noise_steps or -1
        call["high_noise_eta"] = base["eta"]
        if options.moe_boundary is not None:
            call["moe_boundary"] = options.moe_boundary
    return call


def steps_run(request: ImageRequest, mode: str, default_steps: int) -> int:
    """Denoising steps stable-diffusion.cpp runs: fewer for img2img with strength < 1."""
    steps = request.steps or default_steps
    strength = request.strength if request.strength is not None else 0.75
    if mode == "edit" or request.init_image is None or strength >= 1:
        return steps
    t_enc = int(steps * strength)
    if t_enc == steps:
        t_enc -= 1
    return t_enc + 1


def sampling(request: ImageRequest, options: GgmlOptions) -> tuple[str | None, str | None]:
    """(sample method, schedule) of a call: request > YAML options > the library's defaults
    (None)."""
    method: str | None = None
    schedule = options.scheduler
    if options.sampler:
        picked = schedulers.resolve(options.sampler, param="sampler")
        method, schedule = picked.method, schedule or picked.schedule
    # The engine copies the YAML's `scheduler` option into request.scheduler: that one is the
    # schedule already applied; anything else the request names is resolved here.
    if request.scheduler is not None and request.scheduler != options.scheduler:
        picked = schedulers.resolve(request.scheduler)
        method = picked.method or method
        schedule = picked.schedule or schedule
    extra_sampler = request.extra.get("sampler")
    if extra_sampler is not None:
        picked = schedulers.resolve(str(extra_sampler), param="sampler")
        method = picked.method or method
        schedule = picked.schedule or schedule
    return method, schedule


def high_noise_sampling(options: GgmlOptions) -> tuple[str | None, str | None]:
    """The Wan 2.2 high-noise expert's (sample method, schedule) from the YAML, if set."""
    method = schedule = None
    if options.high_noise_sampler:
        picked = schedulers.resolve(options.high_noise_sampler, param="high_noise_sampler")
        method, schedule = picked.method, picked.schedule
    return method, options.high_noise_scheduler or schedule
