"""The YAML's LoRA adapters on a loaded diffusers pipeline (through diffusers' peft integration)."""

from __future__ import annotations

from typing import Any

from localimg.config import ModelConfig
from localimg.errors import BackendNotInstalled, ConfigError, ModelUnavailable


def apply_loras(pipe: Any, config: ModelConfig) -> dict[str, float]:
    """The YAML's LoRA adapters, each loaded under its own name and set at its scale; their names
    and scales (prompt tags add to them for one request: lora_adapters.py)."""
    loras = config.loras()
    if not loras:
        return {}
    if not hasattr(pipe, "load_lora_weights"):
        raise ConfigError(f"{config.where}: this pipeline does not support LoRA adapters")
    names, scales = [], []
    for index, (file, scale) in enumerate(loras):
        path = config.resolve_path(file)
        if not path.exists():
            raise ModelUnavailable(f"{config.where}: LoRA file {file!r} not found ({path})")
        name = f"lora{index}"
        try:
            if path.is_dir():
                pipe.load_lora_weights(str(path), adapter_name=name)
            else:
                pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=name)
        except ImportError as exc:
            raise BackendNotInstalled(f"LoRA needs peft: pip install peft ({exc})") from None
        except (ValueError, KeyError, RuntimeError, OSError) as exc:
            raise ConfigError(f"{config.where}: cannot load LoRA {file!r}: {exc}") from None
        names.append(name)
        scales.append(scale)
    pipe.set_adapters(names, adapter_weights=scales)
    return dict(zip(names, scales, strict=True))
