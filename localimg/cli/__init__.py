"""The `localimg` command line: parse options, call the engine, render the result. Thin.

Heavy modules (torch, diffusers, the engine's backends) are imported inside commands, so
`localimg --help` stays fast. Every `LocalimgError` becomes one red line and its exit code.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from localimg import __version__
from localimg.errors import LocalimgError

app = typer.Typer(
    name="localimg",
    help="Local image generation: a CLI and an OpenAI-compatible server.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
models_app = typer.Typer(
    help="List and inspect the models in the models directory.", no_args_is_help=True
)
app.add_typer(models_app, name="models")

ModelsPath = Annotated[
    Path | None,
    typer.Option(
        "--models-path",
        envvar="LOCALIMG_MODELS_PATH",
        help="Folder of model YAML files and weights [default: the per-user data folder].",
        show_default=False,
    ),
]


class State:
    log_level: str = "WARNING"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"localimg {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    log_level: Annotated[
        str, typer.Option("--log-level", help="debug, info, warning or error.")
    ] = "warning",
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """localimg: local image generation."""
    State.log_level = log_level.upper()


def _fail(exc: LocalimgError) -> NoReturn:
    from localimg.cli.console import print_error

    print_error(exc.message)
    raise typer.Exit(exc.exit_code)


def _engine_settings(
    models_path: Path | None, device: str | None = None, threads: int | None = None
) -> Any:
    from localimg.backends.base import RuntimeSettings
    from localimg.config import default_models_path
    from localimg.engine import EngineSettings

    return EngineSettings(
        models_path=models_path or default_models_path(),
        runtime=RuntimeSettings(device=device, threads=threads),
    )


def _lifecycle_settings(
    keep_alive: str, max_loaded_models: int, max_memory: str | None, max_batch: int
) -> dict[str, Any]:
    """`serve`'s model lifecycle options as EngineSettings fields (bad values: a clear error)."""
    from localimg._util.units import parse_duration
    from localimg.engine.lifecycle import Budget, parse_budget

    try:
        keep = parse_duration(keep_alive)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--keep-alive") from None
    try:
        budget = parse_budget(max_memory) if max_memory else Budget()
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--max-memory") from None
    return {
        "keep_alive": keep,
        "max_loaded_models": max_loaded_models or None,
        "memory_budget": budget,
        "max_batch": max_batch,
    }


