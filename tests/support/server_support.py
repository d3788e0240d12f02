"""Helpers for the server tests: a real uvicorn server on a free port, in a background thread."""

from __future__ import annotations

import base64
import io
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn
from PIL import Image
from starlette.applications import Starlette

from localimg.engine import Engine, WorkerSlot


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serve_in_thread(app: Starlette) -> Iterator[str]:
    """Run `app` under uvicorn on 127.0.0.1:<free port>; yields the base URL."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=60)


def write_model(folder: Path, name: str, tiny_sd: Path, extra: str = "") -> None:
    (folder / f"{name}.yaml").write_text(
        f"name: {name}\nbackend: diffusers\nparameters:\n  model: {tiny_sd}\n"
        f"step: 4\ncfg_scale: 7\n{extra}",
        encoding="utf-8",
    )


def png_bytes(size: tuple[int, int] = (64, 64), color: str = "red") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def b64_image(data: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    image.load()
    return image


def wait_until(check: Callable[[], bool], timeout: float = 120.0, what: str = "condition") -> None:
    """Poll until `check()` holds (a readiness wait, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def assert_openai_error(response: httpx.Response, status: int, param: str | None = None) -> dict:
    """The status, and the exact OpenAI error shape."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert "Traceback" not in error["message"]
    if param is not None:
        assert error["param"] == param, error
    return dict(error)


@dataclass
class ServedEngine:
    """A running test server and the engine behind it (its models in worker processes)."""

    url: str
    engine: Engine

    def slot(self, name: str = "tiny") -> WorkerSlot:
        slot = self.engine.slots[name]
        assert isinstance(slot, WorkerSlot)
        return slot
