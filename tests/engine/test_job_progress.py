"""What a job tells about itself while it waits and runs: queue position, start, step pace, ETA."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from localimg.engine import Engine, EngineSettings, Job
from localimg.engine import job as job_module
from localimg.errors import Cancelled
from localimg.requests import ImageRequest, ProgressEvent
from tests.support.server_support import wait_until, write_model


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(job_module.time, "monotonic", fake)
    return fake


def test_eta_from_the_pace_of_the_steps(clock: Clock) -> None:
    job = Job(id="j", model="m", request=ImageRequest(prompt="p"))
    assert job.eta() is None and not job.started
    assert job.start() and job.started and job.started_at == 100.0
    job.emit(ProgressEvent("load"))
    assert job.eta() is None  # no step yet
    clock.now = 104.0
    job.emit(ProgressEvent("step", step=1, total=11))
    # One step seen: its pace counts from the start (4 s a step, 10 to go).
    assert job.eta() == pytest.approx(40.0)
    clock.now = 106.0
    job.emit(ProgressEvent("step", step=3, total=11))
    assert job.eta() == pytest.approx(8.0)  # from then on, 1 s a step between steps 1 and 3
    clock.now = 107.5
    assert job.eta() == pytest.approx(6.5)  # counts down between steps
    clock.now = 200.0
    assert job.eta() == 0.0  # never negative
    job.emit(ProgressEvent("decode", step=11, total=11))
    assert job.eta() is None


@pytest.fixture
def engine(tmp_path: Path, tiny_sd: Path) -> Iterator[Engine]:
    folder = tmp_path / "models"
    folder.mkdir()
    write_model(folder, "tiny", tiny_sd)
    made = Engine(EngineSettings(models_path=folder, max_queue=4))
    yield made
    made.close()


def test_queue_positions_follow_the_queue(engine: Engine) -> None:
    long = ImageRequest(prompt="otter", width=64, height=64, steps=500, seed=1)
    running = engine.submit("tiny", long)
    wait_until(
        lambda: running.last_event is not None and running.last_event.phase == "step",
        what="the first job to run",
    )
    assert running.started and engine.queue_position(running) is None
    first, second, third = (engine.submit("tiny", long) for _ in range(3))
    assert [engine.queue_position(j) for j in (first, second, third)] == [0, 1, 2]
    slot = engine.slots["tiny"]
    assert slot.queue_depth == 3
    first.cancel()  # a queued job is answered at once and leaves the queue's count
    with pytest.raises(Cancelled):
        first.result(timeout=0)
    assert not first.started
    assert [engine.queue_position(j) for j in (first, second, third)] == [None, 0, 1]
    assert slot.queue_depth == 2
    for job in (third, second, running):
        job.cancel()
    with pytest.raises(Cancelled):
        running.result(timeout=120)
    last = running.last_event
    assert last is not None and last.step < 500  # stopped within a step, not run out
    wait_until(lambda: not slot.busy, what="the slot to go idle")
    assert slot.queue_depth == 0 and not second.started and not third.started
