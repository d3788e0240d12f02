"""CLI commands around the gallery: `run`, `models show|install|remove`, `gallery list|search`.

Registered on the app of cli.py when that module is imported. Like cli.py, the commands only
parse, call gallery/installer/download and render; every `LocalimgError` becomes one red line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from localimg.cli.app import RESUMABLE, app, models_app, prepare_runtime
from localimg.cli.params import Galleries, Json, ModelsPath

gallery_app = typer.Typer(
    help="Browse the model gallery (the shipped index plus --gallery / LOCALIMG_GALLERIES).",
    no_args_is_help=True,
)
app.add_typer(gallery_app, name="gallery")


def _models_path(models_path: Path | None) -> Path:
    from localimg.config import default_models_path

    return models_path or default_models_path()


def catalog_of(galleries: list[str] | None) -> Any:
    from localimg.gallery.catalog import Catalog, default_sources

    sources = default_sources(galleries or ())
    if not sources:
        from localimg.errors import GalleryError

        raise GalleryError("no gallery configured: pass --gallery or set LOCALIMG_GALLERIES")
    return Catalog.load(sources)


def _echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


# -- gallery list / search ----------------------------------------------------------------------


def _installed(models_path: Path) -> set[str]:
    from localimg.config import scan_models
    from localimg.gallery.controlnets import installed_names

    return {e.name for e in scan_models(models_path)} | installed_names(models_path)


def _entries_table(entries: list[Any], installed: set[str], title: str) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title)
    table.add_column("name", no_wrap=True)
    table.add_column("gallery")
    table.add_column("installed")
    table.add_column("memory", no_wrap=True)
    table.add_column("license", overflow="fold")
    table.add_column("description", overflow="fold")
    for entry in entries:
        description = " ".join(entry.description.split())
        short = description[:70] + ("…" if len(description) > 70 else "")
        table.add_row(
            entry.name,
            entry.gallery,
            "yes" if entry.name in installed else "",
            escape(entry.memory or ""),
            escape(entry.license),
            escape(short),
        )
    Console().print(table)


def _list_entries(entries: list[Any], models_path: Path, as_json: bool, title: str) -> None:
    installed = _installed(models_path)
    if as_json:
        _echo_json([{**e.summary(), "installed": e.name in installed} for e in entries])
        return
    if not entries:
        typer.echo("No matching models in the gallery.")
        return
    _entries_table(entries, installed, title)


@gallery_app.command("list")
def gallery_list(
    tag: Annotated[str | None, typer.Option("--tag", help="Only models with this tag.")] = None,
    gallery: Galleries = None,
    as_json: Json = False,
    models_path: ModelsPath = None,
) -> None:
    """The image models the galleries offer (installed ones are marked)."""
    catalog = catalog_of(gallery)
    entries = catalog.search("", tag=tag)
    _list_entries(entries, _models_path(models_path), as_json, "Gallery models")


@gallery_app.command("search")
def gallery_search(
    text: Annotated[str, typer.Argument(help="Words that must all appear (name, tags, text).")],
    tag: Annotated[str | None, typer.Option("--tag", help="Only models with this tag.")] = None,
    gallery: Galleries = None,
    as_json: Json = False,
    models_path: ModelsPath = None,
) -> None:
    """Find gallery models by name, description or tag."""
    entries = catalog_of(gallery).search(text, tag=tag)
    _list_entries(entries, _models_path(models_path), as_json, f"Gallery models: {text}")


# -- models install / remove / show -------------------------------------------------------------


def install_models(
    refs: list[str],
    models_path: Path,
    galleries: list[str] | None,
    *,
    name: str | None = None,
    prefetch: bool = True,
    quiet: bool = False,
) -> list[Any]:
    """Install each reference (with a progress display); return the InstallResults."""
    import click

    context = click.get_current_context(silent=True)
    if context is not None:  # Ctrl-C now says that running the command again resumes
        context.meta[RESUMABLE] = True
    from localimg.cli.console import RichProgress
    from localimg.gallery.install import install

    catalog = catalog_of(galleries)
    entries = [catalog.find(ref) for ref in refs]  # every name is checked before any download
    results = []
    for entry in entries:
        with RichProgress(enabled=False if quiet else None) as bar:
            results.append(install(entry, models_path, name=name, progress=bar, prefetch=prefetch))
    return results


@models_app.command("install")
def models_install(
    names: Annotated[list[str], typer.Argument(help="Gallery model names (or gallery@name).")],
    name: Annotated[
        str | None, typer.Option("--name", help="Install under this name (one model only).")
    ] = None,
    no_prefetch: Annotated[
        bool,
        typer.Option("--no-prefetch", help="Do not fetch a hub repo's files now (first use)."),
    ] = False,
    gallery: Galleries = None,
    as_json: Json = False,
    models_path: ModelsPath = None,
) -> None:
    """Download gallery models and write their YAML; installing again verifies the files."""
    prepare_runtime()
    if name and len(names) > 1:
        from localimg.errors import InvalidRequest

        raise InvalidRequest("--name applies when installing one model")
    results = install_models(
        names,
        _models_path(models_path),
        gallery,
        name=name,
        prefetch=not no_prefetch,
        quiet=as_json,
    )
    if as_json:
        _echo_json(
            [
                {
                    "name": r.name,
                    "yaml": str(r.yaml_path),
                    "files": [str(f) for f in r.files],
                    "hub_repo": r.hub_repo,
                    "already_installed": r.already_installed,
                    "notes": r.notes,
                    "warnings": r.warnings,
                }
                for r in results
            ]
        )
        return
    for r in results:
        state = "already installed, files verified" if r.already_installed else "installed"
        if r.warnings:  # the YAML is there, the weights are not (offline mode)
            state = "YAML already installed" if r.already_installed else "YAML installed"
            state += ", weights not downloaded"
        typer.echo(f"{r.name}: {state} ({r.yaml_path})")
        for note in r.notes:
            typer.echo(f"  note: {note}")
        for warning in r.warnings:
            typer.echo(f"warning: {warning}", err=True)


@models_app.command("remove")
def models_remove(
    name: Annotated[str, typer.Argument(help="Installed model name.")],
    purge_files: Annotated[
        bool,
        typer.Option("--purge-files", help="Also delete its files (those no other model uses)."),
    ] = False,
    as_json: Json = False,
    models_path: ModelsPath = None,
) -> None:
    """Remove a model's YAML from the models dir (and with --purge-files, its files)."""
    from localimg.gallery.install import remove

    result = remove(name, _models_path(models_path), purge_files=purge_files)
    if as_json:
        _echo_json(
            {
                "name": result.name,
                "yaml": str(result.yaml_path),
                "removed_files": [str(p) for p in result.removed],
                "kept_shared_files": [str(p) for p in result.kept_shared],
            }
        )
        return
    typer.echo(f"removed {result.name} ({result.yaml_path.name})")
    for path in result.removed:
        typer.echo(f"  deleted {path}")
    for path in result.kept_shared:
        typer.echo(f"  kept {path} (used by another model)")


