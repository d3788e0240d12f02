"""The ControlNets of the models directory's `controlnet/` folder, and what a `control_net`
reference names: a name there (extension optional), an existing path, or a hub repo id.

Engine-neutral: the diffusers backend loads a diffusers folder, a single file or a repo id; the
stable-diffusion.cpp backend reads single files. Nothing here reads weights.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from localimg.config.model import HUB_ID
from localimg.errors import ModelNotFound

CONTROLNET_FOLDER = "controlnet"
CONTROLNET_SUFFIXES = (".safetensors", ".pth", ".bin", ".ckpt")


def is_diffusers_folder(path: Path) -> bool:
    """A diffusers ControlNet folder: its `config.json` names the model class."""
    return path.is_dir() and (path / "config.json").is_file()


def controlnet_items(models_path: Path) -> list[dict[str, Any]]:
    """One `{name, path, kind}` per ControlNet in `<models>/controlnet/`, sorted by name: a
    diffusers folder (kind "folder", named after the folder) or a single weight file (kind
    "file", named after its stem). Hidden entries and other files are left out."""
    folder = Path(models_path) / CONTROLNET_FOLDER
    if not folder.is_dir():
        return []
    items = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if is_diffusers_folder(entry):
            items.append({"name": entry.name, "path": str(entry), "kind": "folder"})
        elif entry.is_file() and entry.suffix.lower() in CONTROLNET_SUFFIXES:
            items.append({"name": entry.stem, "path": str(entry), "kind": "file"})
    return sorted(items, key=lambda item: str(item["name"]).lower())


def resolve_controlnet(ref: str, models_path: Path | None) -> str:
    """Where the ControlNet `ref` is: a local path (a name in `<models>/controlnet/`, with or
    without its extension, a path relative to that folder or to the models directory, or an
    existing path), or a hub repo id (`org/name`) as it is.

    An unknown name raises ModelNotFound (param "control_net") naming the installed ControlNets
    and the closest names.
    """
    ref = ref.strip()
    items = controlnet_items(models_path) if models_path is not None else []
    for item in items:
        path = Path(item["path"])
        if ref in (item["name"], path.name):
            return str(path)
    candidate = Path(ref).expanduser()
    if not candidate.is_absolute() and models_path is not None:
        # relative to controlnet/ (a subfolder's file), then to the models directory
        for inside in (Path(models_path) / CONTROLNET_FOLDER, Path(models_path)):
            if (inside / candidate).exists():
                return str(inside / candidate)
    if candidate.exists():
        return str(candidate)
    if HUB_ID.match(ref) and not ref.startswith((".", "/", "~")):
        return ref
    raise ModelNotFound(
        unknown_message(ref, [str(item["name"]) for item in items], models_path),
        param="control_net",
    )


def unknown_message(ref: str, names: list[str], models_path: Path | None) -> str:
    """`ref` names no ControlNet: what is installed, and what it may have meant."""
    where = (
        f"{Path(models_path) / CONTROLNET_FOLDER}" if models_path is not None else "no models path"
    )
    message = f"unknown ControlNet {ref!r}"
    close = difflib.get_close_matches(Path(ref).stem, names, n=3, cutoff=0.5)
    if close:
        message += f" (did you mean {', '.join(repr(name) for name in close)}?)"
    if names:
        message += f"; installed in {where}: {', '.join(names)}"
    else:
        message += f"; no ControlNet is installed in {where}"
    return message + " (give a name there, a path, or a hub repo id such as org/name)"
