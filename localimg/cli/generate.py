"""`localimg generate`: a prompt (and input images) in, image or video files out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from localimg.cli.app import app, engine_settings, prepare_runtime
from localimg.cli.params import Device, ModelsPath, Threads
from localimg.errors import LocalimgError
from localimg.media.controls import ControlSettings

if TYPE_CHECKING:
    from localimg.requests import ControlUnit, HiresFix

# The CLI's names of the control settings, for the messages of media.controls.
CLI_CONTROL_NAMES = {
    "control_net": "--control-net",
    "control_strength": "--control-strength",
    "control_start": "--control-start",
    "control_end": "--control-end",
    "control_preprocess": "--control-preprocess",
}


@app.command()
def generate(
    prompt: Annotated[
        str,
        typer.Argument(
            help="What to draw. Text after '|' is the negative prompt. May be empty with --image."
        ),
    ] = "",
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Model name, YAML file, local folder/file or hub id."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Output file: .png, .jpg, .webp, .gif or .mp4 (videos: .mp4, animated .webp or "
            ".gif). With -n N: out-1.png...",
        ),
    ] = None,
    image: Annotated[
        list[str] | None,
        typer.Option(
            "--image",
            "-i",
            help="Input image (file, http(s) URL or data URL): img2img, img2vid... Repeat it for "
            "a reference edit from several images (FLUX.1 Kontext, Qwen-Image-Edit, FLUX.2).",
        ),
    ] = None,
    mask: Annotated[
        str | None,
        typer.Option("--mask", help="Inpainting mask: white (or transparent) = what changes."),
    ] = None,
    strength: Annotated[
        float | None,
        typer.Option("--strength", help="How much the input image changes, in (0, 1]."),
    ] = None,
    mode: Annotated[
        str | None,
        typer.Option(
            "--mode",
            help="txt2img, img2img, inpaint, depth2img, variation, edit, img2vid or txt2vid "
            "[default: from the inputs and the model].",
        ),
    ] = None,
    num_frames: Annotated[
        int | None, typer.Option("--num-frames", help="Video models: frames to generate.")
    ] = None,
    fps: Annotated[
        float | None, typer.Option("--fps", help="Video models: frames per second.")
    ] = None,
    size: Annotated[
        str | None, typer.Option("--size", "-s", help="WIDTHxHEIGHT, e.g. 512x512.")
    ] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Denoising steps.")] = None,
    cfg_scale: Annotated[
        float | None, typer.Option("--cfg-scale", help="Guidance scale (0 turns guidance off).")
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Seed of the first image; image i uses seed+i.")
    ] = None,
    n: Annotated[int, typer.Option("-n", "--n", help="Number of images.")] = 1,
    scheduler: Annotated[
        str | None, typer.Option("--scheduler", help="Scheduler, e.g. euler_a, k_dpmpp_2m.")
    ] = None,
    negative_prompt: Annotated[
        str | None,
        typer.Option("--negative-prompt", help="Negative prompt (wins over the '|' part)."),
    ] = None,
    clip_skip: Annotated[
        int | None, typer.Option("--clip-skip", help="Skip the last N CLIP layers.")
    ] = None,
    quality: Annotated[
        int | None, typer.Option("--quality", help="JPEG/WebP quality, 1-100.")
    ] = None,
    cache: Annotated[
        str | None,
        typer.Option(
            "--cache",
            help="Step cache: diffusers first_block_cache, taylorseer_cache, mag_cache, "
            "faster_cache; stable-diffusion.cpp easycache, ucache, dbcache, taylorseer, cachedit, "
            "spectrum; none turns off the model's own.",
        ),
    ] = None,
    cache_option: Annotated[
        list[str] | None,
        typer.Option(
            "--cache-option",
            help="A knob of the step cache as KEY=VALUE (e.g. threshold=0.1); repeat it.",
        ),
    ] = None,
    control_image: Annotated[
        list[str] | None,
        typer.Option(
            "--control-image",
            help="ControlNet: the control image (file, URL or data URL). Repeat it, each with "
            "its --control-net, for several units.",
        ),
    ] = None,
    control_net: Annotated[
        list[str] | None,
        typer.Option(
            "--control-net",
            help="ControlNet of each --control-image, in order (one for all): a name in the "
            "models folder's controlnet/, a path or a hub repo [default: the model's YAML].",
        ),
    ] = None,
    control_strength: Annotated[
        list[float] | None,
        typer.Option(
            "--control-strength",
            help="How strongly each control image steers, 0-2 (0: the plain image); one for "
            "all or one per image [default: the YAML's control_strength, else 1].",
        ),
    ] = None,
    control_start: Annotated[
        list[float] | None,
        typer.Option("--control-start", help="Fraction of the steps where control begins (0)."),
    ] = None,
    control_end: Annotated[
        list[float] | None,
        typer.Option("--control-end", help="Fraction of the steps where control ends (1)."),
    ] = None,
    control_preprocess: Annotated[
        list[str] | None,
        typer.Option(
            "--control-preprocess",
            help="none (the image already is a control map), canny or depth [default: none].",
        ),
    ] = None,
    control_mode: Annotated[
        int | None,
        typer.Option(
            "--control-mode",
            help="A union ControlNet's control type (SDXL union: 0 openpose, 1 depth, 2 hed, "
            "3 canny/lineart, 4 normal, 5 segmentation, 6 tile).",
        ),
    ] = None,
    hires_scale: Annotated[
        float | None,
        typer.Option(
            "--hires-scale",
            help="Hires fix: the second pass's size as the first's times this (1-8) "
            "[default: the YAML's hires: block, else 2]. Any --hires-* option turns it on.",
        ),
    ] = None,
    hires_size: Annotated[
        str | None,
        typer.Option("--hires-size", help="Hires fix: the second pass's WIDTHxHEIGHT (wins)."),
    ] = None,
    hires_upscaler: Annotated[
        str | None,
        typer.Option(
            "--hires-upscaler",
            help="Hires fix: latent (or A1111's latent modes, e.g. 'latent (nearest)'), "
            "lanczos, bicubic, nearest or a model in upscale_models/ [default: latent].",
        ),
    ] = None,
    hires_steps: Annotated[
        int | None,
        typer.Option("--hires-steps", help="Hires fix: second-pass steps (0: the first's)."),
    ] = None,
    hires_denoise: Annotated[
        float | None,
        typer.Option("--hires-denoise", help="Hires fix: second-pass strength, (0, 1] [0.7]."),
    ] = None,
    no_hires: Annotated[
        bool, typer.Option("--no-hires", help="No hires fix, even where the YAML turns it on.")
    ] = False,
    layers: Annotated[
        int | None,
        typer.Option(
            "--layers",
            help="Qwen-Image-Layered: the RGBA layers to split the input image into, 1-16 "
            "(each written as its own file) [default: the YAML's layers option, else 4].",
        ),
    ] = None,
    prompt_enhance: Annotated[
        bool | None,
        typer.Option(
            "--prompt-enhance/--no-prompt-enhance",
            help="The model's own prompt enhancer (Ideogram 4, ERNIE-Image, LTX-2) "
            "[default: the YAML's prompt_enhance option, else off].",
        ),
    ] = None,
    device: Device = None,
    threads: Threads = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a machine-readable result.")
    ] = False,
    models_path: ModelsPath = None,
) -> None:
    """Generate images from a prompt and write them to files."""
    prepare_runtime()
    from localimg.cli.console import GenerationProgress
    from localimg.engine import Engine
    from localimg.media import conditioning
    from localimg.media import output as results
    from localimg.requests import ImageRequest, parse_mode, parse_size, request_extra

    results.check_output(output, quality)
    width, height = parse_size(size) if size else (None, None)
    images = [conditioning.open_image_arg(value, "--image") for value in image or []]
    init = images[0] if images else None
    mask_image = conditioning.open_image_arg(mask, "--mask") if mask else None
    if mask_image is not None and init is not None and len(images) == 1:
        init, mask_image = conditioning.edit_inputs(init, mask_image, param="--mask")
    elif init is not None:
        init = conditioning.as_init(init)
    references = tuple(conditioning.as_init(extra) for extra in images[1:])
    cache_options = dict(_cache_option(text) for text in cache_option or [])
    controls = _controls(
        control_image or [],
        ControlSettings(
            nets=control_net or [],
            strengths=control_strength or [],
            starts=control_start or [],
            ends=control_end or [],
            preprocess=control_preprocess or [],
            names=CLI_CONTROL_NAMES,
        ),
    )
    request = ImageRequest(
        prompt=prompt,
        negative_prompt=negative_prompt,
        width=width,
        height=height,
        steps=steps,
        cfg_scale=cfg_scale,
        seed=seed,
        n=n,
        scheduler=scheduler,
        clip_skip=clip_skip,
        init_image=init,
        reference_images=references,
        mask=mask_image,
        strength=strength,
        mode=parse_mode(mode),
        num_frames=num_frames,
        fps=fps,
        cache=cache.strip().lower() if cache else None,
        cache_options=cache_options,
        controls=controls,
        extra=request_extra(
            control_mode=control_mode, prompt_enhance=prompt_enhance, layers=layers
        ),
        hires=_hires(
            (hires_scale, hires_size, hires_upscaler, hires_steps, hires_denoise), no_hires
        ),
    )
    engine = Engine(engine_settings(models_path, device, threads))
    try:
        config = engine.resolve(model)
        with GenerationProgress(config.name, enabled=None if not as_json else False) as bar:
            result = engine.generate(model, request, progress=bar.update)
    finally:
        engine.close(release_memory=False)  # the process ends next: no need to trim
    paths = results.write_result(result, output, quality)
    _report(result, paths, as_json)


def _cache_option(text: str) -> tuple[str, Any]:
    """`threshold=0.1` → ("threshold", 0.1), the value typed as a YAML option's is."""
    from localimg.config.options import parse_value

    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise _bad(f"--cache-option {text!r} is not KEY=VALUE (for example threshold=0.1)")
    return key.strip(), parse_value(raw)


