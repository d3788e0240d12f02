"""`serve --ray` on a real local Ray cluster (2 CPUs): the tiny diffusers model deployed with two
replicas of one thread each, behind the same HTTP API as `localimg serve`.

One cluster and one server for the module (a Ray start and two model loads take a while). The
tests check what the issue promises: requests spread over both replicas (X-Localimg-Replica),
nothing lost under 16 concurrent clients (200 or 429, never an error or a hang), a replica killed
with SIGKILL costs only the request it ran while the other replica answers and Ray replaces it,
streaming, job cancel and A1111's interrupt through Ray, and no Ray process left after `stop`.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import pytest

from localimg.backends.base import RuntimeSettings
from localimg.engine import Engine, EngineSettings
from localimg.errors import LocalimgError
from localimg.requests import ImageRequest
from localimg.server.app import ServerSettings
from tests.support.server_support import (
    assert_openai_error,
    b64_image,
    free_port,
    serve_in_thread,
    wait_until,
    write_model,
)

pytest.importorskip("ray.serve", reason="serve --ray needs pip install 'localimg[ray]'")

from localimg.ray.app import create_ray_app
from localimg.ray.cluster import RayCluster, RayServeOptions
from localimg.ray.slot import RaySlot

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.usefixtures("all_cores")]

MAX_QUEUE = 4
RAY_PROCESS_NAMES = ("raylet", "gcs_server", "ray::", "dashboard", "log_monitor", "monitor.py")


@dataclass
class RayServed:
    url: str
    engine: Engine
    cluster: RayCluster

    def slot(self) -> RaySlot:
        if "tiny" not in self.engine.slots:  # a test run alone: deploy it first
            self.engine.load("tiny")
        slot = self.engine.slots["tiny"]
        assert isinstance(slot, RaySlot)
        return slot

    def generate(self, **fields: Any) -> httpx.Response:
        body = {"model": "tiny", "prompt": "a lighthouse", "size": "64x64", **fields}
        return httpx.post(f"{self.url}/v1/images/generations", json=body, timeout=300)

    def replica_status(self) -> dict[str, Any]:
        """One replica's own report (Ray picks which)."""
        from ray import serve

        answer: dict[str, Any] = serve.get_app_handle("localimg-tiny").status.remote().result()
        return answer


def ray_processes() -> list[psutil.Process]:
    """This test process's Ray children (the local instance and its workers)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            text = " ".join(child.cmdline()) + " " + child.name()
        except psutil.Error:
            continue
        if any(name in text for name in RAY_PROCESS_NAMES):
            found.append(child)
    return found


@pytest.fixture(scope="module")
def ray_started() -> Iterator[tuple[RayCluster, list[psutil.Process]]]:
    # 3 logical CPUs: tiny's two replicas and broken's one (never more than two work at once).
    cluster = RayCluster(RayServeOptions(num_cpus=3)).start()
    stopped = False
    try:
        yield cluster, ray_processes()
        cluster.stop()
        stopped = True
    finally:
        if not stopped:
            cluster.stop()


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_sd: Path,
    ray_started: tuple[RayCluster, list[psutil.Process]],
) -> Iterator[RayServed]:
    root = tmp_path_factory.mktemp("ray")
    models = root / "models"
    models.mkdir()
    (models / "tiny.yaml").write_text(
        f"name: tiny\nbackend: diffusers\nparameters:\n  model: {tiny_sd}\nstep: 4\n"
        "ray:\n  replicas: 2\n",
        encoding="utf-8",
    )
    write_model(models, "broken", root / "no-such-model", "ray:\n  replicas: 1\n")
    cluster, _ = ray_started
    settings = EngineSettings(
        models_path=models, runtime=RuntimeSettings(threads=1), max_queue=MAX_QUEUE
    )
    app = create_ray_app(ServerSettings(output_dir=root / "out"), settings, cluster)
    with serve_in_thread(app) as url:
        yield RayServed(url, app.state.engine, cluster)


def metric(served: RayServed, name: str) -> float:
    """The value of a metric's sample for model tiny on /metrics."""
    for line in httpx.get(f"{served.url}/metrics", timeout=30).text.splitlines():
        if line.startswith(name + "{") and 'model="tiny"' in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} for model tiny on /metrics")


def pixels(data: str) -> np.ndarray:
    return np.asarray(b64_image(data).convert("RGB"), dtype=np.int16)


