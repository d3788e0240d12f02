"""The backend in a worker process, through the engine: the pipe's messages and what they do."""

from __future__ import annotations

import os
import pickle
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localimg.engine import Engine, EngineSettings, WorkerOptions, WorkerSlot, worker_slot_factory
from localimg.engine.worker_messages import (
    Cancel,
    Failure,
    Load,
    Loaded,
    MemoryReport,
    Progress,
    Result,
    RunBatch,
    RunJob,
    Stop,
    job_of,
)
from localimg.errors import BackendError, Cancelled, InvalidRequest
from localimg.requests import ImageRequest, ImageResult, ProgressEvent
from tests.support.server_support import wait_until, write_model

REQUEST = ImageRequest(prompt="a lighthouse", seed=3, steps=2)


def test_messages_cross_a_pipe_and_name_their_job() -> None:
    request = ImageRequest(prompt="x")
    messages: list[Any] = [
        Load(),
        RunJob("job-1", request),
        RunBatch((("job-1", request), ("job-2", request))),
        Cancel("job-1"),
        Stop(),
        Loaded({"device": "cpu"}, 1.5),
        Progress("job-1", ProgressEvent("step", step=1, total=2)),
        Result("job-1", ImageResult(images=[], seeds=[])),
        Failure(None, InvalidRequest("bad", param="prompt")),
        MemoryReport(1024),
    ]
    for message in messages:
        assert type(pickle.loads(pickle.dumps(message))) is type(message)
    assert [job_of(m) for m in messages[5:]] == [None, "job-1", "job-1", None, None]


@pytest.fixture
def engine(tmp_path: Path, tiny_sd: Path) -> Iterator[Engine]:
    models = tmp_path / "models"
    models.mkdir()
    write_model(models, "a", tiny_sd)
    factory = worker_slot_factory(WorkerOptions(cancel_grace=20))
    settings = EngineSettings(models_path=models, keep_alive=None, max_batch=4)
    engine = Engine(settings, slot_factory=factory)
    yield engine
    engine.close()


def worker(engine: Engine) -> WorkerSlot:
    slot = engine.slots["a"]
    assert isinstance(slot, WorkerSlot)
    return slot


@pytest.mark.slow
def test_a_worker_loads_generates_cancels_and_survives_a_kill(engine: Engine) -> None:
    slot = engine.load("a")
    assert isinstance(slot, WorkerSlot) and slot.state == "loaded" and slot.loads == 1
    assert slot.info()["pid"] == slot.pid and slot.last_load_seconds is not None
    phases: list[str] = []
    result = engine.generate("a", REQUEST, lambda event: phases.append(event.phase))
    assert result.images[0].size == (64, 64) and result.model == "a"
    assert "step" in phases and phases[-1] == "done"

    long = engine.submit("a", REQUEST.with_(steps=500))
    wait_until(lambda: long.last_event is not None and long.last_event.phase == "step")
    long.cancel()
    with pytest.raises(Cancelled):
        long.result(60)
    assert slot.restarts == 0

    running = engine.submit("a", REQUEST.with_(steps=500))
    wait_until(lambda: running.last_event is not None and running.last_event.phase == "step")
    old_pid = slot.pid
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)
    with pytest.raises(BackendError, match="SIGKILL") as err:
        running.result(60)
    assert err.value.code == "worker_crashed" and slot.restarts == 1
    again = engine.generate("a", REQUEST)
    assert slot.pid not in (None, old_pid)
    assert again.images[0].tobytes() == result.images[0].tobytes()


@pytest.mark.slow
def test_a_batch_in_a_worker_answers_each_job(engine: Engine) -> None:
    engine.load("a")
    hold = threading.Event()

    def held(event: ProgressEvent) -> None:  # the first job waits at its first step
        if event.phase == "step":
            hold.wait(60)

    first = engine.submit("a", REQUEST.with_(steps=200), held)
    wait_until(lambda: first.last_event is not None and first.last_event.phase == "step")
    queued = [engine.submit("a", REQUEST.with_(seed=seed)) for seed in (1, 2)]
    hold.set()
    first.cancel()
    results = [job.result(120) for job in queued]
    assert [r.request.seed for r in results if r.request is not None] == [1, 2]
    assert results[0].timings["batch"] == 2.0
    worker(engine).unload()
    assert worker(engine).pid is None and worker(engine).state == "stopped"
