"""Model lifecycle through the real server: keep-alive ends worker processes, load/unload routes,
/v1/models facts, the memory budget as 507, batching in a worker, /healthz during a preload."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from localimg.engine import Engine, EngineSettings
from localimg.engine.lifecycle import Budget
from localimg.requests import ImageRequest, ImageResult
from localimg.server.app import ServerSettings, create_app
from tests.support.served import Served, ServeSpec, tiny_models
from tests.support.server_support import (
    assert_openai_error,
    b64_image,
    serve_in_thread,
    wait_until,
    write_model,
)

KEEP_ALIVE = 3.0


def model_entry(served: Served) -> dict[str, Any]:
    response = httpx.get(f"{served.url}/v1/models/tiny", timeout=30)
    assert response.status_code == 200, response.text
    return dict(response.json())


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def serve_spec(tiny_sd: Path) -> ServeSpec:
    """`tiny` in a worker process, preloaded, with a short keep-alive and batches of 4."""
    return ServeSpec(
        models=tiny_models(tiny_sd),
        workers=True,
        engine={"keep_alive": KEEP_ALIVE, "max_batch": 4},
        server={"preload": ("tiny",)},
    )


def test_healthz_answers_while_the_preload_is_still_loading(served: Served) -> None:
    health = httpx.get(f"{served.url}/healthz", timeout=30)
    ready = httpx.get(f"{served.url}/readyz", timeout=30)
    assert health.status_code == 200
    # A worker imports torch for seconds before it even starts loading: not ready yet.
    assert ready.status_code == 503 and "still loading" in ready.text
    wait_until(lambda: httpx.get(f"{served.url}/readyz").status_code == 200, what="preload")
    assert model_entry(served)["loaded"] is True


def test_keep_alive_ends_the_worker_process(served: Served) -> None:
    body = {"model": "tiny", "prompt": "a boat", "size": "64x64", "response_format": "b64_json"}
    response = httpx.post(f"{served.url}/v1/images/generations", json=body, timeout=300)
    assert response.status_code == 200, response.text
    pid = served.slot().pid
    assert pid is not None
    wait_until(lambda: served.slot().pid is None, what="the keep-alive unload")
    wait_until(lambda: not alive(pid), what="the worker to exit")
    entry = model_entry(served)
    assert entry["loaded"] is False and entry["memory_bytes"] is None
    assert entry["keep_alive"] == KEEP_ALIVE


def test_load_and_unload_routes(served: Served) -> None:
    loaded = httpx.post(f"{served.url}/models/tiny/load", timeout=300)
    assert loaded.status_code == 200, loaded.text
    entry = loaded.json()
    assert entry["loaded"] is True and entry["state"] == "loaded"
    assert entry["memory_bytes"] > 50 * 1024**2  # measured: the worker's resident memory
    assert entry["memory_device"] == "ram" and entry["queued"] == 0
    pid = entry["worker"]["pid"]
    assert alive(pid)
    unloaded = httpx.post(f"{served.url}/models/tiny/unload", timeout=300)
    assert unloaded.status_code == 200, unloaded.text
    assert unloaded.json()["loaded"] is False and unloaded.json()["memory_bytes"] is None
    wait_until(lambda: not alive(pid), what="the worker to exit")
    missing = httpx.post(f"{served.url}/models/nope/load", timeout=30)
    assert_openai_error(missing, 404, "model")


def _single(tiny_sd: Path, requests: list[ImageRequest], tmp_path: Path) -> list[ImageResult]:
    write_model(tmp_path, "tiny", tiny_sd)
    engine = Engine(EngineSettings(models_path=tmp_path, keep_alive=None))
    try:
        return [engine.generate("tiny", r) for r in requests]
    finally:
        engine.close()


def test_queued_requests_batch_inside_the_worker(
    served: Served, tiny_sd: Path, tmp_path: Path
) -> None:
    served.engine.unload("tiny")  # the first job then waits seconds for a fresh worker
    base = ImageRequest(prompt="a harbour", steps=3, width=64, height=64)
    requests = [base.with_(prompt=f"a harbour {i}", seed=i) for i in range(5)]
    jobs = [served.engine.submit("tiny", r) for r in requests]
    results = [job.result(300) for job in jobs]
    sizes = [r.timings.get("batch", 1.0) for r in results]
    assert max(sizes) >= 2, sizes  # the ones queued behind the loading job ran together
    assert [r.seeds for r in results] == [[i] for i in range(5)]
    alone = _single(tiny_sd, requests, tmp_path)
    for together, single in zip(results, alone, strict=True):
        a = np.asarray(together.images[0].convert("RGB"))
        b = np.asarray(single.images[0].convert("RGB"))
        assert np.array_equal(a, b)  # bit for bit (see backends/batch_invariance.py)


def test_concurrent_http_requests_load_the_model_once(served: Served) -> None:
    served.engine.unload("tiny")
    loads = served.slot().loads
    body = {"model": "tiny", "prompt": "a kite", "size": "64x64", "response_format": "b64_json"}
    statuses: list[int] = []

    def one(seed: int) -> None:
        reply = httpx.post(
            f"{served.url}/v1/images/generations", json={**body, "seed": seed}, timeout=300
        )
        statuses.append(reply.status_code)
        b64_image(reply.json()["data"][0]["b64_json"])

    threads = [threading.Thread(target=one, args=(s,)) for s in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert statuses == [200, 200, 200]
    assert served.slot().loads == loads + 1


# -- a server whose memory budget is too small ---------------------------------------------------


def test_model_over_the_budget_answers_507(tmp_path: Path, tiny_sd: Path) -> None:
    write_model(tmp_path, "tiny", tiny_sd)
    engine = Engine(EngineSettings(models_path=tmp_path, memory_budget=Budget(ram=1024**2)))
    with serve_in_thread(create_app(ServerSettings(), engine)) as url:
        assert httpx.get(f"{url}/healthz").status_code == 200
        error = assert_openai_error(httpx.post(f"{url}/models/tiny/load", timeout=60), 507, "model")
        assert error["code"] == "insufficient_memory" and "--max-memory" in error["message"]
        body = {"model": "tiny", "prompt": "x", "size": "64x64"}
        reply = httpx.post(f"{url}/v1/images/generations", json=body, timeout=60)
        assert_openai_error(reply, 507, "model")
        assert httpx.get(f"{url}/v1/models/tiny").json()["loaded"] is False


# -- serve's options -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--keep-alive", "soon", "90s, 5m"),
        ("--max-memory", "lots", "12G"),
        ("--max-memory", "gpu=1G", "ram=SIZE"),
        ("--max-batch", "0", "--max-batch"),
    ],
)
def test_bad_serve_options_are_refused(option: str, value: str, message: str) -> None:
    from typer.testing import CliRunner

    from localimg.cli import app

    result = CliRunner().invoke(app, ["serve", option, value, "--port", "1"])
    assert result.exit_code == 2
    assert message in result.output
