"""GET /metrics on a real server whose model runs in a worker process: the numbers move with
real requests (parsed with prometheus_client's own parser), and the route sits behind the key."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from localimg.engine import Engine, EngineSettings
from localimg.server.app import ServerSettings, create_app
from tests.support.served import Served, ServeSpec, tiny_models
from tests.support.server_support import (
    assert_openai_error,
    serve_in_thread,
    wait_until,
)

KEY = "sk-metrics"
AUTH = {"Authorization": f"Bearer {KEY}"}
GENERATIONS = "/v1/images/generations"


@pytest.fixture(scope="module")
def serve_spec(tiny_sd: Path) -> ServeSpec:
    """`tiny` in a worker process, a queue of 1, the route behind KEY."""
    return ServeSpec(
        models=tiny_models(tiny_sd), workers=True, engine={"max_queue": 1}, api_key=KEY
    )


def generate(served: Served, body: dict[str, Any]) -> httpx.Response:
    return served.post(GENERATIONS, body)


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str, headers: dict[str, str] | None = None) -> Samples:
    response = httpx.get(f"{url}/metrics", headers=AUTH if headers is None else headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def requests_count(samples: Samples, route: str, status: int, method: str = "POST") -> float:
    return value(
        samples, "localimg_http_requests_total", method=method, route=route, status=str(status)
    )


TINY = {"model": "tiny", "backend": "diffusers"}


def test_metrics_require_the_key(served: Served) -> None:
    assert_openai_error(httpx.get(f"{served.url}/metrics"), 401)
    assert_openai_error(
        httpx.get(f"{served.url}/metrics", headers={"Authorization": "Bearer x"}), 401
    )
    scrape(served.url)  # Bearer
    scrape(served.url, {"Authorization": "Basic " + "dXNlcjpzay1tZXRyaWNz"})  # user:sk-metrics
    after = scrape(served.url)
    assert requests_count(after, "/metrics", 401, "GET") == 2  # counted with their route


def test_public_metrics_and_no_key(tmp_path: Path) -> None:
    for settings in (
        ServerSettings(api_keys=(KEY,), public_metrics=True, output_dir=tmp_path / "a"),
        ServerSettings(output_dir=tmp_path / "b"),
    ):
        engine = Engine(EngineSettings(models_path=tmp_path))
        with serve_in_thread(create_app(settings, engine)) as url:
            samples = scrape(url, {})
            assert value(samples, "localimg_loaded_models") == 0
            assert value(samples, "process_resident_memory_bytes") > 0  # the server itself
            assert (
                value(samples, "localimg_build_info", version=__import__("localimg").__version__)
                == 1
            )


def test_a_generation_moves_the_numbers(served: Served) -> None:
    before = scrape(served.url)
    response = generate(served, {"prompt": "otter", "size": "64x64", "steps": 3})
    assert response.status_code == 200, response.text
    assert httpx.get(f"{served.url}/nope", headers=AUTH).status_code == 404
    job = httpx.get(f"{served.url}/v1/images/jobs/imgjob_nothere", headers=AUTH)
    assert job.status_code == 404
    after = scrape(served.url)
    assert requests_count(after, GENERATIONS, 200) == requests_count(before, GENERATIONS, 200) + 1
    assert requests_count(after, "unmatched", 404, "GET") == 1  # any unknown path: one label
    assert requests_count(after, "/v1/images/jobs/{job_id}", 404, "GET") == 1  # the template
    name = "localimg_generation_seconds_count"
    assert value(after, name, **TINY) == value(before, name, **TINY) + 1
    assert value(after, "localimg_generation_seconds_sum", **TINY) > 0
    assert value(after, "localimg_jobs_total", **TINY, outcome="ok") >= 1
    assert value(after, "localimg_steps_per_second", **TINY) > 0
    assert value(after, "localimg_steps_total", **TINY) >= 3
    assert value(after, "localimg_model_loads_total", **TINY) == 1  # loaded in the worker
    assert value(after, "localimg_model_load_seconds_count", **TINY) == 1
    assert value(after, "localimg_loaded_models") == 1
    assert value(after, "localimg_model_loaded", **TINY) == 1
    pid = served.slot().pid
    assert pid is not None and pid != os.getpid()
    assert value(after, "localimg_worker_resident_memory_bytes", model="tiny", pid=str(pid)) > 0
    assert value(after, "localimg_queue_depth", model="tiny") == 0
    assert value(after, "localimg_running_jobs", model="tiny") == 0
    # On CPU no GPU memory is reported (skipped cleanly, not zero).
    assert not any(key[0] == "localimg_worker_gpu_memory_bytes" for key in after)


def _long_request(served: Served) -> socket.socket:
    body = json.dumps({"model": "tiny", "prompt": "x", "size": "64x64", "steps": 500}).encode()
    sock = socket.create_connection(("127.0.0.1", int(served.url.rsplit(":", 1)[1])))
    sock.sendall(
        f"POST {GENERATIONS} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n".encode()
        + f"Authorization: Bearer {KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    return sock


def _steps(served: Served) -> int:
    job = served.slot().running
    event = job.last_event if job is not None else None
    return event.step if event is not None and event.phase == "step" else 0


def test_full_queue_and_cancel_are_counted(served: Served) -> None:
    before = scrape(served.url)
    sock = _long_request(served)
    wait_until(lambda: _steps(served) >= 1, what="the long job to run")
    answers: list[httpx.Response] = []
    queued = threading.Thread(
        target=lambda: answers.append(
            generate(served, {"prompt": "x", "size": "64x64", "steps": 2})
        )
    )
    queued.start()
    wait_until(lambda: served.slot().queue_depth == 1, what="the second job to queue")
    busy = scrape(served.url)
    assert value(busy, "localimg_running_jobs", model="tiny") == 1
    assert value(busy, "localimg_queue_depth", model="tiny") == 1
    assert_openai_error(generate(served, {"prompt": "x", "size": "64x64", "steps": 2}), 429)
    sock.close()  # the long job's client leaves: its job is cancelled
    queued.join()
    assert answers[0].status_code == 200, answers[0].text
    after = scrape(served.url)
    rejected = "localimg_jobs_rejected_total"
    assert value(after, rejected, **TINY) == value(before, rejected, **TINY) + 1
    assert requests_count(after, GENERATIONS, 429) == requests_count(before, GENERATIONS, 429) + 1
    cancelled = ("localimg_jobs_total", {**TINY, "outcome": "cancelled"})
    assert (
        value(after, cancelled[0], **cancelled[1])
        == value(before, cancelled[0], **cancelled[1]) + 1
    )


def test_a_killed_worker_is_a_counted_restart(served: Served) -> None:
    before = scrape(served.url)
    responses: list[httpx.Response] = []
    thread = threading.Thread(
        target=lambda: responses.append(
            generate(served, {"prompt": "x", "size": "64x64", "steps": 500})
        )
    )
    thread.start()
    wait_until(lambda: _steps(served) >= 1, what="the long job to run")
    old_pid = served.slot().pid
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)
    thread.join()
    assert_openai_error(responses[0], 500)
    after_crash = generate(served, {"prompt": "x", "size": "64x64", "steps": 2})
    assert after_crash.status_code == 200, after_crash.text
    after = scrape(served.url)
    restarts = "localimg_worker_restarts_total"
    assert value(after, restarts, **TINY) == value(before, restarts, **TINY) + 1
    errors = ("localimg_jobs_total", {**TINY, "outcome": "error"})
    assert value(after, errors[0], **errors[1]) == value(before, errors[0], **errors[1]) + 1
    loads = "localimg_model_loads_total"
    assert value(after, loads, **TINY) == value(before, loads, **TINY) + 1  # the new worker's
    new_pid = served.slot().pid
    assert new_pid not in (None, old_pid)
    assert value(after, "localimg_worker_resident_memory_bytes", model="tiny", pid=str(new_pid)) > 0
    assert (
        "localimg_worker_resident_memory_bytes",
        (("model", "tiny"), ("pid", str(old_pid))),
    ) not in after
