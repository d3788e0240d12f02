"""/v1/models: the models served here, each with its state (loaded, queued, memory, keep-alive)
and the precision it runs with here (the device and dtype, and why: backends.model_precision).

OpenAI's model object with localimg's facts added; LocalAI's load and unload routes answer with
the same entry. Which models are listed is `served.py`'s rule (valid YAML models and preloads).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from localimg.config import ModelConfig, resolve_model, scan_models
from localimg.errors import LocalimgError, ModelNotFound

if TYPE_CHECKING:
    from localimg.engine import Engine


def precision_of(engine: Engine, config: ModelConfig | None) -> dict[str, Any] | None:
    from localimg.engine.precision import precision_report

    return None if config is None else precision_report(config, engine.settings.runtime)


def model_entry(
    state: Any, name: str, created: int, backend: str | None, config: ModelConfig | None = None
) -> dict[str, Any]:
    engine: Engine = state.engine
    slot = engine.slots.get(name)
    entry: dict[str, Any] = {
        "id": name,
        "object": "model",
        "created": created,
        "owned_by": "localimg",
        "backend": backend,
        "loaded": slot is not None and slot.state == "loaded",
        "state": slot.state if slot is not None else "unloaded",
        "queued": slot.queue_depth if slot is not None else 0,
        "precision": precision_of(engine, config),
    }
    info = getattr(slot, "info", None)
    if callable(info):
        entry["worker"] = info()
    entry.update(_lifecycle_facts(engine, slot))
    return entry


def _lifecycle_facts(engine: Engine, slot: Any) -> dict[str, Any]:
    """Memory, keep-alive and use of a model's slot (lifecycle.py), for /v1/models."""
    from localimg.engine.lifecycle import keep_alive_for

    if slot is None:
        return {"memory_bytes": None, "keep_alive": engine.settings.keep_alive}
    need = getattr(slot, "memory_need", None)
    loaded = need is not None or slot.state == "loaded"
    idle = time.monotonic() - slot.last_used if loaded and not slot.busy else 0.0
    return {
        "memory_bytes": slot.memory_bytes if loaded else None,
        "memory_device": need.where if need is not None else None,
        "keep_alive": keep_alive_for(slot.config, engine.settings.keep_alive),
        "idle_seconds": round(idle, 1),
        "busy": slot.busy,
        "loads": getattr(slot, "loads", None),
    }


def model_list(state: Any) -> list[dict[str, Any]]:
    engine: Engine = state.engine
    entries = []
    seen = set()
    for entry in scan_models(engine.settings.models_path):
        if entry.config is None:
            continue
        seen.add(entry.name)
        created = int(entry.path.stat().st_mtime) if entry.path.exists() else 0
        entries.append(model_entry(state, entry.name, created, entry.config.backend, entry.config))
    for name in state.settings.preload:
        if name not in seen:
            try:
                config: ModelConfig | None = resolve_model(name, engine.settings.models_path)
            except LocalimgError:
                config = None
            backend = config.backend if config is not None else None
            entries.append(model_entry(state, name, 0, backend, config))
    return entries


async def list_models(request: Request) -> Response:
    data = await asyncio.to_thread(model_list, request.app.state)
    return JSONResponse({"object": "list", "data": data})


async def get_model(request: Request) -> Response:
    name = request.path_params["model"]
    data = await asyncio.to_thread(model_list, request.app.state)
    for entry in data:
        if entry["id"] == name:
            return JSONResponse(entry)
    known = ", ".join(e["id"] for e in data) or "none"
    raise ModelNotFound(f"model {name!r} is not served here; available models: {known}")


def routes() -> list[Route]:
    return [
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", get_model, methods=["GET"]),
    ]
