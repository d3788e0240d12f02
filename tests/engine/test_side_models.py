"""Side models through the engine: upscale, keep, evict and unload like pipelines."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image

from localimg.backends.base import RuntimeSettings
from localimg.backends.side import SideRegistry, default_registry
from localimg.config import resolve_model
from localimg.engine import Engine, EngineSettings, InProcessSlot, memory
from localimg.engine.lifecycle import Budget
from localimg.errors import InsufficientMemory, InvalidRequest, ModelLoading, ModelNotFound
from localimg.requests import ImageRequest
from tests.support.server_support import wait_until, write_model

MIB = 1024**2
IMAGE = Image.new("RGB", (8, 6), "blue")


@dataclass
class FakeUpscaler:
    """An upscaler with weights (as far as the budget knows) that records its loads."""

    name: str
    estimated_bytes: int
    kind: str = "upscaler"
    where: str = "ram"
    loaded: bool = False
    loads: int = 0
    started: threading.Event = field(default_factory=threading.Event)
    release: threading.Event | None = None  # set: a call waits for it

    def load(self) -> None:
        self.loaded, self.loads = True, self.loads + 1

    def unload(self) -> None:
        self.loaded = False

    def upscale(self, image: Image.Image, scale: float) -> Image.Image:
        self.started.set()
        if self.release is not None:
            assert self.release.wait(60)
        return image.resize((round(image.width * scale), round(image.height * scale)))


def same(fake: FakeUpscaler, runtime: object) -> FakeUpscaler:
    """A side-model factory that returns `fake` whatever the runtime (bound with a partial)."""
    return fake


@pytest.fixture
def make_engine(tmp_path: Path) -> Iterator[Callable[..., Engine]]:
    engines: list[Engine] = []

    def make(*fakes: FakeUpscaler, **settings: object) -> Engine:
        registry = default_registry()
        for fake in fakes:
            registry.register("upscaler", fake.name, functools.partial(same, fake))
        settings.setdefault("models_path", tmp_path)
        engine = Engine(EngineSettings(**settings), side_registry=registry)  # type: ignore[arg-type]
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()


def test_upscale_loads_the_upscaler_once_and_keeps_it(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine(keep_alive=None)
    bigger = engine.upscale(IMAGE, "lanczos", 2)
    assert bigger.size == (16, 12) and bigger.getpixel((8, 6)) == (0, 0, 255)
    assert engine.upscale(IMAGE).size == (16, 12)  # lanczos, twice: the defaults
    entry = engine.side.entries[("upscaler", "lanczos")]
    assert entry.state == "loaded" and entry.loads == 1
    assert entry.memory_need == memory.Need(0, "ram")
    assert engine.lifecycle.reap() == [] and entry.state == "loaded"


def test_unknown_upscalers_and_bad_scales_are_refused(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    with pytest.raises(ModelNotFound, match="known: bicubic, lanczos, nearest"):
        engine.upscale(IMAGE, "4x-ultrasharp")
    for scale in (0, -1, float("nan"), float("inf")):
        with pytest.raises(InvalidRequest, match="scale must be a number above 0") as err:
            engine.upscale(IMAGE, "nearest", scale)
        assert err.value.param == "scale"
    assert engine.side.entries == {}


def test_close_unloads_side_models(make_engine: Callable[..., Engine]) -> None:
    fake = FakeUpscaler("big", 10 * MIB)
    engine = make_engine(fake)
    engine.upscale(IMAGE, "big", 3)
    assert fake.loaded
    engine.close()
    assert not fake.loaded and engine.side.entries == {}


def test_an_idle_side_model_is_reaped_after_keep_alive(make_engine: Callable[..., Engine]) -> None:
    fake = FakeUpscaler("big", 10 * MIB)
    engine = make_engine(fake, keep_alive=0.2)
    engine.upscale(IMAGE, "big", 2)
    wait_until(lambda: not fake.loaded, what="the keep-alive unload")
    assert engine.side.entries[("upscaler", "big")].memory_need is None
    engine.upscale(IMAGE, "big", 2)
    assert fake.loads == 2


def test_a_side_model_evicts_the_least_recently_used_side_model(
    make_engine: Callable[..., Engine],
) -> None:
    one, two = FakeUpscaler("one", 60 * MIB), FakeUpscaler("two", 60 * MIB)
    engine = make_engine(one, two, memory_budget=Budget(ram=100 * MIB), keep_alive=None)
    engine.upscale(IMAGE, "one", 2)
    engine.upscale(IMAGE, "nearest", 2)  # weightless: fits beside it
    engine.upscale(IMAGE, "two", 2)
    assert two.loaded and not one.loaded and engine.lifecycle.evictions == 1
    assert engine.side.entries[("upscaler", "nearest")].state == "loaded"


def test_a_busy_side_model_is_not_evicted(make_engine: Callable[..., Engine]) -> None:
    one, two = FakeUpscaler("one", 60 * MIB), FakeUpscaler("two", 60 * MIB)
    one.release = threading.Event()
    engine = make_engine(one, two, memory_budget=Budget(ram=100 * MIB))
    call = threading.Thread(target=engine.upscale, args=(IMAGE, "one", 2))
    call.start()
    try:
        assert one.started.wait(60)
        with pytest.raises(ModelLoading, match=r"upscaler 'two' now.*\(upscaler one\)") as err:
            engine.upscale(IMAGE, "two", 2)
        assert err.value.http_status == 503 and err.value.param == "upscaler"
    finally:
        one.release.set()
        call.join(60)
    assert one.loaded and not two.loaded
    small = make_engine(FakeUpscaler("huge", 1024 * MIB), memory_budget=Budget(ram=100 * MIB))
    with pytest.raises(InsufficientMemory, match=r"upscaler 'huge' needs about 1\.0 GiB"):
        small.upscale(IMAGE, "huge", 2)


# -- side models and pipelines share the budget ------------------------------------------------

REQUEST = ImageRequest(prompt="a lighthouse", seed=3, steps=2)


def test_a_side_model_and_a_pipeline_evict_each_other_under_the_budget(
    make_engine: Callable[..., Engine], tmp_path: Path, tiny_sd: Path
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    write_model(models, "a", tiny_sd)
    need = memory.estimate(resolve_model("a", models), RuntimeSettings())
    assert need is not None
    big = FakeUpscaler("big", need.bytes)
    engine = make_engine(big, models_path=models, memory_budget=Budget(ram=int(need.bytes * 1.5)))
    engine.generate("a", REQUEST)
    pipeline = engine.slots["a"]
    assert isinstance(pipeline, InProcessSlot) and pipeline.state == "loaded"
    engine.upscale(IMAGE, "big", 2)  # its estimate does not fit beside the pipeline
    assert pipeline.state == "unloaded" and big.loaded and engine.lifecycle.evictions == 1
    engine.generate("a", REQUEST)  # and back: the idle upscaler makes room for the pipeline
    assert pipeline.state == "loaded" and not big.loaded and engine.lifecycle.evictions == 2


def test_registries_are_per_engine(make_engine: Callable[..., Engine]) -> None:
    """An engine's registry is its own: one engine's additions are not another's."""
    make_engine(FakeUpscaler("mine", 0))
    with pytest.raises(ModelNotFound):
        make_engine().upscale(IMAGE, "mine")
    assert SideRegistry().names("upscaler") == []
