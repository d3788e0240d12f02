"""The upscaler files of the models directory's `upscale_models/` folder, as side models.

Each `.pth`, `.pt`, `.ckpt` or `.safetensors` file there is an upscaler named after the file
without its extension. Registering reads nothing: the file is checked when a request first names
it. An RRDB model stable-diffusion.cpp can run goes to the native upscaler (esrgan.py); any other
file goes to spandrel where it is installed (spandrel_upscaler.py), else is refused with the
architectures each path runs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from localimg.backends.base import RuntimeSettings
from localimg.backends.side.base import SideModel
from localimg.backends.side.esrgan import SUPPORTED, EsrganUpscaler, NotRunnable, check_file
from localimg.backends.side.registry import SideFactory, SideRegistry
from localimg.backends.side.spandrel_upscaler import SpandrelUpscaler, available
from localimg.errors import ModelUnavailable

log = logging.getLogger("localimg.upscalers")

UPSCALE_FOLDER = "upscale_models"
UPSCALER_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors")


def upscaler_files(models_path: Path | None) -> dict[str, Path]:
    """The upscaler files in `<models>/upscale_models/` by name (the file's stem), sorted."""
    if models_path is None:
        return {}
    folder = Path(models_path) / UPSCALE_FOLDER
    if not folder.is_dir():
        return {}
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir(), key=lambda p: p.name.lower()):
        if path.name.startswith(".") or not path.is_file():
            continue
        if path.suffix.lower() in UPSCALER_SUFFIXES:
            found.setdefault(path.stem, path)
    return found


def make_upscaler(name: str, path: Path, runtime: RuntimeSettings) -> SideModel:
    """The side model for one file: native when it is an RRDB the library runs, else spandrel's
    (where installed); ModelUnavailable saying what runs where otherwise."""
    try:
        info = check_file(path)
    except NotRunnable as exc:
        if available():
            return SpandrelUpscaler(name, path, runtime)
        raise ModelUnavailable(
            f"the upscaler {name!r} ({path}) cannot be used: {exc}. {SUPPORTED}",
            param="upscaler",
            code="unsupported_upscaler",
        ) from None
    return EsrganUpscaler(name, path, info, threads=runtime.threads or 0)


def describe_file(path: Path) -> dict[str, Any]:
    """What `localimg models list` says of one file: the architecture, its factor and which
    engine runs it ("stable-diffusion.cpp", "spandrel"), or why none does."""
    try:
        info = check_file(path)
    except NotRunnable as exc:
        if available():
            return {"architecture": None, "scale": None, "runs": "spandrel", "error": None}
        return {"architecture": None, "scale": None, "runs": None, "error": str(exc)}
    return {
        "architecture": f"ESRGAN/RRDB, {info.blocks} blocks",
        "scale": info.scale,
        "runs": "stable-diffusion.cpp",
        "error": None,
    }


def file_factory(name: str, path: Path) -> SideFactory:
    def make(runtime: RuntimeSettings) -> SideModel:
        return make_upscaler(name, path, runtime)

    return make


def register_upscale_models(registry: SideRegistry, models_path: Path | None) -> list[str]:
    """Register (again) every file of `upscale_models/`: files gone since the last call are
    forgotten, a name a built-in upscaler already has is skipped with a warning. Returns the
    registered names."""
    files = upscaler_files(models_path)
    builtin = set(registry.builtin_names("upscaler"))
    factories: dict[str, SideFactory] = {}
    for name, path in files.items():
        if name in builtin:
            log.warning("upscaler file %s is ignored: %r is a built-in upscaler's name", path, name)
            continue
        factories[name] = file_factory(name, path)
    registry.replace_files("upscaler", factories)
    return sorted(factories)
