"""The image job API (`/v1/images/jobs`) end to end: a real uvicorn server, models in worker
processes, the tiny diffusers model (and the ggml tiny model at the end).

One server per engine is shared by the module; a long job (500 steps, cancelled when done with)
keeps the model busy where a test needs jobs to wait behind it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from localimg.engine import Engine, EngineSettings
from localimg.server.app import ServerSettings, create_app
from localimg.server.jobs.image_job import ImageJob
from localimg.server.jobs.store import JobStore
from localimg.server.openai import schemas
from localimg.server.state import ServerState
from tests.support.conditioned_fixtures import half_mask, noise_image
from tests.support.conditioned_fixtures import png_bytes as encode_png
from tests.support.served import Served, ServeSpec, serve
from tests.support.server_support import (
    assert_openai_error,
    b64_image,
    serve_in_thread,
    wait_until,
    write_model,
)

LONG = {"model": "tiny", "prompt": "a long one", "size": "64x64", "steps": 500, "seed": 1}
FINISHED = ("completed", "failed", "cancelled")


def post_job(served: Served, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{served.url}/v1/images/jobs", json=body, timeout=60)


def get_job(served: Served, job_id: str, **params: str) -> dict[str, Any]:
    response = httpx.get(f"{served.url}/v1/images/jobs/{job_id}", params=params, timeout=60)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def delete_job(served: Served, job_id: str) -> dict[str, Any]:
    response = httpx.delete(f"{served.url}/v1/images/jobs/{job_id}", timeout=60)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_finished(served: Served, job_id: str) -> dict[str, Any]:
    """Poll until the job has finished and let go of its engine job."""

    def finished() -> bool:
        entry = served.state.image_jobs.get(job_id)
        return entry is None or entry.finished

    wait_until(finished, timeout=300, what=f"job {job_id} to finish")
    return get_job(served, job_id)


def start_long(served: Served) -> str:
    """A 500-step job, once it is running (the model is busy until it is cancelled)."""
    created = post_job(served, LONG)
    assert created.status_code == 202, created.text
    job_id = str(created.json()["id"])
    wait_until(
        lambda: get_job(served, job_id)["step"] >= 1, timeout=300, what="the long job's steps"
    )
    return job_id


def idle(served: Served, name: str = "tiny") -> bool:
    slot = served.slot(name)
    return slot.running is None and slot.queue_depth == 0


def _models(tiny_sd: Path) -> Callable[[Path], Path]:
    def build(models: Path) -> Path:
        models.mkdir(parents=True)
        write_model(models, "tiny", tiny_sd)
        write_model(models, "broken", models.parent / "no-such-model")  # fails when it loads
        return models

    return build


@pytest.fixture(scope="module")
def serve_spec(tiny_sd: Path) -> ServeSpec:
    """`tiny` and `broken` in worker processes (as `localimg serve` runs them), a queue of 2."""
    return ServeSpec(
        models=_models(tiny_sd), workers=True, engine={"max_queue": 2}, server={"url_ttl": 600}
    )


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


# -- create, poll, result ------------------------------------------------------------------------


def test_job_completes_with_the_generations_image(served: Served) -> None:
    body = {"model": "tiny", "prompt": "a lighthouse", "size": "64x64", "steps": 2, "seed": 21}
    created = post_job(served, body)
    assert created.status_code == 202, created.text
    job = created.json()
    assert job["object"] == "image.job" and job["id"].startswith("imgjob_")
    assert job["model"] == "tiny" and isinstance(job["created_at"], int)
    assert job["status"] in ("queued", "in_progress") and job["progress"] == 0
    assert "queue_position" in job
    done = wait_finished(served, job["id"])
    assert done["status"] == "completed", done
    assert done["progress"] == 100 and done["step"] == done["total"] > 0
    assert done["queue_position"] is None and done["error"] is None
    assert done["expires_at"] >= done["completed_at"] >= job["created_at"]
    result = done["result"]
    assert result["usage"]["input_tokens"] == 2 and result["size"] == "64x64"
    (item,) = result["data"]
    assert item["seed"] == 21 and "url" not in item
    image = b64_image(item["b64_json"])
    assert image.format == "PNG" and image.size == (64, 64)
    assert "Seed: 21," in image.text["parameters"]  # type: ignore[attr-defined]
    direct = httpx.post(f"{served.url}/v1/images/generations", json=body, timeout=300)
    assert direct.status_code == 200, direct.text
    same = b64_image(direct.json()["data"][0]["b64_json"])
    assert np.array_equal(pixels(image), pixels(same))
    kept = served.state.image_jobs.get(job["id"])
    assert kept is not None and kept.job is None and kept.prepared is None  # only files kept
    assert len(kept.files()) == 1 and kept.files()[0].is_file()
    # The result is a file of the job's; polled again it is the same image.
    again = get_job(served, job["id"])["result"]["data"][0]["b64_json"]
    assert again == item["b64_json"]
    listed = httpx.get(f"{served.url}/v1/images/jobs", timeout=30).json()
    assert listed["object"] == "list"
    entry = next(e for e in listed["data"] if e["id"] == job["id"])
    assert entry["status"] == "completed" and "result" not in entry


def test_url_result_and_delete_of_a_finished_job(served: Served) -> None:
    body = {"model": "tiny", "prompt": "x", "size": "64x64", "steps": 1, "response_format": "url"}
    job_id = post_job(served, {**body, "n": 2, "seed": 3}).json()["id"]
    done = wait_finished(served, job_id)
    assert done["status"] == "completed", done
    urls = [item["url"] for item in done["result"]["data"]]
    assert [item["seed"] for item in done["result"]["data"]] == [3, 4]
    assert all(url.startswith(f"{served.url}/generated/") for url in urls)
    files = [served.output_dir / url.rsplit("/", 1)[1] for url in urls]
    fetched = httpx.get(urls[0], timeout=30)
    assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/png"
    assert all(path.is_file() for path in files)
    deleted = delete_job(served, job_id)
    assert deleted["deleted"] is True and deleted["status"] == "completed"
    assert not any(path.exists() for path in files)
    error = assert_openai_error(httpx.get(f"{served.url}/v1/images/jobs/{job_id}"), 404)
    assert error["code"] == "image_job_not_found"


def test_a_failing_job_reports_the_error_in_openai_shape(served: Served) -> None:
    created = post_job(served, {"model": "broken", "prompt": "x", "size": "64x64"})
    assert created.status_code == 202, created.text
    failed = wait_finished(served, created.json()["id"])
    assert failed["status"] == "failed" and "result" not in failed
    error = failed["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert "Traceback" not in error["message"]


# -- queue position, cancel, 429 -------------------------------------------------------------


def test_queue_position_cancel_and_full_queue(served: Served) -> None:
    long_id = start_long(served)
    running = get_job(served, long_id)
    assert running["status"] == "in_progress" and running["queue_position"] is None
    assert running["total"] == 500 and running["step"] >= 1 and running["progress"] < 100
    wait_until(lambda: get_job(served, long_id)["eta_seconds"] is not None, what="an ETA")
    assert get_job(served, long_id)["eta_seconds"] > 0
    small = {"model": "tiny", "prompt": "waits", "size": "64x64", "steps": 2}
    first = post_job(served, {**small, "seed": 5})
    second = post_job(served, {**small, "seed": 6})
    assert first.status_code == second.status_code == 202
    assert first.json()["status"] == "queued" and first.json()["queue_position"] == 0
    assert second.json()["queue_position"] == 1
    assert first.json()["eta_seconds"] is None
    # The model's queue (2) is full: a 429 with Retry-After, on the job route as elsewhere.
    full = post_job(served, {**small, "seed": 7})
    assert_openai_error(full, 429)
    assert int(full.headers["Retry-After"]) > 0
    # Cancelling a queued job answers at once, and it never runs.
    first_id, second_id = first.json()["id"], second.json()["id"]
    cancelled = delete_job(served, first_id)
    assert cancelled["status"] == "cancelled" and cancelled["deleted"] is False
    assert wait_finished(served, first_id)["status"] == "cancelled"
    assert get_job(served, second_id)["queue_position"] == 0
    # Cancelling the running one stops it within a step; the next job then runs to the end.
    stopped = delete_job(served, long_id)
    assert stopped["status"] == "cancelled"
    final = wait_finished(served, long_id)
    assert final["status"] == "cancelled" and final["step"] < final["total"] == 500
    assert "result" not in final
    assert wait_finished(served, second_id)["status"] == "completed"
    gone = get_job(served, first_id)
    assert gone["status"] == "cancelled" and gone["step"] == 0  # it never ran
    wait_until(lambda: idle(served), what="the model to go idle")


def test_events_stream_every_step_and_end_with_the_result(served: Served) -> None:
    long_id = start_long(served)
    body = {"model": "tiny", "prompt": "streamed", "size": "64x64", "steps": 3, "seed": 9}
    job_id = post_job(served, body).json()["id"]
    events: list[tuple[str, dict[str, Any]]] = []
    url = f"{served.url}/v1/images/jobs/{job_id}/events"
    with httpx.stream("GET", url, timeout=300) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        name = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[len("data: ") :])))
                if len(events) == 1:
                    delete_job(served, long_id)  # our job runs once the long one is cancelled
    names = [name for name, _ in events]
    assert names[0] == "image.job.queued" and events[0][1]["queue_position"] == 0
    assert names[-1] == "image.job.completed" and names.count("image.job.completed") == 1
    steps = [data["step"] for name, data in events if name == "image.job.in_progress"]
    assert steps == sorted(steps) and {1, 2, 3} <= set(steps)  # one event per step, in order
    final = events[-1][1]
    assert final["id"] == job_id and final["progress"] == 100
    (item,) = final["result"]["data"]
    assert item["seed"] == 9 and b64_image(item["b64_json"]).size == (64, 64)
    # A stream opened on a finished job gives the final event and ends.
    with httpx.stream("GET", url, timeout=60) as again:
        lines = [line for line in again.iter_lines() if line.startswith("event: ")]
    assert lines == ["event: image.job.completed"]
    wait_until(lambda: idle(served), what="the model to go idle")


def test_previews_on_request(served: Served) -> None:
    created = post_job(served, {**LONG, "previews": 50})  # one every 10 steps
    job_id = created.json()["id"]
    wait_until(
        lambda: get_job(served, job_id, preview="true")["preview"] is not None,
        timeout=300,
        what="a preview",
    )
    shown = get_job(served, job_id, preview="true")
    assert shown["status"] == "in_progress" and shown["step"] >= 10
    preview = b64_image(shown["preview"])
    assert preview.format == "PNG" and preview.width > 0
    assert "preview" not in get_job(served, job_id)
    delete_job(served, job_id)
    # Once finished, the preview is let go (a completed job has its result instead).
    assert wait_finished(served, job_id)["status"] == "cancelled"
    assert get_job(served, job_id, preview="true")["preview"] is None
    none = post_job(served, {**LONG, "previews": 0}).json()["id"]
    wait_until(lambda: get_job(served, none)["step"] >= 12, timeout=300, what="steps")
    assert get_job(served, none, preview="true")["preview"] is None
    delete_job(served, none)
    assert_openai_error(
        httpx.get(f"{served.url}/v1/images/jobs/{job_id}", params={"preview": "maybe"}),
        400,
        "preview",
    )
    wait_until(lambda: idle(served), what="the model to go idle")


def test_events_carry_the_previews_made(served: Served) -> None:
    body = {"model": "tiny", "prompt": "p", "size": "64x64", "steps": 4, "previews": 4}
    long_id = start_long(served)
    job_id = post_job(served, body).json()["id"]
    url = f"{served.url}/v1/images/jobs/{job_id}/events"
    previews: dict[int, str | None] = {}
    with httpx.stream("GET", url, params={"preview": "true"}, timeout=300) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                data = json.loads(line[len("data: ") :])
                if data["status"] == "queued":
                    delete_job(served, long_id)
                if data["status"] == "in_progress" and data["step"]:  # step 0: started
                    previews[data["step"]] = data["preview"]
    assert set(previews) == {1, 2, 3, 4}  # one preview a step (previews >= steps)
    decoded = [b64_image(text) for text in previews.values() if text]
    assert len(decoded) == 4 and all(image.format == "PNG" for image in decoded)
    assert len(set(previews.values())) == 4  # each step its own picture
    wait_until(lambda: idle(served), what="the model to go idle")


# -- edits -------------------------------------------------------------------------------------


def test_edits_job_equals_the_edits_route(served: Served) -> None:
    source = encode_png(noise_image(64, 64, seed=7))
    mask = encode_png(half_mask())
    data = {"model": "tiny", "prompt": "a cat", "steps": "2", "seed": "4"}
    files = [("image[]", ("in.png", source, "image/png")), ("mask", ("m.png", mask, "image/png"))]
    created = httpx.post(f"{served.url}/v1/images/jobs", data=data, files=files, timeout=60)
    assert created.status_code == 202, created.text
    done = wait_finished(served, created.json()["id"])
    assert done["status"] == "completed", done
    job_image = b64_image(done["result"]["data"][0]["b64_json"])
    direct = httpx.post(f"{served.url}/v1/images/edits", data=data, files=files, timeout=300)
    assert direct.status_code == 200, direct.text
    route_image = b64_image(direct.json()["data"][0]["b64_json"])
    assert np.array_equal(pixels(job_image), pixels(route_image))
    original = pixels(noise_image(64, 64, seed=7))
    assert np.abs(pixels(job_image)[:, 33:] - original[:, 33:]).max() <= 1  # unmasked kept


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body,param",
    [
        ({"prompt": "x", "previews": 51}, "previews"),
        ({"prompt": "x", "stream": True}, "stream"),
        ({"prompt": "x", "stream": True, "partial_images": 2}, "stream"),
        ({"prompt": "x", "partial_images": 2}, "partial_images"),
        ({"prompt": "x", "steps": 0}, "steps"),
        ({"prompt": "x", "colour": "red"}, "colour"),
        ({"prompt": "x", "model": "nope"}, "model"),
        ({"model": "tiny", "prompt": ""}, "prompt"),
    ],
)
def test_bad_bodies_are_refused_as_on_generations(
    served: Served, body: dict[str, Any], param: str
) -> None:
    response = post_job(served, body)
    assert response.status_code in (400, 404)
    assert_openai_error(response, response.status_code, param)


def test_unknown_ids_are_404_in_openai_shape(served: Served) -> None:
    base = f"{served.url}/v1/images/jobs/imgjob_nope"
    for response in (
        httpx.get(base),
        httpx.delete(base),
        httpx.get(base + "/events"),
    ):
        error = assert_openai_error(response, 404)
        assert error["code"] == "image_job_not_found" and "imgjob_nope" in error["message"]


def test_shutdown_cancels_running_jobs(tmp_path: Path, tiny_sd: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    write_model(models, "tiny", tiny_sd)
    engine = Engine(EngineSettings(models_path=models, max_queue=2))  # in-process: quick start
    app = create_app(ServerSettings(output_dir=tmp_path / "out"), engine)
    state: ServerState = app.state  # type: ignore[assignment]
    with serve_in_thread(app) as url:
        created = httpx.post(f"{url}/v1/images/jobs", json=LONG, timeout=60).json()
        queued = httpx.post(f"{url}/v1/images/jobs", json=LONG, timeout=60).json()
        entry = state.image_jobs.get(created["id"])
        assert entry is not None
        wait_until(lambda: entry.step >= 1, timeout=300, what="the long job's steps")
        job = entry.job
        assert job is not None
    # The server stopped: both jobs were cancelled, the running one within a step.
    assert job.cancel_event.is_set() and job.future.done()
    for job_id in (created["id"], queued["id"]):
        stopped = state.image_jobs.get(job_id)
        assert stopped is not None and stopped.status == "cancelled"
    assert entry.step < 500


# -- the bounded store ---------------------------------------------------------------------------


def _finished_entry(index: int, at: float, folder: Path, loop: Any) -> ImageJob:
    prepared = schemas.prepare(schemas.GenerationBody(prompt="p"), None)  # type: ignore[arg-type]
    entry = ImageJob(id=f"imgjob_{index}", model="m", prepared=prepared, url_prefix="", loop=loop)
    entry.final_status, entry.finished_at = "completed", at
    entry.paths = [folder / f"{index}-{n}.png" for n in range(2)]
    for path in entry.paths:
        path.write_bytes(b"png")
    return entry


def test_finished_jobs_are_bounded_oldest_first_with_their_files(tmp_path: Path) -> None:
    loop = asyncio.new_event_loop()
    try:
        store: JobStore[ImageJob] = JobStore(max_finished=2, ttl=1e12)
        running = _finished_entry(99, 0.0, tmp_path, loop)
        running.final_status, running.finished_at = None, None
        store.add(running)
        entries = [_finished_entry(i, 1000.0 + i, tmp_path, loop) for i in range(4)]
        for entry in entries:
            store.add(entry)
        store.prune(now=1010.0)
        assert {e.id for e in store.values()} == {"imgjob_99", "imgjob_2", "imgjob_3"}
        assert not any(p.exists() for e in entries[:2] for p in e.paths)
        assert all(p.exists() for e in entries[2:] for p in e.paths)
        store.ttl = 60
        store.prune(now=1062.5)  # imgjob_2 finished 60.5 s before: past the TTL, imgjob_3 not
        assert len(store) == 2 and not any(p.exists() for p in entries[2].paths)
        assert store.remove("imgjob_3") is entries[3]
        assert not any(p.exists() for p in entries[3].paths)
        assert [e.id for e in store.values()] == ["imgjob_99"]  # running jobs are never dropped
    finally:
        loop.close()


def test_close_cancels_image_jobs_and_their_tasks() -> None:
    class FakeJob:
        cancelled = False

        def cancel(self) -> None:
            self.cancelled = True

    async def scenario() -> tuple[FakeJob, asyncio.Task[None]]:
        state = ServerState(settings=None, engine=None, output_dir=None, files_path="/g")  # type: ignore[arg-type]
        prepared = schemas.prepare(schemas.GenerationBody(prompt="p"), None)  # type: ignore[arg-type]
        entry = ImageJob(
            id="imgjob_x",
            model="m",
            prepared=prepared,
            url_prefix="",
            loop=asyncio.get_running_loop(),
        )
        job = FakeJob()
        entry.job = job  # type: ignore[assignment]
        state.image_jobs.add(entry)
        task = asyncio.create_task(asyncio.sleep(60))
        state.image_job_tasks.add(task)
        state.close()
        await asyncio.sleep(0)
        return job, task

    job, task = asyncio.run(scenario())
    assert job.cancelled and task.cancelled()


# -- the ggml engine -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ggml_served(
    tmp_path_factory: pytest.TempPathFactory, ggml_models_dir: Path
) -> Iterator[Served]:
    """The ggml model in a worker process. stable-diffusion.cpp cannot stop inside an image, so
    a cancel within a step is the worker's kill after the grace: 2 s here, not 20, to keep the
    test short (the kill is what is tested, not the grace's length)."""
    spec = ServeSpec(
        models=ggml_models_dir,
        workers=True,
        cancel_grace=2,
        engine={"max_queue": 2},
        server={"url_ttl": 600},
        model="stablediffusion",
    )
    with serve(spec, tmp_path_factory.mktemp("ggml-jobs")) as server:
        yield server


@pytest.mark.ggml
def test_ggml_job_equals_generations_and_cancels_within_a_step(ggml_served: Served) -> None:
    served = ggml_served
    body = {"model": "stablediffusion", "prompt": "a fox", "seed": 5}
    job_id = post_job(served, body).json()["id"]
    done = wait_finished(served, job_id)
    assert done["status"] == "completed", done
    assert done["step"] == done["total"] == 2
    image = b64_image(done["result"]["data"][0]["b64_json"])
    direct = httpx.post(f"{served.url}/v1/images/generations", json=body, timeout=300)
    assert direct.status_code == 200, direct.text
    assert np.array_equal(pixels(image), pixels(b64_image(direct.json()["data"][0]["b64_json"])))
    long = {**body, "steps": 500}
    long_id = post_job(served, long).json()["id"]
    queued_id = post_job(served, long).json()["id"]
    wait_until(lambda: get_job(served, long_id)["step"] >= 1, timeout=300, what="ggml steps")
    assert get_job(served, queued_id)["queue_position"] == 0
    assert delete_job(served, queued_id)["status"] == "cancelled"
    assert delete_job(served, long_id)["status"] == "cancelled"
    final = wait_finished(served, long_id)
    assert final["status"] == "cancelled" and final["step"] < final["total"] == 500
    assert wait_finished(served, queued_id)["step"] == 0
    wait_until(lambda: idle(served, "stablediffusion"), what="the model to go idle")


def test_api_key_and_cors_on_the_job_routes(tmp_path: Path) -> None:
    origin = "http://app.example"
    engine = Engine(EngineSettings(models_path=tmp_path))  # no model: nothing here runs one
    settings = ServerSettings(api_keys=("sk-job",), cors_origins=(origin,), output_dir=tmp_path)
    with serve_in_thread(create_app(settings, engine)) as url:
        base = f"{url}/v1/images/jobs"
        for response in (
            httpx.post(base, json={"prompt": "x"}),
            httpx.get(base),
            httpx.get(f"{base}/imgjob_x"),
            httpx.delete(f"{base}/imgjob_x"),
            httpx.get(f"{base}/imgjob_x/events"),
        ):
            assert assert_openai_error(response, 401)["code"] == "invalid_api_key"
        keyed = {"Authorization": "Bearer sk-job"}
        assert httpx.get(base, headers=keyed).json() == {"object": "list", "data": []}
        preflight = httpx.options(
            f"{base}/imgjob_x",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "DELETE",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert preflight.status_code == 200, preflight.text
        assert preflight.headers["access-control-allow-origin"] == origin
        assert "DELETE" in preflight.headers["access-control-allow-methods"]
