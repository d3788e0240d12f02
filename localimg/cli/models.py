"""`localimg models list` and `models show`: the models of the models directory, and anything
`generate --model` takes (an installed name, a gallery name, a YAML, a folder, a file, a hub
id), each with the precision it would run with on this machine. Both work offline and load
nothing: the precision comes from the backend's `precision` hook (backends/__init__.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from localimg.cli.app import models_app
from localimg.cli.params import Device, Galleries, Json, ModelsPath

if TYPE_CHECKING:
    from localimg.config import ModelConfig


def _settings(device: str | None) -> Any:
    from localimg.backends.base import RuntimeSettings

    return RuntimeSettings(device=device)


def _precision_text(precision: dict[str, Any]) -> str:
    if precision.get("dtype") is None:
        return "?"
    text = f"{precision['dtype']} on {precision['device']}"
    return f"{text} ({precision['variant']} files)" if precision.get("variant") else text


@models_app.command("list")
def models_list(
    as_json: Json = False,
    device: Device = None,
    models_path: ModelsPath = None,
) -> None:
    """The YAML models found in the models directory (backend, source and precision here), the
    ControlNets of its controlnet/ folder (kind "controlnet" in --json) and the upscalers of
    its upscale_models/ folder (kind "upscaler")."""
    from localimg.backends import model_precision
    from localimg.config import controlnet_items, default_models_path, scan_models

    path = models_path or default_models_path()
    settings = _settings(device)
    rows = [
        {
            "name": e.name,
            "kind": "model",
            "backend": e.config.backend if e.config else None,
            "model": e.config.model if e.config else None,
            "file": str(e.path),
            "error": e.error.message if e.error else None,
            "precision": model_precision(e.config, settings) if e.config else None,
        }
        for e in scan_models(path)
    ]
    controlnets = [
        {
            "name": item["name"],
            "kind": "controlnet",
            "backend": None,
            "model": None,
            "file": item["path"],
            "format": item["kind"],  # "folder" (diffusers) or "file" (single weight file)
            "error": None,
            "precision": None,
        }
        for item in controlnet_items(path)
    ]
    upscalers = _upscaler_rows(path)
    if as_json:
        typer.echo(json.dumps(rows + controlnets + upscalers, indent=2))
        return
    _render_list(rows, path)
    if controlnets:
        _render_controlnets(controlnets, path)
    if upscalers:
        _render_upscalers(upscalers, path)


def _upscaler_rows(path: Path) -> list[dict[str, Any]]:
    """The files of `upscale_models/`: what --upscaler takes by name, and what runs each."""
    from localimg.backends.side import describe_file, upscaler_files

    return [
        {
            "name": name,
            "kind": "upscaler",
            "backend": None,
            "model": None,
            "file": str(file),
            "precision": None,
            **describe_file(file),
        }
        for name, file in upscaler_files(path).items()
    ]


def _render_upscalers(rows: list[dict[str, Any]], path: Path) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"Upscalers in {path / 'upscale_models'}")
    for column in ("name", "scale", "runs on", "file"):
        table.add_column(column)
    for row in rows:
        runs = row["runs"] or f"[red]{escape(str(row['error']))}[/]"
        scale = f"x{row['scale']}" if row["scale"] else "?"
        table.add_row(escape(str(row["name"])), scale, runs, escape(Path(row["file"]).name))
    Console().print(table)


def _render_controlnets(rows: list[dict[str, Any]], path: Path) -> None:
    """The ControlNets of `controlnet/`: what --control-net and control_net take by name."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"ControlNets in {path / 'controlnet'}")
    for column in ("name", "format", "file"):
        table.add_column(column)
    for row in rows:
        table.add_row(escape(str(row["name"])), row["format"], escape(Path(row["file"]).name))
    Console().print(table)


def _render_list(rows: list[dict[str, Any]], path: Path) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    if not rows:
        console.print(f"No models in {path}. Add a YAML file there, or use --model with a hub id.")
        return
    table = Table(title=f"Models in {path}")
    for column in ("name", "backend", "source", "precision", "file"):
        table.add_column(column)
    for row in rows:
        source = escape(str(row["model"] or ""))
        if row["error"]:
            source = f"[red]{escape(str(row['error']))}[/]"
        table.add_row(
            escape(str(row["name"])),
            escape(str(row["backend"] or "?")),
            source,
            escape(_precision_text(row["precision"] or {})),
            escape(Path(str(row["file"])).name),
        )
    console.print(table)


@models_app.command("show")
def models_show(
    name: Annotated[
        str,
        typer.Argument(
            help="An installed model, a gallery model, a YAML file, a folder, a file or a hub id."
        ),
    ],
    gallery: Galleries = None,
    as_json: Json = False,
    device: Device = None,
    models_path: ModelsPath = None,
) -> None:
    """A model's settings, files and precision here; for a gallery model, what it would install."""
    from localimg.config import default_models_path

    root = models_path or default_models_path()
    data = _installed(name, root) or _local(name, root) or _from_gallery(name, root, gallery)
    if data is None:
        data = _direct(name, root)  # a hub id, or the error that lists what NAME could be
    config: ModelConfig = data.pop("_config")
    from localimg.backends import model_precision

    data["precision"] = model_precision(config, _settings(device))
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
        return
    _render_show(data)


