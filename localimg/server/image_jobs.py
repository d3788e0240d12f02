"""Image jobs: `POST /v1/images/jobs`, poll, stream events, cancel (issue 14; being built)."""

from __future__ import annotations

from starlette.routing import BaseRoute


def routes() -> list[BaseRoute]:
    return []
