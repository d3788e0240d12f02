"""The server's model routes and `localimg run NAME` serving, over real HTTP (uvicorn)."""

from __future__ import annotations

import base64
import io
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
import uvicorn
from PIL import Image

from localimg.gallery.catalog import GALLERIES_ENV
from tests.support.served import ServeSpec, serve

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(predicate: Any, what: str, limit: float = 120.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def server(
    index: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, Path]]:
    """A server on an empty models dir with the test gallery (`index`, a conftest fixture)."""
    monkeypatch.setenv(GALLERIES_ENV, f"test={index}")
    models = tmp_path / "models"
    models.mkdir()
    with serve(ServeSpec(models=models, api_key=KEY), tmp_path) as served:
        yield served.url, models


def test_routes_need_the_api_key(server: tuple[str, Path]) -> None:
    url, _ = server
    assert httpx.get(f"{url}/models/available").status_code == 401
    response = httpx.post(f"{url}/models/apply", json={"id": "tiny-hub"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_available_apply_job_then_generate(server: tuple[str, Path]) -> None:
    url, models = server
    available = httpx.get(f"{url}/models/available", headers=AUTH).json()
    by_name = {m["name"]: m for m in available}
    assert by_name["tiny-hub"]["installed"] is False
    assert by_name["tiny-hub"]["gallery"]["name"] == "test"
    assert "flux.1-dev-ggml" in by_name  # the shipped gallery too

    response = httpx.post(f"{url}/models/apply", json={"id": "test@tiny-hub"}, headers=AUTH)
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["status"].endswith(f"/models/jobs/{job['uuid']}")

    def done() -> bool:
        state = httpx.get(job["status"], headers=AUTH).json()
        return bool(state["processed"])

    _wait(done, "the install job")
    state = httpx.get(job["status"], headers=AUTH).json()
    assert state["error"] is None and state["installed"] and state["progress"] == 100
    assert (models / "tiny-hub.yaml").is_file()
    listed = {m["name"]: m for m in httpx.get(f"{url}/models/available", headers=AUTH).json()}
    assert listed["tiny-hub"]["installed"] is True

    from openai import OpenAI

    client = OpenAI(base_url=f"{url}/v1", api_key=KEY)
    result = client.images.generate(
        model="tiny-hub", prompt="a cat", size="64x64", response_format="b64_json"
    )
    assert result.data and result.data[0].b64_json
    image = Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json)))
    assert image.size == (64, 64)


def test_apply_errors(server: tuple[str, Path]) -> None:
    url, _ = server
    response = httpx.post(f"{url}/models/apply", json={"id": "tiny-hb"}, headers=AUTH)
    assert response.status_code == 404
    assert "Did you mean tiny-hub" in response.json()["error"]["message"]
    response = httpx.post(f"{url}/models/apply", json={"url": "x"}, headers=AUTH)
    assert response.status_code == 400 and response.json()["error"]["param"] == "url"
    response = httpx.get(f"{url}/models/jobs/nope", headers=AUTH)
    assert response.status_code == 404


def test_run_installs_and_serves(
    index: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`localimg run NAME --port P --in-process`: serve options after NAME reach `serve`."""
    import localimg.server.run as server_run
    from localimg.cli import app

    servers: list[uvicorn.Server] = []
    real_build = server_run.build_server

    def recording_build(*args: Any, **kwargs: Any) -> uvicorn.Server:
        built = real_build(*args, **kwargs)
        servers.append(built)
        return built

    monkeypatch.setattr(server_run, "build_server", recording_build)
    models = tmp_path / "models"
    port = _free_port()
    command = typer.main.get_command(app)
    args = [
        "run", "tiny-hub", "--port", str(port), "--in-process",
        "--models-path", str(models), "--gallery", str(index),
    ]  # fmt: skip
    errors: list[BaseException] = []

    def target() -> None:
        try:
            command.main(args=args, standalone_mode=False)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if errors:
            raise AssertionError(f"run failed: {errors[0]!r}")
        try:
            return httpx.get(f"{url}/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    try:
        _wait(ready, "run to install, preload and serve")
        assert (models / "tiny-hub.yaml").is_file()
        response = httpx.post(
            f"{url}/v1/images/generations",
            json={"model": "tiny-hub", "prompt": "a dog", "size": "64x64"},
            timeout=120,
        )
        assert response.status_code == 200, response.text
        assert Image.open(io.BytesIO(base64.b64decode(response.json()["data"][0]["b64_json"])))
    finally:
        for built in servers:
            built.should_exit = True
        thread.join(timeout=30)
