"""One test server for every server test: `create_app` on a real uvicorn (in a thread), or the
same app in process through Starlette's TestClient, with the handles the tests look into.

Why one: the server tests each used to declare their own `Served` and start-up code, which
drifted apart (timeouts, how the models dir was built, what was kept to look at). A module now
says what it needs as a `ServeSpec` (models, worker processes or not, engine and server
settings, an API key) and tests/server/conftest.py starts it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import openai
from starlette.applications import Starlette
from starlette.testclient import TestClient

from localimg.engine import (
    Engine,
    EngineSettings,
    Job,
    WorkerOptions,
    WorkerSlot,
    worker_slot_factory,
)
from localimg.requests import ImageRequest
from localimg.server.app import ServerSettings, create_app
from localimg.server.state import ServerState
from tests.support.server_support import serve_in_thread, write_model

# A models dir as a module wants it: a ready folder, or a builder that fills a fresh one.
Models = Path | Callable[[Path], Path]


@dataclass(frozen=True)
class ServeSpec:
    """What a test server runs: its models, where they run, and its settings.

    `workers=True` runs each model in a worker process (as `localimg serve` does); leave it off
    unless the process boundary is what the tests look at, since each worker imports torch.
    """

    models: Models
    workers: bool = False
    cancel_grace: float = 20.0  # worker processes: seconds a cancelled job has before a kill
    engine: Mapping[str, Any] = field(default_factory=dict)  # EngineSettings beyond the path
    server: Mapping[str, Any] = field(default_factory=dict)  # ServerSettings
    api_key: str | None = None  # sent by Served's helpers; added to the server's keys
    model: str = "tiny"  # the model the helpers and tests name by default
    in_process: bool = False  # Starlette's TestClient instead of uvicorn on a socket


@dataclass
class Served:
    """A running test app: its URL (or in-process client), engine, state and output folder."""

    url: str
    app: Starlette
    engine: Engine
    output_dir: Path
    model: str = "tiny"
    headers: dict[str, str] = field(default_factory=dict)  # the API key, when there is one
    submitted: list[Job] = field(default_factory=list)  # every engine job accepted, in order
    on_submit: Callable[[Job], None] | None = None  # a test's hook on each accepted job
    http: TestClient | None = None  # set in process, None on a real socket

    @property
    def state(self) -> ServerState:
        state: ServerState = self.app.state  # type: ignore[assignment]
        return state

    def slot(self, name: str | None = None) -> WorkerSlot:
        slot = self.engine.slots[name or self.model]
        assert isinstance(slot, WorkerSlot)
        return slot

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """`method path` with the key's header (unless the caller sends headers)."""
        kwargs.setdefault("headers", self.headers)
        kwargs.setdefault("timeout", 300)
        if self.http is not None:
            kwargs.pop("timeout")
            # TestClient answers httpx.Response (its own import of httpx, to mypy)
            return cast(httpx.Response, self.http.request(method, path, **kwargs))
        return httpx.request(method, f"{self.url}{path}", **kwargs)

    def post(self, path: str, body: Mapping[str, Any], **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, json=dict(body), **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def client(self) -> openai.OpenAI:
        """The official client on this server (a real socket only)."""
        key = self.headers.get("Authorization", "Bearer none").removeprefix("Bearer ")
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0)

    def image_jobs(self) -> list[Any]:
        """The server's image jobs, oldest first."""
        return sorted(self.state.image_jobs.values(), key=lambda e: e.created_at)


def tiny_models(tiny_sd: Path, **extra: str) -> Callable[[Path], Path]:
    """A builder of a models dir with `tiny.yaml` (and `name: extra YAML` for each of extra)."""

    def build(folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        write_model(folder, "tiny", tiny_sd)
        for name, yaml in extra.items():
            write_model(folder, name, tiny_sd, extra=yaml)
        return folder

    return build


def build_app(spec: ServeSpec, root: Path) -> tuple[Starlette, Engine, Path]:
    """The app, its engine and its output folder, as `spec` says (nothing started yet)."""
    models = spec.models if isinstance(spec.models, Path) else spec.models(root / "models")
    factory = (
        worker_slot_factory(WorkerOptions(cancel_grace=spec.cancel_grace)) if spec.workers else None
    )
    engine = Engine(EngineSettings(models_path=models, **spec.engine), slot_factory=factory)
    server: dict[str, Any] = {"output_dir": root / "out", **spec.server}
    if spec.api_key is not None:
        server["api_keys"] = (spec.api_key, *server.get("api_keys", ()))
    app = create_app(ServerSettings(**server), engine)
    return app, engine, server["output_dir"]


def _served(spec: ServeSpec, app: Starlette, engine: Engine, output_dir: Path) -> Served:
    headers = {"Authorization": f"Bearer {spec.api_key}"} if spec.api_key else {}
    served = Served("", app, engine, output_dir, model=spec.model, headers=headers)
    submit = engine.submit

    def recording(*args: Any, **kwargs: Any) -> Job:
        job = submit(*args, **kwargs)
        served.submitted.append(job)
        if served.on_submit is not None:
            served.on_submit(job)
        return job

    engine.submit = recording  # type: ignore[method-assign]
    return served


@contextmanager
def serve(spec: ServeSpec, root: Path) -> Iterator[Served]:
    """`spec` on a real uvicorn server (127.0.0.1, a free port); the engine closed after."""
    app, engine, output_dir = build_app(spec, root)
    served = _served(spec, app, engine, output_dir)
    try:
        with serve_in_thread(app) as url:
            served.url = url
            yield served
    finally:
        engine.close()


@contextmanager
def serve_in_process(spec: ServeSpec, root: Path) -> Iterator[Served]:
    """`spec` in process through Starlette's TestClient (lifespan run): no socket, no thread
    of uvicorn's, for the routes whose answers do not depend on a real connection."""
    app, engine, output_dir = build_app(spec, root)
    served = _served(spec, app, engine, output_dir)
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            served.url = str(client.base_url).rstrip("/")
            served.http = client
            yield served
    finally:
        engine.close()


def captured(response: Any, received: list[ImageRequest]) -> ImageRequest:
    """The one request the `received` fixture (tests/server/conftest.py) caught for this
    response, which must be that fixture's 400."""
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "captured", response.text
    assert len(received) == 1
    return received[0]
