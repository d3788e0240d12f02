"""Server security and limits on a real uvicorn server: API keys, CORS, body and URL limits,
the queue limit (429), 503 while loading or shutting down, 500 for a broken model, SIGTERM.

Models run in-process here (no worker start-up cost); worker behaviour is in test_server_api.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from localimg.engine import (
    Engine,
    EngineSettings,
    InProcessSlot,
    Job,
    WorkerOptions,
    worker_slot_factory,
)
from localimg.errors import Cancelled
from localimg.server.app import ServerSettings, create_app
from tests.support.served import Served, ServeSpec, tiny_models
from tests.support.server_support import (
    assert_openai_error,
    b64_image,
    free_port,
    serve_in_thread,
    wait_until,
    write_model,
)

KEY = "sk-local-test"
ORIGIN = "http://app.example"


@pytest.fixture(scope="module")
def serve_spec(tiny_sd: Path) -> ServeSpec:
    """`tiny` and `broken` in process, two keys, CORS for ORIGIN, a 256 KiB body limit."""
    return ServeSpec(
        models=tiny_models(tiny_sd, broken="diffusers:\n  pipeline_type: NoSuchPipeline\n"),
        engine={"max_queue": 1},
        server={
            "api_keys": ("sk-second",),
            "cors_origins": (ORIGIN,),
            "max_body_bytes": 256 * 1024,
        },
        api_key=KEY,
        model="tiny",
    )


def generate(
    served: Served, body: dict[str, Any], key: str | None = KEY, **kwargs: Any
) -> httpx.Response:
    """POST /v1/images/generations for `tiny` (unless body names a model), with `key`."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return served.post(
        "/v1/images/generations", {"model": "tiny", **body}, headers=headers, **kwargs
    )


def test_api_key_required_on_v1_routes_only(served: Served) -> None:
    missing = httpx.get(f"{served.url}/v1/models")
    error = assert_openai_error(missing, 401)
    assert error["code"] == "invalid_api_key" and missing.headers["www-authenticate"] == "Bearer"
    assert_openai_error(
        httpx.get(f"{served.url}/v1/models", headers={"Authorization": "Bearer no"}), 401
    )
    assert_openai_error(httpx.get(f"{served.url}/v1/models", headers={"Authorization": KEY}), 401)
    assert_openai_error(generate(served, {"prompt": "x"}, key="sk-wrong"), 401)
    for key in (KEY, "sk-second"):
        ok = httpx.get(f"{served.url}/v1/models", headers={"Authorization": f"Bearer {key}"})
        assert ok.status_code == 200
        assert {m["id"] for m in ok.json()["data"]} == {"tiny", "broken"}
    assert httpx.get(f"{served.url}/healthz").status_code == 200
    assert httpx.get(f"{served.url}/readyz").status_code == 200


