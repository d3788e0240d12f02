"""`localimg upscale`: images in, enlarged images out, by a resampling filter or a model of
`upscale_models/` (ESRGAN natively, other architectures through spandrel).

Every input is opened and the upscaler and scale are checked before anything is written; each
file is written atomically, its PNG parameters the input's plus A1111's postprocess fields.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from localimg.cli.app import app, engine_settings, prepare_runtime
from localimg.cli.params import Device, Json, ModelsPath, Threads
from localimg.errors import InvalidRequest

if TYPE_CHECKING:
    from PIL.Image import Image

    from localimg.engine import Engine

DEFAULT_UPSCALER = "lanczos"


@app.command()
def upscale(
    images: Annotated[
        list[str], typer.Argument(help="Images to enlarge: files, http(s) URLs or data URLs.")
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Output file for one image (.png, .jpg, .webp), a folder for several "
            "[default: NAME-x2.png beside each input].",
        ),
    ] = None,
    upscaler: Annotated[
        str,
        typer.Option(
            "--upscaler",
            "-u",
            help="lanczos, bicubic, nearest, or a model's name in upscale_models/.",
        ),
    ] = DEFAULT_UPSCALER,
    scale: Annotated[
        float, typer.Option("--scale", "-s", help="How many times larger, above 0, at most 8.")
    ] = 2.0,
    device: Device = None,
    threads: Threads = None,
    as_json: Json = False,
    models_path: ModelsPath = None,
) -> None:
    """Enlarge images with an upscaler model or a resampling filter."""
    prepare_runtime()
    from localimg.engine import Engine
    from localimg.media.conditioning import open_image_arg

    inputs = [(value, open_image_arg(value, "IMAGE")) for value in images]
    targets = output_paths([value for value, _ in inputs], output, scale)
    engine = Engine(engine_settings(models_path, device, threads))
    try:
        upscaler = check_upscaler(engine, upscaler)
        written = []
        with UpscaleProgress(enabled=False if as_json else None) as bar:
            for (value, image), target in zip(inputs, targets, strict=True):
                bigger = engine.upscale(image, upscaler, scale, bar.task(Path(value).name))
                write_image(bigger, target, postprocess(value, scale, upscaler))
                written.append(target)
    finally:
        engine.close(release_memory=False)  # the process ends next
    if as_json:
        typer.echo(json.dumps([{"file": str(path)} for path in written], indent=2))
    else:
        for path in written:
            typer.echo(str(path))


def check_upscaler(engine: Engine, name: str) -> str:
    """The upscaler's registered name (any case finds it); an unknown one is refused before any
    work, naming the installed ones."""
    from localimg.errors import ModelNotFound

    names = engine.upscaler_names()
    name = engine.side.registry.resolve("upscaler", name.strip())
    if name not in names:
        folder = Path(engine.settings.models_path) / "upscale_models"
        raise ModelNotFound(
            f"no upscaler named {name!r}; installed: {', '.join(names)} (models go in {folder})",
            param="upscaler",
        )
    return name


def _scale_text(scale: float) -> str:
    return f"{scale:g}"


def output_paths(values: list[str], output: Path | None, scale: float) -> list[Path]:
    """Where each image goes: `-o` itself for one image (unless it is a folder), NAME-xS.png in
    `-o` for several, else beside each input (the working folder for a URL)."""
    from localimg.media.encode import format_from_name

    if not 0 < scale <= 8:  # the engine says it too; here so that no path is even made
        raise InvalidRequest(
            f"scale must be a number above 0 and at most 8, not {scale:g}", param="scale"
        )
    stems = [_stem(value) for value in values]
    name = [f"{stem}-x{_scale_text(scale)}.png" for stem in stems]
    if output is None:
        return [_beside(value) / file for value, file in zip(values, name, strict=True)]
    if len(values) == 1 and not output.is_dir():
        format_from_name(output.suffix or "?", "--output")
        return [output]
    if output.exists() and not output.is_dir():
        raise InvalidRequest(
            f"--output {output} is a file; several images need a folder", param="--output"
        )
    if len(set(name)) != len(name):
        raise InvalidRequest("two inputs have the same name; give them apart", param="--output")
    return [output / file for file in name]


def _stem(value: str) -> str:
    if value.startswith(("http://", "https://")):
        return Path(value.split("?", 1)[0].rstrip("/")).stem or "image"
    if value.startswith("data:"):
        return "image"
    return Path(value).stem


def _beside(value: str) -> Path:
    if value.startswith(("http://", "https://", "data:")):
        return Path.cwd()
    return Path(value).expanduser().parent


def postprocess(value: str, scale: float, upscaler: str) -> str:
    """The output's parameters: the input's (if it is a file that has them) and A1111's
    `Postprocess upscale by`, `Postprocess upscaler` fields."""
    from localimg.media.encode import read_parameters

    fields = f"Postprocess upscale by: {_scale_text(scale)}, Postprocess upscaler: {upscaler}"
    before = None
    path = Path(value).expanduser()
    if not value.startswith(("http://", "https://", "data:")) and path.is_file():
        try:
            before = read_parameters(path)
        except OSError:
            before = None
    return f"{before.rstrip()}, {fields}" if before else fields


def write_image(image: Image, path: Path, parameters: str) -> None:
    """Encode by the file's extension (PNG for a folder's files) and write atomically."""
    from localimg._util.files import write_atomic
    from localimg.media.encode import encode, format_from_name

    fmt = format_from_name(path.suffix or ".png", "--output")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, encode(image, fmt, parameters=parameters))


class UpscaleProgress:
    """A rich bar per image over the upscaler's tiles, on stderr when it is a terminal."""

    def __init__(self, enabled: bool | None = None) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        from localimg.cli.console import err_console

        self.enabled = err_console.is_terminal if enabled is None else enabled
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("tiles"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err_console,
            disable=not self.enabled,
        )

    def __enter__(self) -> UpscaleProgress:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(None, None, None)

    def task(self, name: str) -> Callable[[int, int], None]:
        """The (done, total) callback of one image's bar."""
        task = self._progress.add_task(name, total=None)

        def update(done: int, total: int) -> None:
            self._progress.update(task, completed=done, total=total)

        return update
