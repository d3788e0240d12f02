"""Running the app under uvicorn, with a graceful stop on SIGTERM/SIGINT.

On the first signal the app is marked as shutting down (new generation requests get 503, `/readyz`
fails so a load balancer stops sending), uvicorn stops accepting connections and waits up to the
grace period for running requests; then the lifespan closes the engine, cancelling what is left.
"""

from __future__ import annotations

from types import FrameType
from typing import Any

import uvicorn
from starlette.applications import Starlette


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self._app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._app.state.shutting_down = True
        super().handle_exit(sig, frame)


def build_server(
    app: Starlette, host: str, port: int, *, grace: float = 30.0, **options: Any
) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        access_log=False,  # localimg.access logs each request with its id and generation time
        log_config=None,  # keep the logging set up by the CLI
        timeout_graceful_shutdown=int(grace),
        lifespan="on",
        **options,
    )
    return _Server(config, app)


def startup_line(host: str, port: int, models_path: Any, names: list[str], keys: int) -> str:
    where = f"[{host}]" if ":" in host else host
    models = ", ".join(names) if names else "none yet (add YAML files there)"
    auth = f", API key required ({keys} key{'s' if keys != 1 else ''})" if keys else ""
    return (
        f"localimg serve: listening on http://{where}:{port}{auth}; "
        f"models in {models_path}: {models}"
    )