def test_requests_spread_over_both_replicas_which_make_the_same_images(served: RayServed) -> None:
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: served.generate(seed=7, steps=12), range(4)))
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    made_by = {a.headers["x-localimg-replica"] for a in answers}
    assert len(made_by) == 2 and all(name.startswith("tiny#") for name in made_by)
    assert made_by == set(served.slot().replicas)  # the names the replicas report
    images = [pixels(a.json()["data"][0]["b64_json"]) for a in answers]
    assert all(np.array_equal(images[0], image) for image in images[1:])  # same seed, same pixels
    assert answers[0].headers["x-localimg-seeds"] == "7"
    other = served.generate(seed=8, steps=12)
    assert not np.array_equal(pixels(other.json()["data"][0]["b64_json"]), images[0])
    # /v1/models and /metrics see the deployed model as loaded, with its queue empty.
    assert served.slot().state == "loaded" and served.slot().queue_depth == 0
    assert metric(served, "localimg_model_loaded") == 1.0
    entry = httpx.get(f"{served.url}/v1/models/tiny", timeout=30).json()
    assert entry["loaded"] is True and entry["queued"] == 0


def test_sixteen_clients_are_all_answered_200_or_429(served: RayServed) -> None:
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda i: served.generate(seed=i, steps=8), range(16)))
    codes = [a.status_code for a in answers]
    assert set(codes) <= {200, 429}, [a.text for a in answers if a.status_code not in (200, 429)]
    assert codes.count(200) >= 2 + MAX_QUEUE  # both replicas busy and the queue full, at least
    for refused in (a for a in answers if a.status_code == 429):
        assert_openai_error(refused, 429)
        assert int(refused.headers["retry-after"]) > 0
    ok = [a for a in answers if a.status_code == 200]
    assert {a.headers["x-localimg-replica"] for a in ok} == set(served.slot().replicas)
    assert all(len(a.json()["data"]) == 1 for a in ok)
    slot = served.slot()
    wait_until(lambda: slot.queue_depth == 0 and slot.running_jobs == 0, what="an idle slot")


def test_streaming_sends_previews_and_the_final_image_through_ray(served: RayServed) -> None:
    body = {
        "model": "tiny",
        "prompt": "a lighthouse",  # as served.generate
        "size": "64x64",
        "steps": 8,
        "seed": 3,
        "stream": True,
        "partial_images": 2,
    }
    events = []
    with httpx.stream("POST", f"{served.url}/v1/images/generations", json=body, timeout=300) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[len("data: ") :]))
    kinds = [e["type"] for e in events]
    assert kinds == [
        "image_generation.partial_image",
        "image_generation.partial_image",
        "image_generation.completed",
    ]
    partials = [pixels(e["b64_json"]) for e in events[:2]]
    assert all(p.shape == (64, 64, 3) and p.std() > 0 for p in partials)
    plain = served.generate(seed=3, steps=8)
    final = pixels(events[-1]["b64_json"])
    assert np.array_equal(final, pixels(plain.json()["data"][0]["b64_json"]))


def test_cancelled_job_stops_on_its_replica(served: RayServed) -> None:
    long = {"model": "tiny", "prompt": "long", "size": "64x64", "steps": 500, "seed": 1}
    created = httpx.post(f"{served.url}/v1/images/jobs", json=long, timeout=60)
    assert created.status_code == 202
    job_id = created.json()["id"]

    def job() -> dict[str, Any]:
        answer: dict[str, Any] = httpx.get(f"{served.url}/v1/images/jobs/{job_id}").json()
        return answer

    wait_until(lambda: job()["step"] >= 2, what="the long job's steps, relayed from its replica")
    assert job()["status"] == "in_progress" and job()["total"] == 500
    assert httpx.delete(f"{served.url}/v1/images/jobs/{job_id}").json()["status"] == "cancelled"
    wait_until(lambda: job()["status"] == "cancelled", what="the cancel")
    assert job()["step"] < 500
    # The replica itself stopped generating: both report nothing running.
    seen: dict[str, int] = {}

    def both_idle() -> bool:
        status = served.replica_status()
        seen[status["replica"]] = status["running"]
        return len(seen) == 2 and not any(seen.values())

    wait_until(both_idle, what="both replicas idle after the cancel")


def test_a1111_previews_and_interrupt_through_ray(served: RayServed) -> None:
    url = served.url
    data = {"prompt": "x", "steps": 60, "n_iter": 2, "width": 64, "height": 64, "seed": 1}
    data["override_settings"] = {"sd_model_checkpoint": "tiny"}  # not the first model, broken
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(httpx.post, f"{url}/sdapi/v1/txt2img", json=data, timeout=300)

        def preview() -> bool:
            progress = httpx.get(f"{url}/sdapi/v1/progress", timeout=30).json()
            return progress["current_image"] is not None

        wait_until(preview, what="a preview of the running batch, from its replica")
        assert httpx.post(f"{url}/sdapi/v1/interrupt", json={}, timeout=30).status_code == 200
        response = future.result(timeout=300)
    assert response.status_code == 200
    info = json.loads(response.json()["info"])
    assert info["interrupted"] is True and len(info["all_seeds"]) < 2


