"""Options several commands share, as Annotated aliases: one definition, one help text."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ModelsPath = Annotated[
    Path | None,
    typer.Option(
        "--models-path",
        envvar="LOCALIMG_MODELS_PATH",
        help="Folder of model YAML files and weights [default: the per-user data folder].",
        show_default=False,
    ),
]

Galleries = Annotated[
    list[str] | None,
    typer.Option(
        "--gallery",
        help="Another index: a path, URL, github:owner/repo/path@ref, NAME=URL, or 'localai' "
        "(repeatable; also LOCALIMG_GALLERIES).",
    ),
]

Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]
Device = Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")]
Threads = Annotated[
    int | None, typer.Option("--threads", help="CPU threads [default: physical cores].")
]
