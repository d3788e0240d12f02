"""The engine's ControlNet step: each unit's preprocessor runs before the request is queued."""

from __future__ import annotations

import functools
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from PIL import Image, ImageDraw

from localimg.backends.side import default_registry
from localimg.engine import Engine, EngineSettings
from localimg.engine.job import Job
from localimg.engine.worker_messages import RunJob
from localimg.errors import InvalidRequest
from localimg.requests import ControlUnit, ImageRequest


def photo() -> Image.Image:
    image = Image.new("RGB", (96, 64), "black")
    ImageDraw.Draw(image).rectangle((20, 16, 70, 48), fill="white")
    return image


@dataclass
class CountingPreprocessor:
    """A preprocessor that inverts the image and counts its calls and loads."""

    name: str = "invert"
    kind: str = "preprocessor"
    estimated_bytes: int = 0
    where: str = "ram"
    calls: int = 0
    loads: int = 0

    def load(self) -> None:
        self.loads += 1

    def unload(self) -> None:
        pass

    def preprocess(
        self, image: Image.Image, resolution: int | None, a: float | None, b: float | None
    ) -> Image.Image:
        self.calls += 1
        return Image.eval(image.convert("RGB"), lambda v: 255 - v)


def same(fake: CountingPreprocessor, runtime: object) -> CountingPreprocessor:
    return fake


@pytest.fixture
def fake() -> CountingPreprocessor:
    return CountingPreprocessor()


@pytest.fixture
def engine(tmp_path: Path, fake: CountingPreprocessor) -> Iterator[Engine]:
    registry = default_registry()
    registry.register("preprocessor", fake.name, functools.partial(same, fake))
    made = Engine(EngineSettings(models_path=tmp_path, keep_alive=None), side_registry=registry)
    yield made
    made.close()


def test_a_canny_unit_becomes_its_map_with_preprocess_none(engine: Engine) -> None:
    unit = ControlUnit(image=photo(), net="canny-net", preprocess="canny", threshold_a=50)
    request = ImageRequest(prompt="a box", controls=(unit,))
    prepared = engine.prepare_controls(request)
    (done,) = prepared.controls
    assert (done.preprocess, done.processor_res, done.threshold_a, done.threshold_b) == (
        "none",
        None,
        None,
        None,
    )
    assert (done.net, done.strength) == ("canny-net", None)  # the rest of the unit is kept
    assert done.image.size == (96, 64)
    edges = np.asarray(done.image.convert("L"))
    assert edges.max() == 255 and edges[25:40, 30:60].max() == 0  # the outline, not the inside
    assert prepared.prompt == "a box"
    entry = engine.side.entries[("preprocessor", "canny")]
    assert entry.state == "loaded"  # a side model, kept for the next request


def test_a_request_without_preprocessing_is_passed_through(engine: Engine) -> None:
    plain = ImageRequest(prompt="x")
    assert engine.prepare_controls(plain) is plain
    mapped = ImageRequest(prompt="x", controls=(ControlUnit(image=photo(), net="n"),))
    assert engine.prepare_controls(mapped) is mapped
    assert engine.side.entries == {}  # nothing was made or loaded


def test_an_unknown_name_is_refused_before_any_preprocessor_runs(
    engine: Engine, fake: CountingPreprocessor
) -> None:
    units = (
        ControlUnit(image=photo(), net="n", preprocess="invert"),
        ControlUnit(image=photo(), net="n", preprocess="openpose"),
    )
    with pytest.raises(InvalidRequest, match="no ControlNet preprocessor 'openpose'; available"):
        engine.prepare_controls(ImageRequest(prompt="x", controls=units))
    assert fake.calls == 0
    with pytest.raises(InvalidRequest, match="none, canny, depth"):
        engine.preprocess(photo(), "segmentation")


