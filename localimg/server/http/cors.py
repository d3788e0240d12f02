"""CORS for `--cors-origin`: which browser pages may call the API, and what they may read.

Off unless origins are given. The exposed headers are the ones a browser client needs from a
generation (seeds, timing, the replica under `serve --ray`, Retry-After on a 429 or 503).
"""

from __future__ import annotations

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

EXPOSED_HEADERS = [
    "X-Request-Id",
    "X-Localimg-Seeds",
    "X-Localimg-Generation-Time",
    "X-Localimg-Replica",  # serve --ray: the replica that made the images
    "Retry-After",
]


def cors_middleware(origins: tuple[str, ...]) -> Middleware:
    return Middleware(
        CORSMiddleware,
        allow_origins=list(origins),
        allow_methods=["GET", "POST", "DELETE", "OPTIONS"],  # DELETE: cancel a job
        allow_headers=["Authorization", "Content-Type"],
        expose_headers=EXPOSED_HEADERS,
        max_age=600,
    )
