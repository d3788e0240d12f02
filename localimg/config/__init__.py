"""Model configuration: LocalAI-compatible YAML, its `options:`, the models directory and
model references. `localimg.config.ModelConfig` is the import path plugins use."""

from localimg.config.model import ModelConfig

__all__ = ["ModelConfig"]
