"""The engine's upscalers: the files of upscale_models/ by name, any scale up to 8, progress over
tiles, one load kept for the next call, unloaded with the engine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from localimg.engine import Engine, EngineSettings
from localimg.errors import InvalidRequest, ModelNotFound
from tests.support.tiny_esrgan import tiny_esrgan, write_esrgan


def photo(width: int = 32, height: int = 24) -> Image.Image:
    pixels = np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


@pytest.fixture
def models(tmp_path: Path) -> Path:
    folder = tmp_path / "upscale_models"
    folder.mkdir()
    for scale in (2, 4):
        (folder / f"tiny-x{scale}.safetensors").write_bytes(tiny_esrgan(scale).read_bytes())
    return tmp_path


@pytest.fixture
def engine(models: Path) -> Iterator[Engine]:
    made = Engine(EngineSettings(models_path=models, keep_alive=None))
    yield made
    made.close()


def test_the_names_are_the_filters_then_the_models(engine: Engine) -> None:
    assert engine.upscaler_names() == ["bicubic", "lanczos", "nearest", "tiny-x2", "tiny-x4"]


def test_an_unknown_name_lists_the_installed_upscalers(engine: Engine) -> None:
    with pytest.raises(ModelNotFound) as caught:
        engine.upscale(photo(), "4x-UltraSharp")
    assert "known: bicubic, lanczos, nearest, tiny-x2, tiny-x4" in caught.value.message


@pytest.mark.parametrize("scale", [0, -1, 8.01, 9, float("nan")])
def test_a_scale_outside_0_to_8_is_refused(engine: Engine, scale: float) -> None:
    with pytest.raises(InvalidRequest, match="above 0 and at most 8") as caught:
        engine.upscale(photo(), "tiny-x2", scale)
    assert caught.value.param == "scale" and engine.side.entries == {}


def test_a_model_upscales_to_any_scale_and_loads_once(engine: Engine) -> None:
    pytest.importorskip("stable_diffusion_cpp")
    image = photo()
    sizes = {scale: engine.upscale(image, "tiny-x2", scale).size for scale in (2, 4, 3, 0.5, 8)}
    assert sizes == {2: (64, 48), 4: (128, 96), 3: (96, 72), 0.5: (16, 12), 8: (256, 192)}
    entry = engine.side.entries[("upscaler", "tiny-x2")]
    assert entry.state == "loaded" and entry.loads == 1
    assert entry.memory_bytes == engine.side.entries[("upscaler", "tiny-x2")].model.estimated_bytes
    model_out = engine.upscale(image, "tiny-x4", 4)
    lanczos = engine.upscale(image, "lanczos", 4)
    assert model_out.size == lanczos.size and model_out.tobytes() != lanczos.tobytes()
    engine.close()
    assert entry.state == "unloaded" and engine.side.entries == {}


def test_progress_reports_tiles_and_old_callers_still_work(engine: Engine) -> None:
    pytest.importorskip("stable_diffusion_cpp")
    seen: list[tuple[int, int]] = []
    out = engine.upscale(photo(200, 140), "tiny-x2", 2, lambda *report: seen.append(report))
    assert out.size == (400, 280)
    assert seen[-1][0] == seen[-1][1] > 1  # every tile of a 200 x 140 image, 128-pixel tiles
    assert engine.upscale(photo(), "tiny-x2").size == (64, 48)  # no progress: as before
    filtered: list[tuple[int, int]] = []
    engine.upscale(photo(), "nearest", 2, lambda *report: filtered.append(report))
    assert filtered == [(1, 1)]


def test_refresh_finds_new_files_and_forgets_removed_ones(engine: Engine, models: Path) -> None:
    pytest.importorskip("stable_diffusion_cpp")
    write_esrgan(models / "upscale_models" / "added.safetensors", 2)
    assert "added" not in engine.upscaler_names()
    assert "added" in engine.refresh_upscalers()
    assert engine.upscale(photo(), "tiny-x4", 4).size == (128, 96)
    entry = engine.side.entries[("upscaler", "tiny-x4")]
    (models / "upscale_models" / "tiny-x4.safetensors").unlink()
    assert "tiny-x4" not in engine.refresh_upscalers()
    assert entry.state == "unloaded" and ("upscaler", "tiny-x4") not in engine.side.entries
    with pytest.raises(ModelNotFound):
        engine.upscale(photo(), "tiny-x4")
