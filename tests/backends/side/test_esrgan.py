"""ESRGAN upscaler files: checked without torch, run natively by stable-diffusion.cpp, scaled to
any factor with model passes and lanczos, refused with the architectures that run."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from localimg.backends.base import RuntimeSettings
from localimg.backends.side import SideRegistry, register_upscale_models
from localimg.backends.side.esrgan import EsrganUpscaler, NotRunnable, check_file, inspect_rrdb
from localimg.backends.side.scaling import passes, tiles, upscale_with_model
from localimg.backends.side.spandrel_upscaler import available as spandrel_available
from localimg.backends.side.upscale_models import make_upscaler
from localimg.backends.side.weight_keys import UnreadableWeights, read_shapes
from localimg.errors import ModelUnavailable
from tests.support.tiny_esrgan import not_rrdb, rrdb_shapes, tiny_esrgan, write_esrgan


def photo(width: int = 40, height: int = 30, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


@pytest.fixture
def native() -> None:
    pytest.importorskip("stable_diffusion_cpp")


def loaded(scale: int, tile: int = 128) -> EsrganUpscaler:
    path = tiny_esrgan(scale)
    model = EsrganUpscaler(f"x{scale}", path, check_file(path), threads=1, tile=tile)
    model.load()
    return model


def test_the_shapes_of_both_file_kinds_are_read_without_torch(tmp_path: Path) -> None:
    safetensors = read_shapes(tiny_esrgan(4))
    torch_file = read_shapes(tiny_esrgan(2, ".pth"))
    assert safetensors == rrdb_shapes(4, 1)
    assert torch_file == rrdb_shapes(2, 1)
    assert inspect_rrdb(safetensors).scale == 4 and inspect_rrdb(torch_file).scale == 2
    assert inspect_rrdb(safetensors).blocks == 1


def test_a_pickle_that_would_run_code_is_refused_unrun(tmp_path: Path) -> None:
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"w": print}))  # names builtins.print: never resolved
    with pytest.raises(UnreadableWeights, match=r"builtins\.print"):
        read_shapes(evil)
    garbage = tmp_path / "junk.safetensors"
    garbage.write_bytes(b"\xff" * 64)
    with pytest.raises(UnreadableWeights):
        read_shapes(garbage)


def test_basicsr_layout_and_its_params_ema_wrapper_are_rrdb(tmp_path: Path) -> None:
    shapes: dict[str, tuple[int, ...]] = {
        f"params_ema.{key}": shape
        for key, shape in {
            "conv_first.weight": (64, 3, 3, 3),
            "body.0.rdb1.conv1.weight": (32, 64, 3, 3),
            "conv_body.weight": (64, 64, 3, 3),
            "conv_up1.weight": (64, 64, 3, 3),
            "conv_up2.weight": (64, 64, 3, 3),
            "conv_last.weight": (3, 64, 3, 3),
        }.items()
    }
    assert inspect_rrdb(shapes).scale == 4
    unshuffle: dict[str, tuple[int, ...]] = {
        **shapes,
        "params_ema.conv_first.weight": (64, 12, 3, 3),
    }
    with pytest.raises(NotRunnable, match=r"12 channels .* RealESRGAN_x2plus"):
        inspect_rrdb(unshuffle)


def test_a_file_that_is_not_rrdb_is_refused_naming_what_runs(tmp_path: Path) -> None:
    bad = not_rrdb(tmp_path / "swinir.safetensors")
    with pytest.raises(NotRunnable, match="not an ESRGAN/RRDB model"):
        check_file(bad)
    if spandrel_available():
        pytest.skip("spandrel is installed: such a file goes to spandrel")
    with pytest.raises(ModelUnavailable) as caught:
        make_upscaler("swinir", bad, RuntimeSettings())
    message = caught.value.message
    assert "'swinir'" in message and "ESRGAN/RRDB models with 64 features" in message
    assert "SwinIR, HAT, DAT" in message and "localimg[upscale]" in message


def test_the_x2_and_x4_models_give_their_factor_and_differ_from_lanczos(native: None) -> None:
    image = photo()
    for scale in (2, 4):
        model = loaded(scale)
        try:
            out = model.run(image)
        finally:
            model.unload()
        assert out.size == (40 * scale, 30 * scale) and out.mode == "RGB"
        lanczos = image.resize(out.size, Image.Resampling.LANCZOS)
        assert np.abs(np.asarray(out, int) - np.asarray(lanczos, int)).mean() > 5


def test_any_scale_runs_passes_then_lanczos(native: None) -> None:
    model = loaded(2)
    image = photo(24, 16)
    try:
        calls: list[tuple[int, int]] = []

        def run(img: Image.Image, progress: object) -> Image.Image:
            calls.append(img.size)
            return model.run(img)

        assert upscale_with_model(image, 2, 2, run, 128).size == (48, 32) and len(calls) == 1
        calls.clear()
        assert upscale_with_model(image, 4, 2, run, 128).size == (96, 64)
        assert calls == [(24, 16), (48, 32)]  # x2 twice
        calls.clear()
        assert upscale_with_model(image, 3, 2, run, 128).size == (72, 48)
        assert calls == [(24, 16), (48, 32)]  # x4, then lanczos down to x3
        calls.clear()
        assert upscale_with_model(image, 0.5, 2, run, 128).size == (12, 8) and calls == []
        assert model.upscale(image, 2.5).size == (60, 40)
    finally:
        model.unload()
    assert [passes(s, 2) for s in (0.5, 1, 1.5, 2, 3, 4, 8)] == [0, 0, 1, 1, 2, 2, 3]
    assert [passes(s, 4) for s in (2, 4, 5, 8)] == [1, 1, 2, 2]


def test_the_same_input_gives_the_same_output(native: None) -> None:
    model = loaded(4)
    try:
        first, second = model.upscale(photo(), 4), model.upscale(photo(), 4)
    finally:
        model.unload()
    assert first.tobytes() == second.tobytes()


def test_a_large_image_is_tiled_and_each_tile_reported(native: None) -> None:
    model = loaded(2, tile=64)
    reports: list[tuple[int, int]] = []
    try:
        out = model.upscale(photo(120, 80), 2, progress=lambda *seen: reports.append(seen))
    finally:
        model.unload()
    assert out.size == (240, 160)
    assert reports[-1] == (4, 4) == (tiles((120, 80), 64),) * 2  # 2 x 2 tiles of 64 pixels
    assert tiles((130, 100), 64) == 6 and tiles((64, 64), 64) == 1
    assert len({done for done, _ in reports}) > 2


def test_progress_counts_the_tiles_of_every_pass() -> None:
    reports: list[tuple[int, int]] = []

    def run(image: Image.Image, progress: Callable[[int, int], None]) -> Image.Image:
        count = tiles(image.size, 64)
        for done in range(count + 1):
            progress(done, count)
        return image.resize((image.width * 2, image.height * 2))

    out = upscale_with_model(photo(120, 80), 4, 2, run, 64, lambda *seen: reports.append(seen))
    assert out.size == (480, 320)
    total = tiles((120, 80), 64) + tiles((240, 160), 64)
    assert reports[-1] == (total, total) and all(seen[1] == total for seen in reports)
    assert [done for done, _ in reports] == sorted(done for done, _ in reports)


def test_the_folder_registers_each_file_by_its_stem(tmp_path: Path) -> None:
    folder = tmp_path / "upscale_models"
    write_esrgan(folder / "RealESRGAN_x4plus.safetensors", 4)
    write_esrgan(folder / "lanczos.safetensors", 2)  # a built-in's name: skipped
    (folder / "notes.txt").write_text("not a model")
    registry = SideRegistry()
    registry.register("upscaler", "lanczos", lambda runtime: None)  # type: ignore[arg-type,return-value]
    assert register_upscale_models(registry, tmp_path) == ["RealESRGAN_x4plus"]
    assert registry.listing("upscaler") == ["lanczos", "RealESRGAN_x4plus"]
    (folder / "RealESRGAN_x4plus.safetensors").unlink()
    assert register_upscale_models(registry, tmp_path) == []
    assert registry.listing("upscaler") == ["lanczos"]


def test_the_estimate_counts_half_precision_weights(tmp_path: Path) -> None:
    path = write_esrgan(tmp_path / "m.safetensors", 4, blocks=2)
    model = make_upscaler("m", path, RuntimeSettings())
    assert isinstance(model, EsrganUpscaler)
    weights = sum(int(np.prod(s)) for s in rrdb_shapes(4, 2).values())
    assert model.estimated_bytes == weights * 2 + (128 * 4) ** 2 * 64 * 4 * 6  # 384 MiB of tile


def test_torch_files_of_both_formats_and_wrappers_are_read(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from tests.support.tiny_esrgan import rrdb_tensors

    state = {k: torch.from_numpy(v) for k, v in rrdb_tensors(4, 1).items()}
    legacy = tmp_path / "legacy.pth"
    torch.save(state, str(legacy), _use_new_zipfile_serialization=False)
    assert read_shapes(legacy) == rrdb_shapes(4, 1)
    wrapped = tmp_path / "ema.pth"
    torch.save({"params_ema": state}, str(wrapped))
    assert inspect_rrdb(read_shapes(wrapped)).scale == 4
