"""The engine's observer hook (engine/events.py): job outcomes, loads and rejections, reported
by a real engine on the tiny model; a broken listener never breaks a generation."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from localimg.engine import Engine, EngineEvents, EngineListener, EngineSettings, JobFinished
from localimg.errors import Busy, Cancelled
from localimg.requests import ImageRequest
from tests.support.server_support import wait_until, write_model


class Recorder(EngineListener):
    def __init__(self) -> None:
        self.finished: list[JobFinished] = []
        self.rejected: list[tuple[str, str]] = []
        self.loads: list[tuple[str, str, float]] = []
        self.restarts: list[tuple[str, str, str]] = []
        self.lock = threading.Lock()

    def job_finished(self, event: JobFinished) -> None:
        with self.lock:
            self.finished.append(event)

    def job_rejected(self, model: str, backend: str) -> None:
        self.rejected.append((model, backend))

    def model_loaded(self, model: str, backend: str, seconds: float) -> None:
        self.loads.append((model, backend, seconds))

    def worker_restarted(self, model: str, backend: str, reason: str) -> None:
        self.restarts.append((model, backend, reason))


class Broken(EngineListener):
    def job_finished(self, event: JobFinished) -> None:
        raise RuntimeError("listener bug")

    def model_loaded(self, model: str, backend: str, seconds: float) -> None:
        raise RuntimeError("listener bug")


@pytest.fixture
def engine(tmp_path: Path, tiny_sd: Path) -> Iterator[Engine]:
    folder = tmp_path / "models"
    folder.mkdir()
    write_model(folder, "tiny", tiny_sd)
    made = Engine(EngineSettings(models_path=folder, max_queue=1))
    yield made
    made.close()


def test_outcomes_and_loads_are_reported_and_a_broken_listener_is_harmless(
    engine: Engine,
) -> None:
    seen = Recorder()
    engine.events.add(Broken())  # first in line: its exceptions must not reach the engine
    engine.events.add(seen)
    request = ImageRequest(prompt="otter", width=64, height=64, steps=3, seed=1)
    result = engine.generate("tiny", request, timeout=300)
    assert len(result.images) == 1  # the broken listener did not break the generation
    wait_until(lambda: len(seen.finished) == 1, what="the outcome")
    event = seen.finished[0]
    assert (event.model, event.backend, event.outcome) == ("tiny", "diffusers", "ok")
    assert event.steps == 3 and event.error_code is None
    assert event.queue_seconds >= 0
    assert event.generation_seconds is not None and event.generation_seconds > 0
    assert event.run_seconds is not None and event.run_seconds >= event.generation_seconds
    assert event.steps_per_second is not None and event.steps_per_second > 0
    assert [(m, b) for m, b, _ in seen.loads] == [("tiny", "diffusers")]
    assert seen.loads[0][2] > 0
    # Loaded already: the second job reports its outcome, and no second load.
    engine.generate("tiny", request.with_(seed=2), timeout=300)
    wait_until(lambda: len(seen.finished) == 2, what="the second outcome")
    assert len(seen.loads) == 1
    assert [e.job_id for e in seen.finished] == sorted({e.job_id for e in seen.finished})


def test_rejections_and_cancels(engine: Engine) -> None:
    seen = Recorder()
    engine.events.add(seen)
    long = ImageRequest(prompt="otter", width=64, height=64, steps=500, seed=1)
    running = engine.submit("tiny", long)
    wait_until(
        lambda: running.last_event is not None and running.last_event.phase == "step",
        what="the long job to run",
    )
    queued = engine.submit("tiny", long)
    with pytest.raises(Busy):
        engine.submit("tiny", long)  # max_queue=1: refused, and reported
    assert seen.rejected == [("tiny", "diffusers")]
    queued.cancel()  # never ran: answered at once, reported as cancelled
    wait_until(lambda: len(seen.finished) == 1, what="the queued job's outcome")
    first = seen.finished[0]
    assert first.job_id == queued.id and first.outcome == "cancelled"
    assert first.run_seconds is None and first.generation_seconds is None
    assert first.error_code == "cancelled"
    running.cancel()  # stopped at its next step
    with pytest.raises(Cancelled):
        running.result(timeout=120)
    wait_until(lambda: len(seen.finished) == 2, what="the running job's outcome")
    second = seen.finished[1]
    assert second.job_id == running.id and second.outcome == "cancelled"
    assert second.run_seconds is not None and second.steps == 0


def test_a_failing_job_is_an_error_outcome(tmp_path: Path, tiny_sd: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    write_model(folder, "broken", tiny_sd, extra="diffusers:\n  pipeline_type: NoSuchPipeline\n")
    engine = Engine(EngineSettings(models_path=folder))
    seen = Recorder()
    engine.events.add(seen)
    try:
        with pytest.raises(Exception, match="NoSuchPipeline"):
            engine.generate("broken", ImageRequest(prompt="x", steps=1), timeout=120)
        wait_until(lambda: len(seen.finished) == 1, what="the outcome")
        assert seen.finished[0].outcome == "error" and seen.loads == []
    finally:
        engine.close()


def test_listeners_subscribe_and_unsubscribe() -> None:
    events = EngineEvents()
    seen, other = Recorder(), Recorder()
    events.add(seen)
    events.add(other)
    events.worker_restarted("m", "ggml", "was killed by SIGKILL")
    events.remove(other)
    events.job_rejected("m", "ggml")
    assert seen.restarts == [("m", "ggml", "was killed by SIGKILL")]
    assert seen.rejected == [("m", "ggml")] and other.rejected == []
    assert events.listeners == [seen]
