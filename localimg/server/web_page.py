"""The web page at `/`: static HTML, CSS and JavaScript shipped as package data (server/page/)."""

from __future__ import annotations

from starlette.routing import BaseRoute


def routes() -> list[BaseRoute]:
    return []
