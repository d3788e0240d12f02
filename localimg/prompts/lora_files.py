"""The LoRA files of the models directory's `loras/` folder as A1111's `/sdapi/v1/loras` lists
them: name (the file stem), alias, absolute path and the safetensors `__metadata__` (read from
the header only, never the weights). Engine-neutral; subfolders are listed too, as in A1111."""

from __future__ import annotations

import functools
import hashlib
import logging
from pathlib import Path
from typing import Any

from localimg.errors import LocalimgError
from localimg.prompts.lora_tags import find_lora, parse_tags
from localimg.requests import ImageResult

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


@functools.lru_cache(maxsize=256)
def _short_hash(path: Path, mtime_ns: int, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        if path.suffix.lower() == ".safetensors":  # A1111's "addnet" hash: the tensor bytes
            handle.seek(8 + int.from_bytes(handle.read(8), "little"))
        for chunk in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()[:12]


def short_hash(path: Path) -> str:
    """A LoRA file's hash as A1111 writes it in `Lora hashes`: the first 12 hex digits of the
    sha256 of its tensor bytes (safetensors: after the header; other formats: the whole file),
    or the `sshs_model_hash` its metadata carries. Computed once per file version."""
    given = safetensors_metadata(path).get("sshs_model_hash")
    if isinstance(given, str) and given:
        return given[:12]
    stat = path.stat()
    return _short_hash(path, stat.st_mtime_ns, stat.st_size)


def lora_hashes(prompt: str | None, folder: Path | None) -> str | None:
    """A1111's `Lora hashes` value for the `<lora:name:weight>` tags of a prompt, each resolved
    in `folder` ("name: hash, other: hash"); None without tags, a folder or a file."""
    if not prompt or folder is None:
        return None
    entries = []
    try:
        for name, _weight in parse_tags(prompt):
            clean = name.replace(":", "").replace(",", "")
            entries.append(f"{clean}: {short_hash(find_lora(name, folder))}")
    except (LocalimgError, OSError):
        return None
    return ", ".join(dict.fromkeys(entries)) or None


def note_lora_hashes(results: list[ImageResult], prompt: str | None, folder: Path | None) -> None:
    """Add `Lora hashes` to the results' A1111 infotext when the prompt has LoRA tags."""
    hashes = lora_hashes(prompt, folder)
    if hashes:
        for result in results:
            result.infotext["Lora hashes"] = hashes
