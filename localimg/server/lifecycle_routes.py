"""POST /models/{name}/load and /models/{name}/unload: warm a model up, or give its memory back.

Loading goes through the same admission as a request (lifecycle.py): idle models may be evicted
to make room, and a model that cannot fit answers 507 (or 503 while busy models hold the memory)
instead of the server being OOM-killed. Unloading waits for the model's running job, then ends its
worker process. Both answer the model's `/v1/models` entry. Like the gallery routes they change
what the server holds, so they need the API key when one is configured.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from localimg.server import openai
from localimg.server.localai import _check_key

if TYPE_CHECKING:
    from localimg.engine import Engine


def _entry(state: Any, name: str) -> dict[str, Any]:
    for entry in openai._model_list(state):
        if entry["id"] == name:
            return entry
    return {"id": name}


async def load(request: Request) -> Response:
    _check_key(request)
    state = request.app.state
    config = await asyncio.to_thread(openai.served_config, state, request.path_params["name"])
    openai.check_available(state, config.name)
    engine: Engine = state.engine
    await asyncio.to_thread(engine.load, config.name)
    return JSONResponse(await asyncio.to_thread(_entry, state, config.name))


async def unload(request: Request) -> Response:
    _check_key(request)
    state = request.app.state
    config = await asyncio.to_thread(openai.served_config, state, request.path_params["name"])
    engine: Engine = state.engine
    await asyncio.to_thread(engine.unload, config.name)
    return JSONResponse(await asyncio.to_thread(_entry, state, config.name))


def routes() -> list[Route]:
    return [
        Route("/models/{name}/load", load, methods=["POST"]),
        Route("/models/{name}/unload", unload, methods=["POST"]),
    ]
