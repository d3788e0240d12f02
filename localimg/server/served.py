"""The models this server answers for: resolving a request's `model` (every API family's routes).

Only valid YAML models in the models dir and the preloads are served, so a request's `model`
can never reach files outside the models dir. The /v1/models listing is openai/models.py.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from localimg.config import DEFAULT_MODEL_ENV, default_model_ref, scan_models
from localimg.errors import InvalidRequest, ModelLoading, ModelNotFound

if TYPE_CHECKING:
    from localimg.config import ModelConfig
    from localimg.engine import Engine


def served_names(state: Any) -> list[str]:
    """The models this server answers for: valid YAML models in the models dir, and preloads.

    Anything else (paths, hub ids) is refused, so a request's `model` can never reach files
    outside the models dir.
    """
    engine: Engine = state.engine
    names = [e.name for e in scan_models(engine.settings.models_path) if e.config is not None]
    names += [name for name in state.settings.preload if name not in names]
    return names


def served_config(state: Any, ref: str | None) -> ModelConfig:
    """Resolve a request's `model` (blocking: reads YAML files)."""
    engine: Engine = state.engine
    names = served_names(state)
    if not ref:
        if not names:
            raise ModelNotFound(
                f"no models are configured in {engine.settings.models_path}; add a YAML file",
                param="model",
            )
        if len(names) == 1:
            ref = names[0]
        elif os.environ.get(DEFAULT_MODEL_ENV):
            ref = default_model_ref(engine.settings.models_path)
        else:
            raise InvalidRequest(
                f"several models are served ({', '.join(names)}): name one in the 'model' field",
                param="model",
            )
    if ref not in names:
        known = ", ".join(names) if names else "none"
        raise ModelNotFound(
            f"model {ref!r} is not served here; available models: {known}", param="model"
        )
    return engine.resolve(ref)


def check_available(state: Any, name: str) -> None:
    if state.shutting_down:
        raise ModelLoading("the server is shutting down", headers={"Retry-After": "30"})
    if name in state.preloading:
        raise ModelLoading(
            f"model {name!r} is still loading; try again shortly",
            param="model",
            code="model_loading",
            headers={"Retry-After": "10"},
        )