def test_several_units_each_run_their_own_preprocessor(
    engine: Engine, fake: CountingPreprocessor
) -> None:
    image = photo()
    units = (
        ControlUnit(image=image, net="a", preprocess="invert"),
        ControlUnit(image=image, net="b", preprocess="None"),
        ControlUnit(image=image, net="c", preprocess="invert"),
    )
    prepared = engine.prepare_controls(ImageRequest(prompt="x", controls=units))
    assert [u.net for u in prepared.controls] == ["a", "b", "c"]
    assert prepared.controls[0].image.getpixel((0, 0)) == (255, 255, 255)  # inverted
    assert prepared.controls[1].image is image  # "None": the image is the map
    assert (fake.calls, fake.loads) == (2, 1)


def test_preprocess_is_the_detect_call(engine: Engine) -> None:
    image = photo()
    assert engine.preprocess(image, "none") is image
    edges = engine.preprocess(image, "canny", 128, 100, 200)
    assert edges.size == image.size
    assert engine.preprocess(image, "canny").tobytes() != image.tobytes()


class RecordingSlot:
    """A slot that keeps what it is given (no backend runs)."""

    def __init__(self, config: Any, settings: Any) -> None:
        self.jobs: list[Job] = []
        self.before_load = None
        self.events = None

    def submit(self, job: Job) -> None:
        self.jobs.append(job)

    def close(self, release_memory: bool = True) -> None:
        pass


class CheckingBackend:
    """check_request records what it was asked to check."""

    seen: ClassVar[list[ImageRequest]] = []

    @classmethod
    def check_request(cls, request: ImageRequest, config: Any) -> None:
        cls.seen.append(request)


def test_submit_checks_and_queues_the_prepared_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "m.yaml").write_text(
        "name: m\nbackend: diffusers\nparameters:\n  model: x\n", encoding="utf-8"
    )
    monkeypatch.setattr("localimg.engine.engine.get_backend_class", lambda name: CheckingBackend)
    slots: list[RecordingSlot] = []

    def factory(config: Any, settings: Any) -> RecordingSlot:
        slots.append(RecordingSlot(config, settings))
        return slots[-1]

    engine = Engine(EngineSettings(models_path=tmp_path), slot_factory=factory)  # type: ignore[arg-type]
    try:
        unit = ControlUnit(image=photo(), net="n", preprocess="canny")
        job = engine.submit("m", ImageRequest(prompt="x", controls=(unit,)))
    finally:
        engine.close()
    assert CheckingBackend.seen[-1] is job.request
    assert slots[0].jobs == [job] and job.request.controls[0].preprocess == "none"
    # A worker process receives the job pickled: the map crosses the pipe intact.
    message = pickle.loads(pickle.dumps(RunJob(job.id, job.request)))
    assert message.request.controls[0].image.tobytes() == job.request.controls[0].image.tobytes()


@pytest.mark.slow
def test_a_worker_process_generates_from_the_prepared_maps(tmp_path: Path, tiny_sd: Path) -> None:
    """The same canny unit in a worker process and in this one: the same image, bit for bit."""
    from localimg.engine import WorkerOptions, worker_slot_factory
    from tests.support.server_support import write_model
    from tests.support.tiny_controlnets import tiny_sd_controlnet_path

    write_model(tmp_path, "a", tiny_sd)
    unit = ControlUnit(image=photo(), net=str(tiny_sd_controlnet_path()), preprocess="canny")
    request = ImageRequest(prompt="a box", width=64, height=64, steps=2, seed=3, controls=(unit,))
    images = []
    for factory in (worker_slot_factory(WorkerOptions(cancel_grace=20)), None):
        engine = Engine(EngineSettings(models_path=tmp_path, keep_alive=None), slot_factory=factory)
        try:
            result = engine.generate("a", request)
        finally:
            engine.close()
        assert result.request is not None and result.request.controls[0].preprocess == "none"
        images.append(result.images[0].tobytes())
    assert images[0] == images[1]