def _controls(images: list[str], settings: ControlSettings) -> tuple[ControlUnit, ...]:
    """The ControlNet units of --control-image and its settings (media.controls pairs them)."""
    from localimg.media.conditioning import open_image_arg
    from localimg.media.controls import control_units

    opened = [open_image_arg(value, "--control-image") for value in images]
    return control_units(opened, settings, image_param="--control-image")


def _hires(
    options: tuple[float | None, str | None, str | None, int | None, float | None], off: bool
) -> HiresFix | None:
    """The hires fix of the --hires-* options (None: none given, the YAML decides)."""
    from localimg.requests import HiresFix, parse_size

    scale, size, upscaler, steps, denoise = options
    if off:
        if any(value is not None for value in options):
            raise _bad("--no-hires cannot be combined with --hires-* options")
        return HiresFix(enabled=False)
    if all(value is None for value in options):
        return None
    width, height = parse_size(size) if size else (None, None)
    return HiresFix(
        scale=scale, width=width, height=height, upscaler=upscaler, steps=steps, denoise=denoise
    )


def _bad(message: str) -> LocalimgError:
    from localimg.errors import InvalidRequest

    return InvalidRequest(message)


def _report(result: Any, paths: list[Path], as_json: bool) -> None:
    request = result.request
    for name in result.ignored:  # e.g. prompt weights on a model that cannot weight them
        typer.echo(f"warning: ignored {name} (not supported by this model)", err=True)
    # A video file (or its frames) comes from one seed; an mp4 of still images from the first.
    seeds = result.seeds if len(result.seeds) == len(paths) else [result.seeds[0]] * len(paths)
    if as_json:
        payload = {
            "model": result.model,
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt,
            "width": request.width,
            "height": request.height,
            "steps": request.steps,
            "cfg_scale": request.cfg_scale,
            "scheduler": result.scheduler,
            "images": [
                {"path": str(path), "seed": seed} for path, seed in zip(paths, seeds, strict=True)
            ],
            "timings": {k: round(v, 4) for k, v in result.timings.items()},
        }
        if result.fps is not None:
            payload["video"] = {"frames": len(result.images), "fps": result.fps}
        if request.strength is not None:
            payload["strength"] = request.strength
        if request.cache is not None:
            payload["cache"] = {"method": request.cache, **request.cache_options}
        if request.hires is not None:
            payload["hires"] = _hires_json(request.hires)
        if request.controls:
            payload["controls"] = [
                {"net": u.net, "strength": u.strength, "start": u.start, "end": u.end}
                for u in request.controls
            ]
        typer.echo(json.dumps(payload, indent=2))
        return
    hires = request.hires
    size = f"{request.width}x{request.height}"
    if hires is not None:
        size += f" → {hires.width}x{hires.height} ({hires.upscaler}, {hires.steps} steps)"
    for path, seed in zip(paths, seeds, strict=True):
        typer.echo(f"{path}  (seed {seed}, {size}, {request.steps} steps)")


def _hires_json(hires: HiresFix) -> dict[str, Any]:
    """The hires fix a result used, for --json (the first pass's size is width x height)."""
    fields = ("scale", "width", "height", "upscaler", "steps", "denoise", "prompt")
    found = {name: getattr(hires, name) for name in fields}
    found["negative_prompt"] = hires.negative_prompt
    return {key: value for key, value in found.items() if value is not None}
