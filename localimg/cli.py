"""The `localimg` command line: parse options, call the engine, render the result. Thin.

Heavy modules (torch, diffusers, the engine's backends) are imported inside commands, so
`localimg --help` stays fast. Every `LocalimgError` becomes one red line and its exit code.
"""

from __future__ import annotations

import json
import os
import sys
import time
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
    from localimg.console import print_error

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


def _prepare_runtime() -> None:
    """Quiet third-party chatter that is not meant for localimg's users."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    from localimg.console import setup_logging

    setup_logging(State.log_level)


@app.command()
def generate(
    prompt: Annotated[
        str, typer.Argument(help="What to draw. Text after '|' is the negative prompt.")
    ],
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Model name, YAML file, local folder/file or hub id."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Output file; .png, .jpg or .webp. With -n N: out-1.png..."
        ),
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
    from localimg import images
    from localimg.console import GenerationProgress
    from localimg.engine import Engine
    from localimg.requests import ImageRequest, parse_size

    try:
        output = output or Path(f"localimg-{time.strftime('%Y%m%d-%H%M%S')}.png")
        fmt = images.format_from_name(output.suffix or "png", param="--output")
        if quality is not None and not 1 <= quality <= 100:
            raise _bad("--quality must be between 1 and 100")
        if quality is not None and fmt == "png":
            raise _bad("--quality applies to .jpg and .webp outputs, not .png")
        width, height = parse_size(size) if size else (None, None)
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
        )
        engine = Engine(_engine_settings(models_path, device, threads))
        try:
            config = engine.resolve(model)
            with GenerationProgress(config.name, enabled=None if not as_json else False) as bar:
                result = engine.generate(model, request, progress=bar.update)
        finally:
            engine.close()
        paths = images.numbered_paths(output, len(result.images))
        for index, (image, path) in enumerate(zip(result.images, paths, strict=True)):
            data = images.encode(
                image, fmt, parameters=images.a1111_parameters(result, index), quality=quality
            )
            images.write_atomic(path, data)
    except LocalimgError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        from localimg.console import print_error

        print_error("cancelled")
        raise typer.Exit(130) from None
    _report(result, paths, as_json)


def _bad(message: str) -> LocalimgError:
    from localimg.errors import InvalidRequest

    return InvalidRequest(message)


def _report(result: Any, paths: list[Path], as_json: bool) -> None:
    request = result.request
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
                {"path": str(path), "seed": seed}
                for path, seed in zip(paths, result.seeds, strict=True)
            ],
            "timings": {k: round(v, 4) for k, v in result.timings.items()},
        }
        typer.echo(json.dumps(payload, indent=2))
        return
    for path, seed in zip(paths, result.seeds, strict=True):
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
    from rich.table import Table

    console = Console()
    if not rows:
        console.print(f"No models in {path}. Add a YAML file there, or use --model with a hub id.")
        return
    table = Table(title=f"Models in {path}")
    for column in ("name", "backend", "source", "file"):
        table.add_column(column)
    for row in rows:
        source = row["model"] or ""
        if row["error"]:
            source = f"[red]{row['error']}[/]"
        table.add_row(str(row["name"]), row["backend"] or "?", source, Path(str(row["file"])).name)
    console.print(table)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except LocalimgError as exc:  # raised outside a command's own handler
        from localimg.console import print_error

        print_error(exc.message)
        sys.exit(exc.exit_code)