# -- run ------------------------------------------------------------------------------------------


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def run(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Gallery model (installed first if needed).")],
    prompt: Annotated[
        str | None,
        typer.Option("--prompt", help="Generate once instead of serving: what to draw."),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="With --prompt: the output file.")
    ] = None,
    size: Annotated[str | None, typer.Option("--size", "-s", help="With --prompt: WxH.")] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="With --prompt: steps.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="With --prompt: seed.")] = None,
    n: Annotated[int, typer.Option("-n", "--n", help="With --prompt: number of images.")] = 1,
    gallery: Galleries = None,
    models_path: ModelsPath = None,
) -> None:
    """Install a gallery model if needed and serve it preloaded, or generate once (--prompt).

    Any `localimg serve` option may follow NAME (e.g. `localimg run sd-turbo --port 9000`).
    """
    prepare_runtime()
    root = _models_path(models_path)
    if prompt is not None and ctx.args:
        from localimg.errors import InvalidRequest

        raise InvalidRequest(
            f"{' '.join(ctx.args)}: with --prompt, run takes -o, --size, --steps, --seed and "
            "-n (serve options apply without --prompt)"
        )
    model_name = _ensure_installed(name, root, gallery)
    if prompt is not None:
        from localimg.cli.generate import generate

        generate(
            prompt=prompt,
            model=model_name,
            output=output,
            size=size,
            steps=steps,
            seed=seed,
            n=n,
            models_path=root,
        )
        return
    _serve(ctx, model_name, root)


def _ensure_installed(ref: str, root: Path, galleries: list[str] | None) -> str:
    """The installed model's name: an installed YAML is used as is, else the gallery installs."""
    from localimg.config import scan_models

    for entry in scan_models(root):
        if ref in (entry.name, entry.path.stem) and entry.config is not None:
            return entry.name
    from localimg.config import HUB_ID
    from localimg.errors import ModelNotFound

    try:
        catalog_of(galleries).find(ref)
    except ModelNotFound:
        if HUB_ID.match(ref) or Path(ref).expanduser().exists():
            return ref  # a hub id or a local model: served as `generate --model` would use it
        raise
    results = install_models([ref], root, galleries)
    return str(results[0].name)


def _serve(ctx: typer.Context, model_name: str, root: Path) -> None:
    """Hand over to `localimg serve` with the model preloaded and the extra options."""
    # The root command is Typer's group (Typer ships its own click): look `serve` up on it.
    serve = ctx.find_root().command.get_command(ctx, "serve")  # type: ignore[attr-defined]
    if serve is None:  # pragma: no cover - serve is part of cli.py
        raise typer.Exit(1)
    args = [*ctx.args, "--models-path", str(root), "--preload", model_name]
    with serve.make_context("serve", args, parent=ctx) as serve_ctx:
        serve.invoke(serve_ctx)
