"""Model lifecycle through the real engine on the tiny model: keep-alive, LRU, memory budget."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from localimg._util.units import format_duration, parse_bytes, parse_duration
from localimg.backends.base import RuntimeSettings
from localimg.config import resolve_model
from localimg.engine import Engine, EngineSettings, InProcessSlot, memory
from localimg.engine.lifecycle import Budget, parse_budget
from localimg.errors import ConfigError, InsufficientMemory, ModelLoading
from localimg.requests import ImageRequest, ProgressEvent
from tests.support.server_support import wait_until, write_model

REQUEST = ImageRequest(prompt="a lighthouse", seed=3, steps=2)


@pytest.fixture
def models(tmp_path: Path, tiny_sd: Path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    write_model(folder, "a", tiny_sd)
    write_model(folder, "b", tiny_sd)
    write_model(folder, "quick", tiny_sd, "keep_alive: 0\n")
    return folder


@pytest.fixture
def make_engine(models: Path) -> Iterator[object]:
    engines: list[Engine] = []

    def make(**settings: object) -> Engine:
        engine = Engine(EngineSettings(models_path=models, **settings))  # type: ignore[arg-type]
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()


def slot(engine: Engine, name: str) -> InProcessSlot:
    found = engine.slots[name]
    assert isinstance(found, InProcessSlot)
    return found


# -- units -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("300", 300), ("90s", 90), ("5m", 300), ("1h30m", 5400), ("0", 0), ("-1", None),
     ("never", None), (2.5, 2.5), ("250ms", 0.25)],
)  # fmt: skip
def test_durations(text: str | float, seconds: float | None) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5 minutes", "m5", "", "5x", "1h-3m"])
def test_bad_durations_say_what_is_allowed(text: str) -> None:
    with pytest.raises(ValueError, match="90s, 5m"):
        parse_duration(text)


def test_sizes_and_budgets() -> None:
    assert parse_bytes("12G") == parse_bytes("12GiB") == 12 * 1024**3
    assert parse_bytes("512m") == 512 * 1024**2
    assert parse_bytes("1.5k") == 1536
    assert parse_budget("8G") == Budget(ram=8 * 1024**3)
    assert parse_budget("ram=1G, vram=2G") == Budget(ram=1024**3, vram=2 * 1024**3)
    assert parse_budget("vram=4g") == Budget(vram=4 * 1024**3)
    with pytest.raises(ValueError, match="12G"):
        parse_bytes("lots")
    with pytest.raises(ValueError, match="ram=SIZE"):
        parse_budget("gpu=3G")
    assert format_duration(300) == "5m" and format_duration(None) == "never"


def test_yaml_keep_alive_is_checked(models: Path) -> None:
    (models / "bad.yaml").write_text(
        (models / "a.yaml").read_text().replace("name: a", "name: bad") + "keep_alive: soon\n"
    )
    with pytest.raises(ConfigError, match="keep_alive"):
        resolve_model("bad", models)
    assert resolve_model("quick", models).keep_alive == 0


# -- memory estimate ---------------------------------------------------------------------------


def test_estimate_reads_safetensors_headers_at_the_load_dtype(models: Path, tiny_sd: Path) -> None:
    config = resolve_model("a", models)
    runtime = RuntimeSettings(device="cpu")
    need = memory.estimate(config, runtime)
    assert need is not None and need.where == "ram"
    files = list(tiny_sd.rglob("*.safetensors"))
    stored = sum(p.stat().st_size for p in files)  # the tiny model is stored in float32
    weights = (need.bytes - memory.RUNTIME_OVERHEAD) / (1 + memory.ACTIVATION_MARGIN)
    assert abs(weights - stored) < 0.01 * stored + 64 * 1024  # headers are the only difference
    half = config.model_copy(update={"options": ["dtype:float16"]})
    half_need = memory.estimate(half, runtime)
    assert half_need is not None
    half_weights = (half_need.bytes - memory.RUNTIME_OVERHEAD) / (1 + memory.ACTIVATION_MARGIN)
    assert half_weights < 0.6 * weights


# -- keep-alive --------------------------------------------------------------------------------


def test_idle_model_is_unloaded_after_keep_alive_and_reloads(make_engine: object) -> None:
    engine = make_engine(keep_alive=0.5)  # type: ignore[operator]
    first = engine.generate("a", REQUEST)
    wait_until(lambda: slot(engine, "a").state == "unloaded", what="keep-alive unload")
    assert slot(engine, "a").memory_need is None
    again = engine.generate("a", REQUEST)
    assert slot(engine, "a").loads == 2
    assert first.images[0].tobytes() == again.images[0].tobytes()


def test_yaml_keep_alive_overrides_the_default(make_engine: object) -> None:
    engine = make_engine(keep_alive=None)  # type: ignore[operator]
    engine.generate("quick", REQUEST)  # keep_alive: 0 in its YAML
    engine.generate("a", REQUEST)  # the engine's default: never
    wait_until(lambda: slot(engine, "quick").state == "unloaded", what="keep_alive: 0 unload")
    assert engine.lifecycle.reap() == []
    assert slot(engine, "a").state == "loaded"


def test_a_busy_model_is_never_reaped(make_engine: object) -> None:
    engine = make_engine(keep_alive=0)  # type: ignore[operator]
    started, release = threading.Event(), threading.Event()

    def hold(event: ProgressEvent) -> None:
        if event.phase == "step":
            started.set()
            release.wait(60)

    job = engine.submit("a", REQUEST, hold)
    assert started.wait(120)
    assert engine.lifecycle.reap() == []
    assert slot(engine, "a").state == "loaded"
    release.set()
    job.result(120)


# -- concurrency and LRU -----------------------------------------------------------------------


def test_concurrent_requests_for_one_model_load_it_once(make_engine: object) -> None:
    engine = make_engine()  # type: ignore[operator]
    results: list[object] = []

    def one(seed: int) -> None:
        results.append(engine.generate("a", REQUEST.with_(seed=seed)))

    threads = [threading.Thread(target=one, args=(s,)) for s in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert len(results) == 3
    assert slot(engine, "a").loads == 1


def test_max_loaded_models_evicts_the_least_recently_used(make_engine: object) -> None:
    engine = make_engine(max_loaded_models=2)  # type: ignore[operator]
    engine.generate("a", REQUEST)
    engine.generate("b", REQUEST)
    engine.generate("a", REQUEST)  # b is now the least recently used
    engine.generate("quick", REQUEST.with_(seed=4))
    assert slot(engine, "b").state == "unloaded"
    assert slot(engine, "a").state == "loaded" and slot(engine, "quick").state == "loaded"
    assert engine.lifecycle.evictions == 1


# -- memory budget -----------------------------------------------------------------------------


def _need(models: Path) -> int:
    need = memory.estimate(resolve_model("a", models), RuntimeSettings())
    assert need is not None
    return need.bytes


def test_a_model_larger_than_the_budget_is_refused_before_loading(
    make_engine: object, models: Path
) -> None:
    engine = make_engine(memory_budget=Budget(ram=_need(models) // 2))  # type: ignore[operator]
    with pytest.raises(InsufficientMemory, match=r"needs about .* MiB of RAM.*--max-memory") as err:
        engine.generate("a", REQUEST)
    assert err.value.http_status == 507 and err.value.code == "insufficient_memory"
    assert slot(engine, "a").loads == 0 and slot(engine, "a").state == "unloaded"


def test_budget_evicts_idle_models_first(make_engine: object, models: Path) -> None:
    engine = make_engine(memory_budget=Budget(ram=int(_need(models) * 1.5)))  # type: ignore[operator]
    engine.generate("a", REQUEST)
    engine.generate("b", REQUEST)
    assert slot(engine, "a").state == "unloaded" and slot(engine, "b").state == "loaded"
    assert engine.lifecycle.evictions == 1


def test_budget_held_by_a_busy_model_answers_503(make_engine: object, models: Path) -> None:
    engine = make_engine(memory_budget=Budget(ram=int(_need(models) * 1.5)))  # type: ignore[operator]
    started, release = threading.Event(), threading.Event()

    def hold(event: ProgressEvent) -> None:
        if event.phase == "step":
            started.set()
            release.wait(60)

    job = engine.submit("a", REQUEST, hold)
    assert started.wait(120)
    try:
        with pytest.raises(ModelLoading, match="busy models \\(a\\)") as err:
            engine.generate("b", REQUEST)
        assert err.value.http_status == 503 and err.value.headers["Retry-After"]
    finally:
        release.set()
    job.result(120)
    engine.generate("b", REQUEST)  # a is idle now: evicted
    assert slot(engine, "a").state == "unloaded"


def test_machine_memory_is_checked_without_a_budget(make_engine: object) -> None:
    engine = make_engine()  # type: ignore[operator]
    engine.lifecycle._available_ram = lambda: 1024**2  # as if the machine had 1 MiB left
    with pytest.raises(InsufficientMemory, match="free on this machine"):
        engine.generate("a", REQUEST)


def test_load_and_unload_now(make_engine: object) -> None:
    engine = make_engine()  # type: ignore[operator]
    loaded = engine.load("a")
    assert loaded.state == "loaded" and loaded.memory_bytes
    assert engine.unload("a") and loaded.state == "unloaded" and loaded.memory_bytes is None
    assert not engine.unload("nothing")
