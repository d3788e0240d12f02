"""Textual-inversion embeddings: the files of the models directory's `embeddings/` folder, each
read for its vector count and width without loading a model, and which of them fit a model.

An embedding's *widths* are those of the text encoders it was trained for: (768,) for SD 1.x,
(1024,) for SD 2.x, (768, 1280) for an SDXL file's `clip_l` and `clip_g` parts. It fits a model
whose text encoders have exactly those widths (text_width.py reads them from the model's files).
Formats read, as A1111 reads them: a .safetensors with one tensor (`emb_params`) or `clip_l` +
`clip_g` (header only), and a .pt/.bin (A1111's `string_to_param` dict, or a diffusers concept
`{token: tensor}`), loaded with torch.load(weights_only=True) only when listed.
Engine-neutral: the A1111 `/sdapi/v1/embeddings` route lists them, the engines load the ones
that fit; an embedding's name in a prompt is its file stem.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localimg.prompts.lora_files import files_in

log = logging.getLogger(__name__)

EMBEDDING_FOLDER = "embeddings"
EMBEDDING_SUFFIXES = (".safetensors", ".pt", ".bin")
SDXL_PARTS = ("clip_l", "clip_g")


@dataclass(frozen=True)
class Embedding:
    """One embedding file and what its tensors say."""

    name: str
    path: Path
    widths: tuple[int, ...]  # () when the file cannot be read as an embedding
    vectors: int | None
    parts: tuple[str, ...] = ()  # the tensors' keys, in `widths`' order
    step: int | None = None
    sd_checkpoint: str | None = None
    sd_checkpoint_name: str | None = None
    error: str | None = None

    @property
    def shape(self) -> int | None:
        """A1111's `shape`: the width, summed over the parts (2048 for SDXL)."""
        return sum(self.widths) or None

    def fits(self, model_widths: tuple[int, ...] | None) -> bool:
        return bool(self.widths) and model_widths == self.widths

    def a1111(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "sd_checkpoint": self.sd_checkpoint,
            "sd_checkpoint_name": self.sd_checkpoint_name,
            "shape": self.shape,
            "vectors": self.vectors,
        }


def _described(path: Path, shapes: dict[str, tuple[int, ...]], **extra: Any) -> Embedding:
    """An Embedding from its tensors' shapes (rows are vectors, the last dimension the width)."""
    name = path.stem
    if all(part in shapes for part in SDXL_PARTS):
        widths = tuple(shapes[part][-1] for part in SDXL_PARTS)
        first = shapes["clip_g"]
        return Embedding(name, path, widths, first[0] if len(first) > 1 else 1, SDXL_PARTS, **extra)
    if len(shapes) != 1:
        keys = ", ".join(sorted(shapes)[:5])
        return _unreadable(path, f"not one embedding tensor (tensors: {keys or 'none'})")
    (key, shape), *_ = shapes.items()
    if not shape:
        return _unreadable(path, f"tensor {key!r} has no dimensions")
    vectors = shape[0] if len(shape) > 1 else 1
    return Embedding(name, path, (shape[-1],), vectors, (key,), **extra)


def _unreadable(path: Path, why: str) -> Embedding:
    return Embedding(path.stem, path, (), None, error=why)


def _read_safetensors(path: Path) -> Embedding:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as handle:
        shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118
    return _described(path, shapes)


def _read_torch(path: Path) -> Embedding:
    import torch

    data = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(data, dict):
        return _unreadable(path, f"holds a {type(data).__name__}, not a dict of tensors")
    extra = {
        key: data.get(key) if isinstance(data.get(key), int | str) else None
        for key in ("step", "sd_checkpoint", "sd_checkpoint_name")
    }
    if "string_to_param" in data:  # A1111's own .pt
        params: Any = data["string_to_param"]
        data = dict(getattr(params, "_parameters", params))
    shapes = {str(k): tuple(v.shape) for k, v in data.items() if isinstance(v, torch.Tensor)}
    return _described(path, shapes, **extra)


@functools.lru_cache(maxsize=512)
def _read_cached(path: Path, mtime_ns: int, size: int) -> Embedding:
    try:
        if path.suffix.lower() == ".safetensors":
            return _read_safetensors(path)
        return _read_torch(path)
    except Exception as exc:  # SafetensorError, pickle's and torch's errors, OSError
        return _unreadable(path, f"{type(exc).__name__}: {exc}")


def read_embedding(path: Path) -> Embedding:
    """The embedding in `path` (re-read only when the file changes); an unreadable file gives an
    Embedding with no widths and an `error`."""
    stat = path.stat()
    embedding = _read_cached(path, stat.st_mtime_ns, stat.st_size)
    if embedding.error:
        log.warning("embedding %s cannot be used: %s", path, embedding.error)
    return embedding


def list_embeddings(models_path: Path) -> list[Embedding]:
    """Every embedding file of the models dir's `embeddings/` folder (subfolders too); when two
    files share a stem, the first by path is kept (the name could not tell them apart)."""
    found: dict[str, Embedding] = {}
    for path in files_in(models_path / EMBEDDING_FOLDER, EMBEDDING_SUFFIXES):
        try:
            embedding = read_embedding(path)
        except OSError:
            continue  # removed while listing
        found.setdefault(embedding.name, embedding)
    return list(found.values())


def split_fitting(
    embeddings: list[Embedding], model_widths: tuple[int, ...] | None
) -> tuple[list[Embedding], list[Embedding]]:
    """(the ones that fit the model, the others)."""
    fitting = [e for e in embeddings if e.fits(model_widths)]
    return fitting, [e for e in embeddings if not e.fits(model_widths)]


def fitting_embeddings(
    models_path: Path | None, widths: Callable[[], tuple[int, ...] | None], model: str
) -> list[Embedding]:
    """The files of `embeddings/` that fit the model's text encoders, as both engines load them:
    `widths` is asked only when there are files; each file that does not fit is skipped with a
    log line (never an error: a prompt may not use it)."""
    found = list_embeddings(models_path) if models_path else []
    if not found:
        return []
    model_widths = widths()
    fitting, skipped = split_fitting(found, model_widths)
    for embedding in skipped:
        why = embedding.error or f"width {embedding.shape} does not fit this model's {model_widths}"
        log.info("%s: embedding %r skipped: %s", model, embedding.name, why)
    return fitting


def load_tensors(embedding: Embedding) -> list[Any]:
    """The embedding's tensors (torch, on the CPU, rows are vectors), one per part in `parts`
    order: one for SD 1.x/2.x, clip_l then clip_g for SDXL."""
    import torch

    if embedding.path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        data: dict[str, Any] = load_file(str(embedding.path), device="cpu")
    else:
        data = torch.load(str(embedding.path), map_location="cpu", weights_only=True)
        if "string_to_param" in data:
            params: Any = data["string_to_param"]
            data = dict(getattr(params, "_parameters", params))
    found = [data[part].detach().float() for part in embedding.parts]
    return [t.unsqueeze(0) if t.dim() == 1 else t for t in found]
