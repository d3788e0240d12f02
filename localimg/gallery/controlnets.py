"""Side-file entries of the gallery: weights for a folder of the models directory, no YAML.

An entry with `kind: controlnet` (files under `controlnet/`) or `kind: upscaler` (files under
`upscale_models/`) is not a model of its own: installing it downloads its files, each under its
kind's folder, verified like any other, and writes the gallery record (what came from where),
never a model YAML. A ControlNet is then named, by the file's name without its extension, in a
YAML's `control_net:` or a request's `control_net`; an upscaler in `localimg upscale
--upscaler`, a hires fix or an upscale request. Removing it deletes its files (they are all it
is) unless another installed entry lists the same file.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from localimg import download
from localimg._util.files import write_atomic
from localimg.config import CONTROLNET_FOLDER
from localimg.errors import GalleryError
from localimg.gallery.catalog import NAME, RECORD_PREFIX, GalleryEntry

CONTROLNET_KIND = "controlnet"
UPSCALER_KIND = "upscaler"
UPSCALE_FOLDER = "upscale_models"  # what the engine scans (backends/side/upscale_models.py)
# Each side-file kind and the folder its files install into.
FOLDERS = {CONTROLNET_KIND: CONTROLNET_FOLDER, UPSCALER_KIND: UPSCALE_FOLDER}
TITLES = {CONTROLNET_KIND: "ControlNet", UPSCALER_KIND: "upscaler"}
ENTRY_KINDS = ("model", *FOLDERS)


def is_side_files(entry: GalleryEntry) -> bool:
    """A ControlNet or upscaler entry: files for its folder, no model YAML."""
    return entry.kind in FOLDERS


def is_controlnet(entry: GalleryEntry) -> bool:
    return entry.kind == CONTROLNET_KIND


def file_problems(entry: GalleryEntry) -> list[str]:
    """What keeps a side-file entry from installing: no files, a file outside its folder."""
    folder, title = FOLDERS[entry.kind], TITLES[entry.kind]
    if not entry.files:
        return [f"{title} entry {entry.name!r} lists no files"]
    return [
        f"file {item.filename!r} of {title} entry {entry.name!r} must go in "
        f"{folder}/ (a file name such as {folder}/NAME.safetensors)"
        for item in entry.files
        if PurePosixPath(item.filename.replace("\\", "/")).parts[:1] != (folder,)
    ]


def install_files(
    entry: GalleryEntry,
    models_path: Path,
    *,
    name: str | None = None,
    progress: download.Progress | None = None,
    cancel: threading.Event | None = None,
    workers: int = 4,
) -> tuple[str, Path, list[Path], bool]:
    """Download a side-file entry's files into its folder and write its record.

    Returns its name, the record's path, the files and whether it was installed already (then
    its files are verified again).
    """
    record_name = name or entry.name
    if not NAME.match(record_name):
        raise GalleryError(
            f"name {record_name!r} cannot be a file name (letters, digits, '.', '_', '-', '+')"
        )
    problems = file_problems(entry)
    if problems:
        raise GalleryError(problems[0])
    record = models_path / f"{RECORD_PREFIX}{record_name}.yaml"
    already = record.is_file()
    specs = [download.FileSpec(f.filename, f.uri, f.sha256 or None) for f in entry.files]
    tasks = download.plan(specs, models_path)
    download.fetch_tasks(tasks, models_path, progress, workers=workers, cancel=cancel)
    data: dict[str, Any] = {
        "name": record_name,
        "kind": entry.kind,
        "entry": entry.name,
        "gallery": entry.gallery,
        "installed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": [{"filename": f.filename, "sha256": f.sha256, "uri": f.uri} for f in entry.files],
    }
    write_atomic(record, yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return record_name, record, [t.target for t in tasks if t.target], already


def remove_files(
    models_path: Path, record: Path, shared: set[Path]
) -> tuple[list[Path], list[Path]]:
    """Delete an installed side-file entry's files (but those in `shared`) and its record;
    returns the removed and the kept files."""
    data = yaml.safe_load(record.read_text(encoding="utf-8")) or {}
    folder = FOLDERS.get(str(data.get("kind")), CONTROLNET_FOLDER)
    removed: list[Path] = []
    kept: list[Path] = []
    for item in data.get("files") or []:
        target = download.safe_target(models_path, str(item["filename"]))
        if target in shared:
            kept.append(target)
        elif target.exists():
            target.unlink()
            download.partial_path(target).unlink(missing_ok=True)
            removed.append(target)
            _prune(target.parent, models_path / folder)
    record.unlink(missing_ok=True)
    return removed, kept


def _prune(folder: Path, keep: Path) -> None:
    """Remove the empty folders from `folder` up to (not including) `keep`."""
    keep = keep.resolve()
    folder = folder.resolve()
    while folder != keep and folder.is_relative_to(keep):
        try:
            folder.rmdir()
        except OSError:  # not empty
            return
        folder = folder.parent


def entry_problems(data: dict[str, Any]) -> list[str]:
    """`make gallery-check` for a shipped side-file entry: files in its folder, no model
    settings (there is no model YAML to put them in)."""
    title = TITLES.get(str(data.get("kind")), "ControlNet")
    problems = [
        f"{key!r} has no meaning for a {title} entry (it writes no model YAML)"
        for key in ("template", "overrides")
        if data.get(key)
    ]
    try:
        entry = GalleryEntry.model_validate(data)
    except Exception as exc:  # pydantic's ValidationError: reported, not raised
        return [*problems, f"invalid entry: {exc}"]
    return problems + file_problems(entry)


def installed_names(models_path: Path) -> set[str]:
    """The side-file entries installed in `models_path` (from their gallery records)."""
    names = set()
    for path in Path(models_path).glob(f"{RECORD_PREFIX}*.yaml"):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(data, dict) and data.get("kind") in FOLDERS:
            names.add(str(data.get("name") or path.stem.removeprefix(RECORD_PREFIX)))
    return names
