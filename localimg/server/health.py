"""/healthz and /readyz: what an orchestrator probes, open without an API key.

Alive and ready are two questions: a process that is still preloading its models, shutting
down, or whose queues are full answers /healthz but not /readyz, so a load balancer sends it no
traffic without restarting it.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from localimg.server.served import served_names

if TYPE_CHECKING:
    from localimg.engine import Engine


async def healthz(request: Request) -> Response:
    """The process is alive and its event loop answers."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready: not shutting down, no preload pending or failed, models found, queues not full."""
    state = request.app.state
    engine: Engine = state.engine
    problems: list[str] = []
    if state.shutting_down:
        problems.append("shutting down")
    problems += [f"model {name!r} is still loading" for name in sorted(state.preloading)]
    problems += [f"model {name!r} failed to load: {msg}" for name, msg in state.failed.items()]
    names = await asyncio.to_thread(served_names, state)
    if not names:
        problems.append(f"no models in {engine.settings.models_path}")
    for name, slot in engine.slots.items():
        if slot.queue_depth >= engine.settings.max_queue:
            problems.append(f"model {name!r} has a full queue")
    body = {"status": "ready" if not problems else "not ready", "problems": problems}
    return JSONResponse(body, status_code=503 if problems else 200)


def routes() -> list[Route]:
    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]
