"""The precision a model runs with here, as the engine's clients report it (`/v1/models`): the
backend's offline decision (backends.model_precision), remembered per model and YAML version,
since finding the device may import torch, which a listing should pay for once."""

from __future__ import annotations

from typing import Any

from localimg.backends import model_precision
from localimg.backends.base import RuntimeSettings
from localimg.config import ModelConfig

_REPORTS: dict[tuple[str, float, str | None], dict[str, Any]] = {}


def precision_report(config: ModelConfig, settings: RuntimeSettings) -> dict[str, Any]:
    """`device`, `dtype`, `reason`, `variant` for `config` on this machine (see model_precision)."""
    source = config.source_file
    changed = source.stat().st_mtime if source is not None and source.exists() else 0.0
    key = (config.name, changed, settings.device)
    if key not in _REPORTS:
        _REPORTS[key] = model_precision(config, settings)
    return _REPORTS[key]