def _installed(name: str, root: Path) -> dict[str, Any] | None:
    import yaml

    from localimg.config import scan_models
    from localimg.gallery.install import read_record

    match = next((e for e in scan_models(root) if name in (e.name, e.path.stem)), None)
    if match is None:
        return None
    if match.error is not None:
        raise match.error
    record = read_record(root, match.name)
    return {
        "name": match.name,
        "installed": True,
        "yaml": str(match.path),
        "gallery": (record or {}).get("gallery"),
        "config": yaml.safe_load(match.path.read_text(encoding="utf-8")) or {},
        "files": _file_rows(root, record),
        "_config": match.config,
    }


def _local(name: str, root: Path) -> dict[str, Any] | None:
    """A YAML file, folder or weight file given by path (as `generate --model` takes them); a
    path that is not there is resolve_model's error, not a gallery lookup."""
    from localimg.config import WEIGHT_SUFFIXES, YAML_SUFFIXES

    candidate = Path(name).expanduser()
    looks_like_path = name.startswith((".", "/", "~")) or candidate.suffix.lower() in {
        *YAML_SUFFIXES,
        *WEIGHT_SUFFIXES,
    }
    if not (looks_like_path or candidate.exists() or (root / candidate).exists()):
        return None
    return _direct(name, root)


def _direct(name: str, root: Path) -> dict[str, Any]:
    from localimg.config import resolve_model

    config = resolve_model(name, root)
    dumped = config.model_dump(exclude_defaults=True, exclude_none=True)
    return {
        "name": config.name,
        "installed": False,
        "yaml": str(config.source_file) if config.source_file else None,
        "config": dumped,
        "files": [],
        "_config": config,
    }


def _from_gallery(name: str, root: Path, galleries: list[str] | None) -> dict[str, Any] | None:
    from localimg.cli.gallery import catalog_of
    from localimg.config import HUB_ID, config_from_dict
    from localimg.errors import ModelNotFound

    try:
        entry = catalog_of(galleries).find(name)
    except ModelNotFound as exc:
        if HUB_ID.match(name):
            return None  # a hub id, not a gallery name
        close = re.search(r" Did you mean [^?]*\?", exc.message)
        raise ModelNotFound(
            f"unknown model {name!r}: not an installed model, a gallery model, a YAML file, a "
            "folder, a weight file or a hub id (owner/name)."
            f"{close.group(0) if close else ''} See `localimg models list` and "
            "`localimg gallery list`.",
            param="model",
        ) from None
    from localimg.gallery.catalog import resolve_entry

    resolved = resolve_entry(entry)
    where = f"gallery model {entry.name!r}"
    config = config_from_dict(resolved.config, where=where, models_path=root)
    return {
        **entry.summary(),
        "installed": False,
        "config": resolved.config,
        "files": [f.model_dump(exclude_none=True) for f in resolved.files],
        "_config": config,
    }


def _file_rows(models_path: Path, record: dict[str, Any] | None) -> list[dict[str, Any]]:
    from localimg.download import partial_path, safe_target

    rows = []
    for item in (record or {}).get("files") or []:
        target = safe_target(models_path, str(item["filename"]))
        partial = partial_path(target)
        state = "present" if target.is_file() else "partial" if partial.exists() else "missing"
        size = target.stat().st_size if target.is_file() else None
        rows.append({**item, "path": str(target), "state": state, "size": size})
    return rows


def _render_show(data: dict[str, Any]) -> None:
    import yaml
    from rich.console import Console
    from rich.markup import escape
    from rich.syntax import Syntax
    from rich.table import Table

    console = Console()
    state = f"installed ({data['yaml']})" if data["installed"] else "not installed"
    console.print(f"[bold]{escape(data['name'])}[/] — {escape(state)}")
    if data.get("description"):
        console.print(escape(" ".join(str(data["description"]).split())))
    precision = data["precision"]
    console.print(
        f"precision: {escape(_precision_text(precision))} — {escape(str(precision['reason']))}"
    )
    text = yaml.safe_dump(data["config"], sort_keys=False)
    console.print(Syntax(text, "yaml", theme="ansi_dark", background_color="default"))
    if data["files"]:
        table = Table(title="files")
        for column in ("filename", "state", "sha256", "uri"):
            table.add_column(column, overflow="fold")
        for row in data["files"]:
            table.add_row(
                str(row["filename"]),
                str(row.get("state", "")),
                str(row.get("sha256") or "")[:16],
                str(row.get("uri", "")),
            )
        console.print(table)
