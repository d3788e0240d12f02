"""What an engine is started with: models dir, runtime, queue, lifecycle and batching limits.

Its own module so that slots and the engine can both name it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from localimg.backends.base import RuntimeSettings
from localimg.config import default_models_path
from localimg.engine.lifecycle import Budget


@dataclass(frozen=True)
class EngineSettings:
    models_path: Path = field(default_factory=default_models_path)
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)
    max_queue: int = 16
    keep_alive: float | None = 300.0  # seconds an idle model stays loaded; None: forever
    max_loaded_models: int | None = None  # None: no limit; else LRU eviction of idle models
    memory_budget: Budget = field(default_factory=Budget)  # checked before each load
    max_batch: int = 1  # images per pipeline call across queued requests (batching.py)
    # The depth preprocessor's model, a folder or hub id (None: LOCALIMG_DEPTH_MODEL, else
    # Depth Anything V2 Small).
    depth_model: str | None = None
