"""Model configuration: LocalAI-compatible YAML, its `options:`, the models directory and
model references. This package's names are its public API (`localimg.config.ModelConfig` is the
import path plugins use); other parts import from here, never from its modules."""

from localimg.config.backend_names import (
    BACKEND_ALIASES,
    BUILTIN_BACKENDS,
    DIFFUSERS,
    GGML,
    builtin_backend,
)
from localimg.config.controlnets import (
    CONTROLNET_FOLDER,
    controlnet_items,
    resolve_controlnet,
)
from localimg.config.files import config_from_dict, load_config_file, save_config
from localimg.config.model import (
    DEFAULT_HUB_MODEL,
    DEFAULT_MODEL_ENV,
    HUB_ID,
    MODELS_PATH_ENV,
    WEIGHT_SUFFIXES,
    YAML_SUFFIXES,
    ModelConfig,
    default_models_path,
)
from localimg.config.models_dir import ModelEntry, ModelsDir, models_dir, scan_models
from localimg.config.resolve import ModelSource, default_model_ref, model_source, resolve_model

__all__ = [
    "BACKEND_ALIASES",
    "BUILTIN_BACKENDS",
    "CONTROLNET_FOLDER",
    "DEFAULT_HUB_MODEL",
    "DEFAULT_MODEL_ENV",
    "DIFFUSERS",
    "GGML",
    "HUB_ID",
    "MODELS_PATH_ENV",
    "WEIGHT_SUFFIXES",
    "YAML_SUFFIXES",
    "ModelConfig",
    "ModelEntry",
    "ModelSource",
    "ModelsDir",
    "builtin_backend",
    "config_from_dict",
    "controlnet_items",
    "default_model_ref",
    "default_models_path",
    "load_config_file",
    "model_source",
    "models_dir",
    "resolve_controlnet",
    "resolve_model",
    "save_config",
    "scan_models",
]
