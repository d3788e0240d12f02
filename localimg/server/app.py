"""`create_app(settings, engine)`: the Starlette application of `localimg serve`.

Everything the routes need lives on `app.state`, a typed `state.ServerState` (settings, engine,
output folder, which models are still preloading, whether shutdown has begun, video and install
jobs): no module globals, so tests build as many apps as they like. Every error leaves as
OpenAI's `{"error": {...}}` JSON, never a traceback or HTML (errors.py). Each API family's
routes live in their own folder (openai/, jobs/, a1111/, localai/, ui/), the middleware in http/.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.middleware import Middleware

from localimg._util.logs import LOG_FORMATS
from localimg.engine import as_backend_error, load_now
from localimg.errors import LocalimgError
from localimg.media.decode import ImageLimits
from localimg.media.fetch import FetchPolicy
from localimg.server import files, health, metrics, openapi
from localimg.server.a1111 import routes as a1111
from localimg.server.a1111.schemas import unauthorized as a1111_unauthorized
from localimg.server.errors import exception_handlers
from localimg.server.http.access_log import AccessLogMiddleware
from localimg.server.http.cors import cors_middleware
from localimg.server.http.keys import PUBLIC_PATHS, ApiKeyMiddleware
from localimg.server.http.limits import BodyLimitMiddleware
from localimg.server.jobs import images as image_jobs
from localimg.server.jobs import videos
from localimg.server.jobs.image_job import MAX_FINISHED_IMAGE_JOBS
from localimg.server.jobs.store import JobStore
from localimg.server.jobs.videos import VideoStore
from localimg.server.localai import routes as localai
from localimg.server.metrics import ServerMetrics
from localimg.server.openai import images as openai
from localimg.server.openai import models, upscale
from localimg.server.state import ServerState
from localimg.server.ui import web_page

if TYPE_CHECKING:
    from localimg.engine import Engine

log = logging.getLogger("localimg.server")


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
    state.tasks.append(asyncio.create_task(files.cleanup_loop(state.output_dir, settings.url_ttl)))
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


def public_paths(settings: ServerSettings) -> tuple[str, ...]:
    """What ApiKeyMiddleware lets through without the key (http/keys.py), for these settings."""
    return (*PUBLIC_PATHS, *(["/metrics"] if settings.public_metrics else []))


def create_app(settings: ServerSettings, engine: Engine) -> Starlette:
    """The server application around an engine (which the app closes when it shuts down)."""
    server_metrics = ServerMetrics(engine)
    engine.events.add(server_metrics)  # outcomes, loads, 429s, restarts; removed at shutdown
    middleware = [
        Middleware(AccessLogMiddleware, metrics=server_metrics, log_format=settings.log_format)
    ]
    if settings.cors_origins:
        middleware.append(cors_middleware(settings.cors_origins))
    middleware += [
        Middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes),
        Middleware(
            ApiKeyMiddleware,
            keys=settings.api_keys,
            public=public_paths(settings),
            shapes={"/sdapi/": a1111_unauthorized, "/controlnet/": a1111_unauthorized},
        ),
    ]
    routes = [
        *health.routes(),
        *files.routes(),
        *localai.routes(),
        *openai.routes(),
        *upscale.routes(),
        *models.routes(),
        *videos.routes(),
        *image_jobs.routes(),
        *(a1111.routes() if settings.a1111 else []),
        *metrics.routes(),
        *openapi.routes(),
        *(web_page.routes() if settings.ui else []),
    ]
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers=exception_handlers(),
        lifespan=_lifespan,
    )
    # One typed object instead of Starlette's free-form State; routes read `request.app.state`.
    app.state = ServerState(  # type: ignore[assignment]
        settings=settings,
        engine=engine,
        output_dir=settings.output_dir,
        files_path=files.FILES_PATH,  # where output_dir is served: response URLs point here
        videos=VideoStore(ttl=settings.url_ttl),
        image_jobs=JobStore(max_finished=MAX_FINISHED_IMAGE_JOBS, ttl=settings.url_ttl),
        metrics=server_metrics,
    )
    return app