def test_a_model_that_cannot_load_answers_its_own_error_and_leaves_no_deployment(
    served: RayServed,
) -> None:
    from ray import serve

    answer = httpx.post(
        f"{served.url}/v1/images/generations",
        json={"model": "broken", "prompt": "x", "size": "64x64"},
        timeout=300,
    )
    error = assert_openai_error(answer, answer.status_code)
    # The same error as without Ray (the engine in this process, loading the same YAML).
    alone = Engine(served.engine.settings)
    try:
        with pytest.raises(LocalimgError) as raised:
            alone.generate("broken", ImageRequest(prompt="x", width=64, height=64))
    finally:
        alone.close()
    assert answer.status_code == raised.value.http_status >= 400
    assert error["code"] == raised.value.code and error["message"] == raised.value.message
    assert served.engine.slots["broken"].state == "unloaded"
    assert "localimg-broken" not in serve.status().applications
    assert served.generate(seed=1, steps=2).status_code == 200  # the other model still serves


def test_a_killed_replica_costs_only_its_request(served: RayServed) -> None:
    slot = served.slot()
    restarts = slot.restarts
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(served.generate, seed=i, steps=60) for i in (1, 2)]
        wait_until(lambda: len(slot.running_on()) == 2, what="both replicas running a job")
        running = slot.running_on()
        victim = sorted(running.values())[0]
        os.kill(slot.replicas[victim], signal.SIGKILL)
        answers = [f.result(timeout=300) for f in futures]
    codes = sorted(a.status_code for a in answers)
    assert codes == [200, 502], [a.text for a in answers]
    failed = next(a for a in answers if a.status_code == 502)
    error = assert_openai_error(failed, 502)
    assert error["code"] == "replica_failed" and victim in error["message"]
    answered = next(a for a in answers if a.status_code == 200)
    assert answered.headers["x-localimg-replica"] != victim
    assert slot.restarts == restarts + 1
    assert metric(served, "localimg_worker_restarts_total") == 1.0
    # The other replica answers meanwhile, and Ray starts a new one in the dead one's place.
    assert served.generate(seed=5, steps=2).status_code == 200
    pids: dict[str, int] = {}

    def replaced() -> bool:
        status = served.replica_status()
        pids[status["replica"]] = status["pid"]
        return len(set(pids) - {victim}) == 2

    wait_until(replaced, timeout=180, what="a new replica in place of the killed one")
    assert victim not in pids
    # A replica killed while idle costs nothing: a request Ray still routes to it is resent.
    os.kill(pids[sorted(pids)[0]], signal.SIGKILL)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        after = list(pool.map(lambda i: served.generate(seed=i, steps=2), (6, 7)))
    assert [a.status_code for a in after] == [200, 200], [a.text for a in after]


def test_stop_leaves_no_ray_process(
    served: RayServed, ray_started: tuple[RayCluster, list[psutil.Process]]
) -> None:
    """Last in the module: stop the cluster (the fixture's stop then does nothing)."""
    cluster, started = ray_started
    assert started, "the local Ray instance runs as children of this process"
    cluster.stop()
    _, alive = psutil.wait_procs(started, timeout=30)
    assert not alive, [p.pid for p in alive]
    assert not [p for p in ray_processes() if p.is_running()]


def test_the_serve_command_on_ray_answers_and_stops_without_leftovers(
    tmp_path: Path, tiny_sd: Path
) -> None:
    """`localimg serve --ray` as users run it: a local Ray instance of its own, a model deployed
    with autoscaling (from 1 replica), the replica header, and nothing of Ray left once SIGTERM
    has stopped it."""
    models = tmp_path / "models"
    models.mkdir()
    write_model(models, "tiny", tiny_sd)
    port = free_port()
    command = [sys.executable, "-m", "localimg", "serve", "--ray", "--autoscale", "1:2"]
    command += ["--threads", "1", "--port", str(port), "--models-path", str(models)]
    command += ["--preload", "tiny"]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: ready(url), timeout=240, what="the Ray server and its preload")
        answer = httpx.post(
            f"{url}/v1/images/generations",
            json={"prompt": "x", "size": "64x64", "steps": 2},
            timeout=300,
        )
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-localimg-replica"].startswith("tiny#")
        children = psutil.Process(proc.pid).children(recursive=True)
        assert any("raylet" in " ".join(c.cmdline()) for c in children)
        proc.send_signal(signal.SIGTERM)
        # uvicorn re-raises the signal after its clean stop; Ray's driver handler turns it
        # into exit status 15 once the `finally` that stops Ray has run.
        assert proc.wait(timeout=120) in (0, 15, -signal.SIGTERM)
        assert proc.stderr is not None
        log = proc.stderr.read()
        assert "localimg serve stopped" in log and "Ray stopped" in log
        _, alive = psutil.wait_procs(children, timeout=60)
        assert not alive, [" ".join(p.cmdline())[:80] for p in alive]
    finally:
        if proc.poll() is None:
            proc.kill()


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=10).status_code == 200
    except httpx.HTTPError:
        return False