def _prepare_runtime() -> None:
    """Quiet third-party chatter that is not meant for localimg's users."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    from localimg.cli.console import setup_logging

    setup_logging(State.log_level)


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
        str | None,
        typer.Option(
            "--image", "-i", help="Input image (file, http(s) URL or data URL): img2img, img2vid..."
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
            help="txt2img, img2img, inpaint, depth2img, variation, img2vid or txt2vid "
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
    device: Annotated[
        str | None, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")
    ] = None,
    threads: Annotated[
        int | None, typer.Option("--threads", help="CPU threads [default: physical cores].")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a machine-readable result.")
    ] = False,
    models_path: ModelsPath = None,
) -> None:
    """Generate images from a prompt and write them to files."""
    _prepare_runtime()
    from localimg.cli.console import GenerationProgress
    from localimg.engine import Engine
    from localimg.media import conditioning
    from localimg.media import output as results
    from localimg.requests import ImageRequest, parse_mode, parse_size

    try:
        results.check_output(output, quality)
        width, height = parse_size(size) if size else (None, None)
        init = conditioning.open_image_arg(image, "--image") if image else None
        mask_image = conditioning.open_image_arg(mask, "--mask") if mask else None
        if mask_image is not None and init is not None:
            init, mask_image = conditioning.edit_inputs(init, mask_image, param="--mask")
        elif init is not None:
            init = conditioning.as_init(init)
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
            mask=mask_image,
            strength=strength,
            mode=parse_mode(mode),
            num_frames=num_frames,
            fps=fps,
        )
        engine = Engine(_engine_settings(models_path, device, threads))
        try:
            config = engine.resolve(model)
            with GenerationProgress(config.name, enabled=None if not as_json else False) as bar:
                result = engine.generate(model, request, progress=bar.update)
        finally:
            engine.close(release_memory=False)  # the process ends next: no need to trim
        paths = results.write_result(result, output, quality)
    except LocalimgError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        from localimg.cli.console import print_error

        print_error("cancelled")
        raise typer.Exit(130) from None
    _report(result, paths, as_json)


def _bad(message: str) -> LocalimgError:
    from localimg.errors import InvalidRequest

    return InvalidRequest(message)


def _report(result: Any, paths: list[Path], as_json: bool) -> None:
    request = result.request
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
        typer.echo(json.dumps(payload, indent=2))
        return
    for path, seed in zip(paths, seeds, strict=True):
        typer.echo(
            f"{path}  (seed {seed}, {request.width}x{request.height}, {request.steps} steps)"
        )


@models_app.command("list")
def models_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    models_path: ModelsPath = None,
) -> None:
    """The YAML models found in the models directory, with backend and source."""
    from localimg.config import default_models_path, scan_models

    path = models_path or default_models_path()
    entries = scan_models(path)
    rows = [
        {
            "name": e.name,
            "backend": e.config.backend if e.config else None,
            "model": e.config.model if e.config else None,
            "file": str(e.path),
            "error": e.error.message if e.error else None,
        }
        for e in entries
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    if not rows:
        console.print(f"No models in {path}. Add a YAML file there, or use --model with a hub id.")
        return
    table = Table(title=f"Models in {path}")
    for column in ("name", "backend", "source", "file"):
        table.add_column(column)
    for row in rows:
        source = escape(str(row["model"] or ""))
        if row["error"]:
            source = f"[red]{escape(str(row['error']))}[/]"
        table.add_row(
            escape(str(row["name"])),
            escape(str(row["backend"] or "?")),
            source,
            escape(Path(str(row["file"])).name),
        )
    console.print(table)


@app.command()
def serve(
    host: Annotated[
        str, typer.Option("--host", help="Address to bind (0.0.0.0 for every interface).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", help="TCP port.")] = 8080,
    models_path: ModelsPath = None,
    api_key: Annotated[
        list[str] | None,
        typer.Option(
            "--api-key",
            envvar="LOCALIMG_API_KEY",
            help="Require 'Authorization: Bearer KEY' on /v1 routes (repeatable).",
        ),
    ] = None,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option("--cors-origin", help="Allow browser calls from this origin (repeatable)."),
    ] = None,
    max_queue: Annotated[
        int, typer.Option("--max-queue", min=1, help="Requests that may wait per model.")
    ] = 16,
    preload: Annotated[
        list[str] | None,
        typer.Option("--preload", help="Load this model at startup (repeatable)."),
    ] = None,
    output_dir: Annotated[
        Path | None,
        typer.Option(
            "--output-dir", help="Where url-format images are kept [default: a temporary folder]."
        ),
    ] = None,
    base_url: Annotated[
        str | None,
        typer.Option("--base-url", help="Public base URL for image links [default: Host header]."),
    ] = None,
    url_ttl: Annotated[
        float, typer.Option("--url-ttl", min=1, help="Seconds a url-format image is kept.")
    ] = 3600.0,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1, help="Per-request limit in seconds (queue too).")
    ] = 600.0,
    max_body_mb: Annotated[
        float, typer.Option("--max-body-mb", min=0.001, help="Largest request body, in MiB.")
    ] = 64.0,
    max_image_pixels: Annotated[
        int, typer.Option("--max-image-pixels", min=1, help="Largest decoded input image.")
    ] = 4096 * 4096,
    allow_private_urls: Annotated[
        bool,
        typer.Option(
            "--allow-private-urls", help="Let requests fetch loopback/private/link-local URLs."
        ),
    ] = False,
    grace: Annotated[
        float, typer.Option("--shutdown-grace", min=0, help="Seconds running jobs get to finish.")
    ] = 30.0,
    in_process: Annotated[
        bool,
        typer.Option("--in-process", help="Run models in this process (no crash isolation)."),
    ] = False,
    keep_alive: Annotated[
        str,
        typer.Option(
            "--keep-alive",
            help="Unload a model idle this long (300, 90s, 5m, 1h; 0: after each request; "
            "-1: never). A model's YAML `keep_alive:` wins.",
        ),
    ] = "5m",
    max_loaded_models: Annotated[
        int,
        typer.Option(
            "--max-loaded-models",
            min=0,
            help="Most models loaded at once; the least recently used idle one is unloaded "
            "to make room (0: no limit).",
        ),
    ] = 0,
    max_memory: Annotated[
        str | None,
        typer.Option(
            "--max-memory",
            help="Memory budget checked before loading: 12G (RAM) or ram=12G,vram=8G. Idle "
            "models are unloaded to make room, else the request gets 507. [default: the "
            "machine's free RAM]",
        ),
    ] = None,
    max_batch: Annotated[
        int,
        typer.Option(
            "--max-batch",
            min=1,
            max=64,
            help="Run up to N queued same-size text-to-image requests as one batch (1: off).",
        ),
    ] = 1,
    device: Annotated[
        str | None, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")
    ] = None,
    threads: Annotated[
        int | None, typer.Option("--threads", help="CPU threads [default: physical cores].")
    ] = None,
    log_level: Annotated[
        str | None,
        typer.Option("--log-level", help="debug, info, warning or error [default: info]."),
    ] = None,
) -> None:
    """Run the OpenAI-compatible image server (POST /v1/images/generations ...)."""
    State.log_level = (log_level or "info").upper()
    _prepare_runtime()
    from dataclasses import replace

    from localimg.config import scan_models
    from localimg.engine import Engine, WorkerOptions, worker_slot_factory
    from localimg.media.decode import ImageLimits
    from localimg.media.fetch import FetchPolicy
    from localimg.server.app import ServerSettings, create_app
    from localimg.server.run import build_server, startup_line

    engine_settings = replace(
        _engine_settings(models_path, device, threads),
        max_queue=max_queue,
        **_lifecycle_settings(keep_alive, max_loaded_models, max_memory, max_batch),
    )
    keys = tuple(k for k in (api_key or []) if k)
    settings = ServerSettings(
        api_keys=keys,
        cors_origins=tuple(cors_origin or ()),
        max_body_bytes=int(max_body_mb * 1024 * 1024),
        image_limits=ImageLimits(max_pixels=max_image_pixels),
        fetch_policy=FetchPolicy(allow_private=allow_private_urls),
        output_dir=output_dir,
        base_url=base_url,
        url_ttl=url_ttl,
        request_timeout=timeout,
        preload=tuple(preload or ()),
    )
    factory = None if in_process else worker_slot_factory(WorkerOptions(log_level=State.log_level))
    engine = Engine(engine_settings, slot_factory=factory)
    app_ = create_app(settings, engine)
    names = [e.name for e in scan_models(engine_settings.models_path) if e.config is not None]
    typer.echo(startup_line(host, port, engine_settings.models_path, names, len(keys)), err=True)
    build_server(app_, host, port, grace=grace).run()


# `run`, `models install|show|remove` and `gallery list|search` live in their own module, which
# registers them on `app` and `models_app` when imported (it imports this module's names).
from localimg.cli import gallery as cli_gallery  # noqa: E402, F401


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except LocalimgError as exc:  # raised outside a command's own handler
        from localimg.cli.console import print_error

        print_error(exc.message)
        sys.exit(exc.exit_code)
