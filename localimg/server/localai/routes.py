"""LocalAI's model-management routes: GET /models/available, POST /models/apply, GET /models/jobs.

Installing takes minutes, so `/models/apply` answers at once with a job id and a status URL, and
`/models/jobs/{uuid}` reports progress in LocalAI's shape. These routes change the models dir,
so they need the API key when one is configured (ApiKeyMiddleware, as every route off its public
list; its 401 is OpenAI's error object, as LocalAI answers). The galleries are the shipped index
plus `LOCALIMG_GALLERIES`; an installed model is served at once (the engine reads the models
dir).

POST /models/{name}/load and /models/{name}/unload warm a served model up, or give its memory
back. Loading goes through the same admission as a request (engine lifecycle): idle models may
be evicted to make room, and a model that cannot fit answers 507 (or 503 while busy models hold
the memory) instead of the server being OOM-killed. Unloading waits for the model's running
job, then ends its worker process. Both answer the model's `/v1/models` entry.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from localimg.errors import InvalidRequest
from localimg.server.errors import NotFound
from localimg.server.openai.models import model_list
from localimg.server.openapi import describe
from localimg.server.served import check_available, served_config

if TYPE_CHECKING:
    from localimg.engine import Engine


class ApplyBody(BaseModel):
    """POST /models/apply (checked by hand in `apply`, for LocalAI's messages; this model is
    what /openapi.json shows and where the accepted names come from)."""

    id: str  # a gallery model name, or gallery@name
    name: str | None = None  # the name to install it under


APPLY_KEYS = tuple(ApplyBody.model_fields)


def _catalog() -> Any:
    from localimg.gallery.catalog import Catalog, default_sources

    return Catalog.load(default_sources())


def _jobs(request: Request) -> Any:
    """The app's install jobs (created on first use; the event loop makes this race-free)."""
    state = request.app.state
    jobs = state.install_jobs
    if jobs is None:
        from localimg.gallery.install import InstallJobs

        jobs = InstallJobs(state.engine.settings.models_path, _catalog)
        state.install_jobs = jobs
    return jobs


async def available(request: Request) -> Response:
    """The image models of the galleries, each marked installed or not."""
    from localimg.config import scan_models

    models_path = request.app.state.engine.settings.models_path
    catalog = await asyncio.to_thread(_catalog)
    installed = {e.name for e in await asyncio.to_thread(scan_models, models_path)}
    urls = {s.name: s.url for s in catalog.sources}
    body = [
        {
            **entry.summary(),
            "gallery": {"name": entry.gallery, "url": urls.get(entry.gallery)},
            "id": entry.qualified,
            "installed": entry.name in installed,
        }
        for entry in catalog.image_entries()
    ]
    return JSONResponse(body)


@describe(body=ApplyBody)
async def apply(request: Request) -> Response:
    """Start installing a gallery model: `{"id": "name" or "gallery@name", "name": optional}`."""
    try:
        body = json.loads(await request.body() or b"null")
    except ValueError:
        raise InvalidRequest('the body must be JSON: {"id": "<gallery model>"}') from None
    if not isinstance(body, dict):
        raise InvalidRequest('the body must be a JSON object: {"id": "<gallery model>"}')
    unknown = sorted(set(body) - set(APPLY_KEYS))
    if unknown:
        raise InvalidRequest(
            f"unsupported field(s) {', '.join(unknown)}: localimg installs by gallery name; "
            f"allowed fields: {', '.join(APPLY_KEYS)}",
            param=unknown[0],
        )
    ref = body.get("id")
    if not isinstance(ref, str) or not ref.strip():
        raise InvalidRequest("id is required: a gallery model name or gallery@name", param="id")
    name = body.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise InvalidRequest("name must be a non-empty string", param="name")
    jobs = _jobs(request)
    job = await asyncio.to_thread(jobs.submit, ref.strip(), name)
    status_url = str(request.url_for("model_job", uuid=job.id))
    return JSONResponse({"uuid": job.id, "status": status_url})


async def job_status(request: Request) -> Response:
    job = _jobs(request).get(request.path_params["uuid"])
    if job is None:
        raise NotFound(f"no install job {request.path_params['uuid']!r}")
    return JSONResponse(job.to_localai())


async def all_jobs(request: Request) -> Response:
    return JSONResponse({job.id: job.to_localai() for job in _jobs(request).all()})


# -- /models/{name}/load and /unload: a served model loaded or unloaded now -----------------


def _model_entry(state: Any, name: str) -> dict[str, Any]:
    for entry in model_list(state):
        if entry["id"] == name:
            return entry
    return {"id": name}


async def load(request: Request) -> Response:
    state = request.app.state
    config = await asyncio.to_thread(served_config, state, request.path_params["name"])
    check_available(state, config.name)
    engine: Engine = state.engine
    await asyncio.to_thread(engine.load, config.name)
    return JSONResponse(await asyncio.to_thread(_model_entry, state, config.name))


async def unload(request: Request) -> Response:
    state = request.app.state
    config = await asyncio.to_thread(served_config, state, request.path_params["name"])
    engine: Engine = state.engine
    await asyncio.to_thread(engine.unload, config.name)
    return JSONResponse(await asyncio.to_thread(_model_entry, state, config.name))


def routes() -> list[Route]:
    return [
        Route("/models/available", available, methods=["GET"]),
        Route("/models/apply", apply, methods=["POST"]),
        Route("/models/jobs", all_jobs, methods=["GET"]),
        Route("/models/jobs/{uuid}", job_status, methods=["GET"], name="model_job"),
        Route("/models/{name}/load", load, methods=["POST"]),
        Route("/models/{name}/unload", unload, methods=["POST"]),
    ]
