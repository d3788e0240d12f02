"""The server tests' shared fixtures: one `served` server per module, built from the module's
`serve_spec`, and the gallery index the model routes install from.

A module that needs other models or settings overrides `serve_spec` (module scope); a module
that needs two servers starts the second with tests.support.served.serve itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localimg.errors import InvalidRequest
from localimg.requests import ImageRequest
from tests.support.fake_hosts import FakeHosts
from tests.support.gallery_index import write_tiny_hub_index
from tests.support.served import Served, ServeSpec, serve, serve_in_process, tiny_models


@pytest.fixture(scope="module")
def serve_spec(tiny_sd: Path) -> ServeSpec:
    """The default: `tiny` (the tiny diffusers pipeline, 4 steps) run in process."""
    return ServeSpec(models=tiny_models(tiny_sd))


@pytest.fixture(scope="module")
def served(serve_spec: ServeSpec, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The module's server as its `serve_spec` says: real uvicorn, or in process (TestClient)
    where the spec asks; shut down after the module."""
    start = serve_in_process if serve_spec.in_process else serve
    with start(serve_spec, tmp_path_factory.mktemp("served")) as server:
        yield server


@pytest.fixture
def received(served: Served, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[ImageRequest]]:
    """The requests the engine receives, each refused right there (400, param "captured"):
    what a route made of a body, without running a model (served.captured reads one)."""
    seen: list[ImageRequest] = []

    def capture(model: str | None, request: ImageRequest, *args: Any, **kwargs: Any) -> Any:
        seen.append(request)
        raise InvalidRequest("captured", param="captured")

    monkeypatch.setattr(served.engine, "submit", capture)
    yield seen


@pytest.fixture
def index(hub: FakeHosts, tmp_path: Path, tiny_sd: Path) -> Path:
    """A gallery index with `tiny-hub` (the tiny pipeline, fetched from the fake hub)."""
    return write_tiny_hub_index(hub, tmp_path / "index", tiny_sd)
