"""`create_app(settings, engine)`: the Starlette application of `localimg serve`.

Everything the routes need lives on `app.state`, a typed `state.ServerState` (settings, engine,
output folder, which models are still preloading, whether shutdown has begun, video and install
jobs): no module globals, so tests build as many apps as they like. Every error leaves as
OpenAI's `{"error": {...}}` JSON, never a traceback or HTML.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from localimg._util.logs import LOG_FORMATS
from localimg.engine import as_backend_error, load_now
from localimg.errors import LocalimgError
from localimg.media.decode import ImageLimits
from localimg.media.fetch import FetchPolicy
from localimg.server import a1111, image_jobs, metrics, models, openai, videos, web_page
from localimg.server import localai as gallery_routes
from localimg.server.access_log import AccessLogMiddleware
from localimg.server.image_job import MAX_FINISHED_IMAGE_JOBS
from localimg.server.job_store import JobStore
from localimg.server.metrics import ServerMetrics
from localimg.server.security import ApiKeyMiddleware, BodyLimitMiddleware, NotFound
from localimg.server.state import ServerState
from localimg.server.videos import VideoStore

if TYPE_CHECKING:
    from localimg.engine import Engine

log = logging.getLogger("localimg.server")

FILES_PATH = "/generated"
EXPOSED_HEADERS = [
    "X-Request-Id",
    "X-Localimg-Seeds",
    "X-Localimg-Generation-Time",
    "X-Localimg-Replica",  # serve --ray: the replica that made the images
    "Retry-After",
]


@dataclass(frozen=True)
class ServerSettings:
    """What `localimg serve` was started with (besides the engine's own settings)."""

    api_keys: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = 64 * 1024 * 1024
    image_limits: ImageLimits = field(default_factory=ImageLimits)
    fetch_policy: FetchPolicy = field(default_factory=FetchPolicy)
    output_dir: Path | None = None  # None: a private temporary folder
    base_url: str | None = None  # None: built from each request's Host header
    url_ttl: float = 3600.0  # seconds a url-format image stays available
    request_timeout: float = 600.0  # one generation, queue wait included
    preload: tuple[str, ...] = ()
    a1111: bool = True  # the AUTOMATIC1111 API under /sdapi/v1 (`--no-a1111` turns it off)
    ui: bool = True  # the web page at / (`--no-ui` turns it off)
    public_metrics: bool = False  # /metrics without the API key (`--public-metrics`)
    log_format: str = "text"  # "text" or "json": one access line per request (`--log-format`)

    def __post_init__(self) -> None:
        if self.log_format not in LOG_FORMATS:
            raise ValueError(
                f"log_format must be one of {', '.join(LOG_FORMATS)}, not {self.log_format!r}"
            )


def error_response(exc: LocalimgError) -> JSONResponse:
    return JSONResponse(exc.to_openai(), status_code=exc.http_status, headers=exc.headers)


async def _localimg_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LocalimgError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    error: LocalimgError
    if exc.status_code == 404:
        error = NotFound(f"no route {request.method} {request.url.path}")
    else:
        error = LocalimgError(str(exc.detail), code="http_error")
        error.http_status = exc.status_code
        error.error_type = "invalid_request_error"
    return error_response(error)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error in %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(
        {
            "error": {
                "message": f"internal error: {type(exc).__name__}",
                "type": "server_error",
                "param": None,
                "code": "internal_error",
            }
        },
        status_code=500,
    )


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
    names = await asyncio.to_thread(models.served_names, state)
    if not names:
        problems.append(f"no models in {engine.settings.models_path}")
    for name, slot in engine.slots.items():
        if slot.queue_depth >= engine.settings.max_queue:
            problems.append(f"model {name!r} has a full queue")
    body = {"status": "ready" if not problems else "not ready", "problems": problems}
    return JSONResponse(body, status_code=503 if problems else 200)


async def generated_file(request: Request) -> Response:
    """A url-format image; names are random tokens, so they cannot be guessed or escape."""
    name = request.path_params["name"]
    folder: Path = request.app.state.output_dir
    path = folder / name
    if "/" in name or name.startswith(".") or not path.is_file():
        raise NotFound("no such image (it may have expired)")
    return FileResponse(path, headers={"Cache-Control": "private, max-age=3600"})


async def _cleanup_loop(folder: Path, ttl: float) -> None:
    """Delete url-format images older than the TTL, checking every so often."""
    interval = max(1.0, min(60.0, ttl / 4))
    while True:
        await asyncio.sleep(interval)
        await asyncio.to_thread(remove_expired, folder, ttl)


def remove_expired(folder: Path, ttl: float) -> int:
    cutoff = time.time() - ttl
    removed = 0
    for path in folder.iterdir():
        try:
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except OSError:
            continue
    return removed


async def _preload(app: Starlette, name: str) -> None:
    state = app.state
    try:
        config = await asyncio.to_thread(state.engine.resolve, name)
        slot = state.engine.slot_for(config)
        await asyncio.to_thread(load_now, slot)
        log.info("model %s is loaded", name)
    except LocalimgError as exc:
        log.error("preloading %s failed: %s", name, exc.message)
        state.failed[name] = exc.message
    except Exception as exc:
        log.exception("preloading %s failed", name)
        state.failed[name] = as_backend_error(exc).message
    finally:
        state.preloading.discard(name)


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    state = app.state
    settings: ServerSettings = state.settings
    temp: tempfile.TemporaryDirectory[str] | None = None
    if settings.output_dir is None:
        temp = tempfile.TemporaryDirectory(prefix="localimg-serve-")
        state.output_dir = Path(temp.name)
    else:
        state.output_dir = settings.output_dir
        state.output_dir.mkdir(parents=True, exist_ok=True)
    state.tasks.append(asyncio.create_task(_cleanup_loop(state.output_dir, settings.url_ttl)))
    for name in settings.preload:
        state.preloading.add(name)
        state.tasks.append(asyncio.create_task(_preload(app, name)))
    try:
        yield
    finally:
        if state.metrics is not None:
            state.engine.events.remove(state.metrics)
        state.close()
        await asyncio.to_thread(state.engine.close)
        if temp is not None:
            temp.cleanup()
        log.info("localimg serve stopped")


def create_app(settings: ServerSettings, engine: Engine) -> Starlette:
    """The server application around an engine (which the app closes when it shuts down)."""
    server_metrics = ServerMetrics(engine)
    engine.events.add(server_metrics)  # outcomes, loads, 429s, restarts; removed at shutdown
    middleware = [
        Middleware(AccessLogMiddleware, metrics=server_metrics, log_format=settings.log_format)
    ]
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_methods=["GET", "POST", "DELETE", "OPTIONS"],  # DELETE: cancel a job
                allow_headers=["Authorization", "Content-Type"],
                expose_headers=EXPOSED_HEADERS,
                max_age=600,
            )
        )
    middleware += [
        Middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes),
        Middleware(ApiKeyMiddleware, keys=settings.api_keys),
    ]
    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route(FILES_PATH + "/{name}", generated_file, methods=["GET"]),
        *gallery_routes.routes(),
        *openai.routes(),
        *models.routes(),
        *videos.routes(),
        *image_jobs.routes(),
        *(a1111.routes() if settings.a1111 else []),
        *metrics.routes(),
        *(web_page.routes() if settings.ui else []),
    ]
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={
            LocalimgError: _localimg_error,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
        lifespan=_lifespan,
    )
    # One typed object instead of Starlette's free-form State; routes read `request.app.state`.
    app.state = ServerState(  # type: ignore[assignment]
        settings=settings,
        engine=engine,
        output_dir=settings.output_dir,
        files_path=FILES_PATH,  # where output_dir is served: response URLs point here
        videos=VideoStore(ttl=settings.url_ttl),
        image_jobs=JobStore(max_finished=MAX_FINISHED_IMAGE_JOBS, ttl=settings.url_ttl),
        metrics=server_metrics,
    )
    return app
