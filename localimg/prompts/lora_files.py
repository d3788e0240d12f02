"""The LoRA files of the models directory's `loras/` folder as A1111's `/sdapi/v1/loras` lists
them: name (the file stem), alias, absolute path and the safetensors `__metadata__` (read from
the header only, never the weights). Engine-neutral; subfolders are listed too, as in A1111."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LORA_FOLDER = "loras"
LISTED_SUFFIXES = (".safetensors", ".pt", ".bin", ".ckpt")


def files_in(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """The files under `folder` (subfolders too, hidden ones left out) with one of `suffixes`,
    sorted by path; none when the folder does not exist."""
    if not folder.is_dir():
        return []
    found = []
    for path in folder.rglob("*"):
        relative = path.relative_to(folder).parts
        if any(part.startswith(".") for part in relative):
            continue
        if path.suffix.lower() in suffixes and path.is_file():
            found.append(path)
    return sorted(found)


def safetensors_metadata(path: Path) -> dict[str, Any]:
    """A .safetensors file's `__metadata__` (header only; values that hold JSON stay strings,
    as A1111 sends them); {} for another format or an unreadable file."""
    if path.suffix.lower() != ".safetensors":
        return {}
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as handle:
            metadata = handle.metadata()
    except Exception as exc:  # SafetensorError (a bad header), OSError
        log.warning("LoRA %s: cannot read its header (%s)", path, exc)
        return {}
    return dict(metadata or {})


def lora_items(models_path: Path) -> list[dict[str, Any]]:
    """`/sdapi/v1/loras`: one `{name, alias, path, metadata}` per file of `loras/`."""
    folder = models_path / LORA_FOLDER
    return [
        {
            "name": path.stem,
            "alias": path.stem,
            "path": str(path.absolute()),
            "metadata": safetensors_metadata(path),
        }
        for path in files_in(folder, LISTED_SUFFIXES)
    ]
