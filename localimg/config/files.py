"""Reading and writing model YAML files, and scanning the models directory for them.

Every problem is a ConfigError that names the file and the key, in the shared message format.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from localimg._util.files import write_atomic
from localimg._util.validation import problems
from localimg.config.model import ModelConfig
from localimg.errors import ConfigError

log = logging.getLogger(__name__)


def format_validation_error(where: str, exc: ValidationError) -> str:
    """Every failed key of a YAML, in the shared wording (_util/validation.py)."""
    return f"{where}: " + "; ".join(p.describe("key '{key}'") for p in problems(exc))


def config_from_dict(
    data: Any, *, where: str, source_file: Path | None = None, models_path: Path | None = None
) -> ModelConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of keys (name, backend, parameters, ...)")
    if "name" not in data and source_file is not None:
        data = {**data, "name": source_file.stem}
    try:
        config = ModelConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(where, exc)) from None
    config.source_file = source_file
    config.models_path = models_path
    config.check_single_values()
    return config


def load_config_file(path: Path, models_path: Path | None = None) -> ModelConfig:
    """Read and validate one YAML file; every problem is a `ConfigError` naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: invalid YAML{at}: {problem}") from None
    config = config_from_dict(
        data, where=str(path), source_file=path, models_path=models_path or path.parent
    )
    config.warn_unused_keys()
    return config


def save_config(config: ModelConfig, path: Path) -> None:
    """Write a YAML atomically (temp file + rename): a crash never leaves half a file."""
    data = config.model_dump(exclude_none=True, exclude_defaults=False, by_alias=True)
    write_atomic(path, yaml.safe_dump(data, sort_keys=False))
