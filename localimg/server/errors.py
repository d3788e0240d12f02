"""How an error leaves the server: one place for the exception handlers every route shares.

Every error leaves as OpenAI's `{"error": {...}}` JSON, never a traceback or HTML: a
`LocalimgError` in its own shape, Starlette's HTTP errors (an unknown route, a wrong method)
mapped to it, anything unexpected as a 500 that names only the exception's type (the traceback
goes to the log). A1111's routes answer in A1111's shapes themselves (a1111/schemas.py), and
the middleware in http/ writes its 401 and 413 directly, before any route runs.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from localimg.errors import LocalimgError

log = logging.getLogger("localimg.server")

Handler = Callable[[Request, Exception], Awaitable[Response]]


class NotFound(LocalimgError):
    """A path that names nothing (an unknown route, an expired image)."""

    http_status = 404
    error_type = "invalid_request_error"
    default_code = "not_found"


def error_response(exc: LocalimgError) -> JSONResponse:
    return JSONResponse(exc.to_openai(), status_code=exc.http_status, headers=exc.headers)


async def localimg_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LocalimgError)
    return error_response(exc)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    error: LocalimgError
    if exc.status_code == 404:
        error = NotFound(f"no route {request.method} {request.url.path}")
    else:
        error = LocalimgError(str(exc.detail), code="http_error")
        error.http_status = exc.status_code
        error.error_type = "invalid_request_error"
    return error_response(error)


async def unexpected(request: Request, exc: Exception) -> Response:
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


def exception_handlers() -> dict[type[Exception], Handler]:
    """Starlette's `exception_handlers` for the app (the most specific class wins)."""
    return {LocalimgError: localimg_error, HTTPException: http_error, Exception: unexpected}
