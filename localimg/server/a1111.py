"""The AUTOMATIC1111 API under /sdapi/v1 (issue 14; being built)."""

from __future__ import annotations

from starlette.routing import BaseRoute


def routes() -> list[BaseRoute]:
    return []
