"""Which model a reference names: a YAML name, a YAML file, a local folder or file, a hub id.

Also where a config's weights are (`model_source`) and which model is the default.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from localimg.config.files import config_from_dict, load_config_file
from localimg.config.model import (
    DEFAULT_HUB_MODEL,
    DEFAULT_MODEL_ENV,
    HUB_ID,
    WEIGHT_SUFFIXES,
    YAML_SUFFIXES,
    ModelConfig,
)
from localimg.config.models_dir import scan_models
from localimg.errors import ConfigError, InvalidRequest, ModelNotFound

# Settings that make a hub model produce good images with no YAML (turbo models want 1-4 steps and
# no classifier-free guidance; their generic defaults would give a bad image slowly). They opt in
# to half precision and fetch the repo's fp16 files: half the download, and on a GPU half the
# memory; a CPU without native bfloat16 upcasts them to float32 (load/precision.py).
HALF_PRESET: dict[str, Any] = {"f16": True, "options": ["variant:fp16"]}
HUB_PRESETS: dict[str, dict[str, Any]] = {
    "stabilityai/sd-turbo": {"step": 2, "cfg_scale": 0.0, "size": "512x512", **HALF_PRESET},
    "stabilityai/sdxl-turbo": {"step": 2, "cfg_scale": 0.0, "size": "512x512", **HALF_PRESET},
}

SourceKind = Literal["hub", "folder", "file"]


@dataclass(frozen=True)
class ModelSource:
    """Where a model's weights are: a hub repo id, a local folder or a single local file."""

    kind: SourceKind
    location: str

    @property
    def path(self) -> Path:
        return Path(self.location)


def model_source(config: ModelConfig) -> ModelSource:
    """Resolve `parameters.model` to a hub id, folder or file (models dir first)."""
    value = config.model
    if not value:
        raise ConfigError(f"{config.where}: parameters.model is missing (a file, folder or hub id)")
    candidate = config.resolve_path(value)
    if candidate.is_dir():
        return ModelSource("folder", str(candidate))
    if candidate.is_file():
        return ModelSource("file", str(candidate))
    if Path(value).suffix.lower() in WEIGHT_SUFFIXES or Path(value).is_absolute():
        from localimg.errors import ModelUnavailable

        raise ModelUnavailable(
            f"{config.where}: model file {value!r} not found (looked for {candidate})"
        )
    if HUB_ID.match(value):
        return ModelSource("hub", value)
    from localimg.errors import ModelUnavailable

    raise ModelUnavailable(
        f"{config.where}: parameters.model {value!r} is neither a file or folder in "
        f"{config.models_path or candidate.parent} nor a hub repo id (owner/name)"
    )


def _implicit_config(ref: str, path: Path | None, models_path: Path) -> ModelConfig:
    """A config for a model given directly (folder, file or hub id) with no YAML."""
    data: dict[str, Any] = {"name": ref, "parameters": {"model": str(path) if path else ref}}
    if path is not None and path.suffix.lower() == ".gguf":
        data["backend"] = "stablediffusion-ggml"
    data.update(HUB_PRESETS.get(ref, {}))
    return config_from_dict(data, where=f"model {ref!r}", models_path=models_path)


def resolve_model(ref: str, models_path: Path) -> ModelConfig:
    """Find a model by YAML name, YAML path, local folder or file, or hub id, in that order."""
    entries = scan_models(models_path)
    for entry in entries:
        if entry.name == ref or entry.path.stem == ref or entry.path.name == ref:
            if entry.error:
                raise entry.error
            assert entry.config is not None
            return entry.config
    path = Path(ref).expanduser()
    if path.suffix.lower() in YAML_SUFFIXES:
        if not path.is_file():
            raise ModelNotFound(f"model file {ref} does not exist", param="model")
        return load_config_file(path.resolve(), models_path)
    for candidate in (path, models_path / path):
        if (candidate.is_dir() or candidate.is_file()) and _inside_or_explicit(
            ref, candidate, models_path
        ):
            return _implicit_config(ref, candidate.resolve(), models_path)
    if HUB_ID.match(ref) and not path.exists():
        return _implicit_config(ref, None, models_path)
    names = [e.name for e in entries]
    close = difflib.get_close_matches(ref, names, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    known = f" Known models: {', '.join(names)}." if names else f" No models in {models_path}."
    raise ModelNotFound(
        f"unknown model {ref!r}: not a model name, YAML file, local folder or file, or hub id "
        f"(owner/name).{hint}{known}",
        param="model",
    )


def _inside_or_explicit(ref: str, candidate: Path, models_path: Path) -> bool:
    """A relative reference resolved in the models dir must stay inside it."""
    if candidate == Path(ref).expanduser():
        return True
    inside = Path(os.path.normpath(candidate.absolute()))
    return inside.is_relative_to(Path(os.path.normpath(models_path.absolute())))


def default_model_ref(models_path: Path) -> str:
    """The model used when none is named: $LOCALIMG_MODEL, the only configured one, or sd-turbo."""
    env = os.environ.get(DEFAULT_MODEL_ENV)
    if env:
        return env
    entries = [e for e in scan_models(models_path) if e.config is not None]
    if len(entries) == 1:
        return entries[0].name
    if len(entries) > 1:
        names = ", ".join(e.name for e in entries)
        raise InvalidRequest(
            f"several models are configured ({names}): name one with --model or set "
            f"{DEFAULT_MODEL_ENV}",
            param="model",
        )
    return DEFAULT_HUB_MODEL
