"""Prometheus metrics of the server and its model workers (`GET /metrics`)."""

from __future__ import annotations

from starlette.routing import Route


def routes() -> list[Route]:
    return []
