"""`localimg models list`: the YAML models of the models directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from localimg.cli.app import models_app
from localimg.cli.params import ModelsPath


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
