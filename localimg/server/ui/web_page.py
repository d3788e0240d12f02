"""The web page at `/`: static HTML, CSS and JavaScript shipped as package data (ui/page/).

No build step and nothing from the internet: `/` is index.html, `/ui/{name}` the page's other
files (app.js and its modules, style.css, icon.svg), read from the installed package. The page
talks to the server only through the public API (`/v1/models`, `/v1/images/jobs`), sending the
API key itself, so `/` and the static files stay open like `/healthz` (on ApiKeyMiddleware's
public list). `/ui/samplers?backend=...`, which the page fetches with the key, lists the
sampler names the `scheduler` field of a generation takes on that backend's engine, with
A1111's labels (a1111/samplers.py has the one table of them).

Every file is answered with an ETag and `Cache-Control: no-cache`: a browser revalidates (a 304
when nothing changed), so an upgraded server never runs an old page. A Content-Security-Policy
keeps the page to its own origin (no CDN, no web fonts, no third-party requests).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from importlib import resources

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from localimg.server.a1111.samplers import DIFFUSERS_KARRAS, SAMPLERS, engine_of
from localimg.server.errors import NotFound

PAGE_PACKAGE = "localimg.server.ui"
PAGE_FOLDER = "page"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
SAFE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*\.(html|css|js|svg)$")
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
    "style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def read_page_file(name: str) -> bytes:
    """One file of the page folder; NotFound for anything else (no paths, no other kinds)."""
    if not SAFE_NAME.match(name):
        raise NotFound(f"no page file {name!r}")
    path = resources.files(PAGE_PACKAGE).joinpath(PAGE_FOLDER, name)
    try:
        return path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise NotFound(f"no page file {name!r}") from None


async def _file_response(request: Request, name: str) -> Response:
    data = await asyncio.to_thread(read_page_file, name)
    etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "Cache-Control": "no-cache", **SECURITY_HEADERS}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    suffix = name[name.rindex(".") :]
    return Response(data, media_type=CONTENT_TYPES[suffix], headers=headers)


async def index(request: Request) -> Response:
    return await _file_response(request, "index.html")


async def page_file(request: Request) -> Response:
    return await _file_response(request, request.path_params["name"])


def sampler_choices(backend: str) -> list[dict[str, str]]:
    """What the page's sampler picker offers for a model of `backend`: A1111's label and the
    name the `scheduler` field takes on that engine (diffusers-style names, or
    stable-diffusion.cpp's sample methods)."""
    engine = engine_of(backend)
    choices: list[dict[str, str]] = []
    for sampler in SAMPLERS:
        value = sampler.diffusers if engine == "diffusers" else sampler.ggml
        if value is None:
            continue
        choices.append({"label": sampler.name, "value": value})
        if engine == "diffusers" and value in DIFFUSERS_KARRAS:
            choices.append({"label": f"{sampler.name} Karras", "value": "k_" + value})
    return choices


async def samplers(request: Request) -> Response:
    """GET /ui/samplers?backend=diffusers: [{label, value}] for the page's sampler picker."""
    backend = request.query_params.get("backend", "").strip() or "diffusers"
    return JSONResponse(
        {"engine": engine_of(backend), "data": sampler_choices(backend)},
        headers={"Cache-Control": "no-cache"},
    )


def routes() -> list[BaseRoute]:
    return [
        Route("/", index, methods=["GET", "HEAD"]),
        Route("/ui/samplers", samplers, methods=["GET"]),
        Route("/ui/{name}", page_file, methods=["GET", "HEAD"]),
    ]
