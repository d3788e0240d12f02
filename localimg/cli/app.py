"""The Typer application, its shared options and the one error handler of every command.

Every command raises `LocalimgError` (or is interrupted with Ctrl-C) and `LocalimgGroup` turns
that into one red line and the error's exit code: no command handles errors itself, and the
mapping holds under `typer.testing.CliRunner` too, since it runs inside the click invocation.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from localimg import __version__
from localimg._util.quiet import quiet_library_warnings
from localimg.errors import LocalimgError

# Set in the (shared) click context meta by commands whose work a rerun resumes (downloads).
RESUMABLE = "localimg.resumable"


class LocalimgGroup(TyperGroup):
    """The root command group: the one place where errors become a line and an exit code."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except LocalimgError as exc:
            fail(exc)
        except KeyboardInterrupt:
            from localimg.cli.console import print_error

            resumable = ctx.meta.get(RESUMABLE, False)
            print_error(
                "cancelled; run the same command again to resume the downloads"
                if resumable
                else "cancelled"
            )
            raise typer.Exit(130) from None


app = typer.Typer(
    cls=LocalimgGroup,
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


class State:
    log_level: str = "WARNING"


def show_version(value: bool) -> None:
    if value:
        typer.echo(f"localimg {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    log_level: Annotated[
        str, typer.Option("--log-level", help="debug, info, warning or error.")
    ] = "warning",
    version: Annotated[
        bool,
        typer.Option("--version", callback=show_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """localimg: local image generation."""
    State.log_level = log_level.upper()


def fail(exc: LocalimgError) -> NoReturn:
    from localimg.cli.console import print_error

    print_error(exc.message)
    raise typer.Exit(exc.exit_code)


def engine_settings(
    models_path: Path | None, device: str | None = None, threads: int | None = None
) -> Any:
    from localimg.backends.base import RuntimeSettings
    from localimg.config import default_models_path
    from localimg.engine import EngineSettings

    return EngineSettings(
        models_path=models_path or default_models_path(),
        runtime=RuntimeSettings(device=device, threads=threads),
    )


def lifecycle_settings(
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


def prepare_runtime(log_format: str = "text") -> None:
    """Quiet third-party chatter that is not meant for localimg's users; set up logging."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    quiet_library_warnings()
    from localimg.cli.console import setup_logging

    setup_logging(State.log_level, log_format)