def test_cors_allow_list(served: Served) -> None:
    preflight = httpx.options(
        f"{served.url}/v1/images/generations",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    refused = httpx.options(
        f"{served.url}/v1/images/generations",
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers
    simple = httpx.get(
        f"{served.url}/v1/models", headers={"Origin": ORIGIN, "Authorization": f"Bearer {KEY}"}
    )
    assert simple.headers["access-control-allow-origin"] == ORIGIN
    assert "x-localimg-seeds" in simple.headers["access-control-expose-headers"].lower()
    other = httpx.get(
        f"{served.url}/v1/models",
        headers={"Origin": "http://evil.example", "Authorization": f"Bearer {KEY}"},
    )
    assert "access-control-allow-origin" not in other.headers


def test_body_limit_and_url_guard(served: Served) -> None:
    big = generate(served, {"prompt": "x", "file": "A" * (300 * 1024)})
    assert_openai_error(big, 413)
    chunked = httpx.post(
        f"{served.url}/v1/images/generations",
        content=iter([b'{"prompt": "', b"x" * (300 * 1024), b'"}']),
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    assert_openai_error(chunked, 413)
    for url in (
        "http://127.0.0.1:9/a.png",
        "http://localhost/a.png",
        "http://169.254.169.254/latest/meta-data",
        "http://10.1.2.3/a.png",
        "http://[::1]/a.png",
    ):
        error = assert_openai_error(generate(served, {"prompt": "x", "file": url}), 400, "file")
        assert error["code"] == "url_not_allowed" and "--allow-private-urls" in error["message"]
    for url in ("file:///etc/passwd", "ftp://example.com/a.png", "gopher://x/"):
        error = assert_openai_error(generate(served, {"prompt": "x", "file": url}), 400, "file")
        assert "http" in error["message"]


def test_broken_model_is_a_500_without_traceback(served: Served) -> None:
    error = assert_openai_error(generate(served, {"prompt": "x", "model": "broken"}), 500)
    assert error["type"] == "server_error" and "NoSuchPipeline" in error["message"]


def test_queue_full_is_429_with_retry_after(served: Served) -> None:
    # Job 1 would run 500 steps: it holds the model until its client goes away.
    body = json.dumps({"model": "tiny", "prompt": "x", "size": "64x64", "steps": 500}).encode()
    sock = socket.create_connection(("127.0.0.1", int(served.url.rsplit(":", 1)[1])))
    sock.sendall(
        b"POST /v1/images/generations HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    wait_until(lambda: "tiny" in served.engine.slots, what="the first job")
    slot = served.engine.slots["tiny"]
    assert isinstance(slot, InProcessSlot)
    wait_until(lambda: slot.state == "loaded" and slot.queue_depth == 0, what="job 1 to run")
    answers: list[httpx.Response] = []
    queued = threading.Thread(
        target=lambda: answers.append(
            generate(served, {"prompt": "x", "size": "64x64", "steps": 2, "seed": 1})
        )
    )
    queued.start()
    wait_until(lambda: slot.queue_depth == 1, what="job 2 to queue")
    overflow = generate(served, {"prompt": "x", "size": "64x64", "steps": 2})
    error = assert_openai_error(overflow, 429)
    assert error["type"] == "rate_limit_error" and error["code"] == "queue_full"
    assert int(overflow.headers["retry-after"]) > 0
    not_ready = httpx.get(f"{served.url}/readyz")
    assert not_ready.status_code == 503 and "full queue" in str(not_ready.json()["problems"])
    sock.close()  # job 1's client leaves: its job stops, job 2 runs
    queued.join()
    assert answers[0].status_code == 200, answers[0].text
    assert b64_image(answers[0].json()["data"][0]["b64_json"]).size == (64, 64)


def test_shutting_down_is_503(served: Served) -> None:
    state = served.state
    state.shutting_down = True
    try:
        error = assert_openai_error(generate(served, {"prompt": "x"}), 503)
        assert "shutting down" in error["message"]
        assert httpx.get(f"{served.url}/readyz").status_code == 503
    finally:
        state.shutting_down = False


def test_preloading_model_is_503_then_served(tmp_path: Path, tiny_sd: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    write_model(models, "tiny", tiny_sd)
    engine = Engine(
        EngineSettings(models_path=models), slot_factory=worker_slot_factory(WorkerOptions())
    )
    app = create_app(ServerSettings(preload=("tiny",), output_dir=tmp_path / "out"), engine)
    with serve_in_thread(app) as url:
        # A worker process needs seconds to import torch: the model is still loading now.
        early = httpx.post(f"{url}/v1/images/generations", json={"prompt": "x"}, timeout=60)
        error = assert_openai_error(early, 503, "model")
        assert error["code"] == "model_loading" and early.headers["retry-after"]
        assert httpx.get(f"{url}/readyz").status_code == 503
        wait_until(lambda: httpx.get(f"{url}/readyz").status_code == 200, what="the preload")
        assert httpx.get(f"{url}/v1/models/tiny").json()["loaded"] is True
        done = httpx.post(
            f"{url}/v1/images/generations", json={"prompt": "x", "steps": 2}, timeout=300
        )
        assert done.status_code == 200, done.text


def test_serve_command_starts_and_stops_on_sigterm(tmp_path: Path, tiny_sd: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    write_model(models, "tiny", tiny_sd)
    port = free_port()
    env = {**os.environ, "LOCALIMG_API_KEY": "sk-env"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "localimg",
            "serve",
            "--port",
            str(port),
            "--models-path",
            str(models),
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert f"listening on http://127.0.0.1:{port}" in line and "tiny" in line
        assert "API key required" in line
        wait_until(lambda: _up(port), timeout=60, what="the server")
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models").status_code == 401
        proc.send_signal(signal.SIGTERM)
        # uvicorn re-raises the signal once it has shut down cleanly.
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
        assert "localimg serve stopped" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()


def _up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    except httpx.HTTPError:
        return False


def test_request_past_its_timeout_is_504_and_its_job_cancelled(
    tmp_path: Path, tiny_sd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    write_model(models, "tiny", tiny_sd)
    engine = Engine(EngineSettings(models_path=models))
    jobs: list[Job] = []
    submit = engine.submit

    def keep(*args: Any, **kwargs: Any) -> Job:
        job = submit(*args, **kwargs)
        jobs.append(job)
        return job

    monkeypatch.setattr(engine, "submit", keep)
    app = create_app(ServerSettings(request_timeout=1, output_dir=tmp_path / "out"), engine)
    with serve_in_thread(app) as url:
        late = httpx.post(
            f"{url}/v1/images/generations",
            json={"prompt": "x", "size": "64x64", "steps": 500},
            timeout=300,
        )
        error = assert_openai_error(late, 504)
        assert error["code"] == "timeout" and "--timeout" in error["message"]
        (job,) = jobs
        assert job.cancel_event.is_set()
        wait_until(job.future.done, what="the timed-out job to stop")
        assert isinstance(job.future.exception(), Cancelled)
        last = job.last_event
        assert last is None or last.step < 500
