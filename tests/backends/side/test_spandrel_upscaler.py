"""Upscaler files stable-diffusion.cpp cannot run go to spandrel, where it is installed and
torchvision imports (spandrel needs it); elsewhere these tests are skipped with the reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from localimg.backends.base import RuntimeSettings
from localimg.backends.side.esrgan import NotRunnable, check_file
from localimg.backends.side.upscale_models import make_upscaler
from tests.support.tiny_esrgan import write_unshuffle_x2


def spandrel_or_skip() -> None:
    try:
        import torchvision  # noqa: F401
    except Exception as exc:  # ImportError, or a torchvision built for another torch
        pytest.skip(f"spandrel needs torchvision, which does not import here: {exc}")
    pytest.importorskip("spandrel", reason="the upscale extra (spandrel) is not installed")


def test_the_x2plus_layout_is_not_for_the_native_upscaler(tmp_path: Path) -> None:
    path = write_unshuffle_x2(tmp_path / "RealESRGAN_x2plus.safetensors")
    with pytest.raises(NotRunnable, match="12 channels"):
        check_file(path)


def test_spandrel_runs_what_the_native_upscaler_cannot(tmp_path: Path) -> None:
    spandrel_or_skip()
    from localimg.backends.side.spandrel_upscaler import SpandrelUpscaler

    path = write_unshuffle_x2(tmp_path / "RealESRGAN_x2plus.safetensors")
    model = make_upscaler("RealESRGAN_x2plus", path, RuntimeSettings(device="cpu"))
    assert isinstance(model, SpandrelUpscaler)
    model.tile = 32
    model.load()
    try:
        assert model.factor == 2
        pixels = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
        seen: list[tuple[int, int]] = []
        out = model.upscale(Image.fromarray(pixels), 3, lambda *tile: seen.append(tile))
    finally:
        model.unload()
    assert out.size == (150, 120)
    assert seen[-1][0] == seen[-1][1] > 1


class NearestX2:
    """Stands in for a spandrel descriptor: a x2 nearest upscale that reads even sizes only."""

    class size_requirements:  # spandrel's attribute name
        multiple_of = 2
        minimum = 0

    def __call__(self, tensor: Any) -> Any:
        import torch.nn.functional as functional

        assert tensor.shape[2] % 2 == 0 and tensor.shape[3] % 2 == 0
        return functional.interpolate(tensor, scale_factor=2, mode="nearest")


def test_tiles_are_padded_blended_and_reported(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from localimg.backends.side.spandrel_upscaler import SpandrelUpscaler

    model = SpandrelUpscaler("fake", tmp_path / "fake.pth", RuntimeSettings(device="cpu"), tile=16)
    model._model, model.factor = NearestX2(), 2
    pixels = np.random.default_rng(1).integers(0, 256, (27, 37, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    seen: list[tuple[int, int]] = []
    out = model.run(image, lambda *tile: seen.append(tile))
    expected = image.resize((74, 54), Image.Resampling.NEAREST)
    assert out.size == (74, 54)
    assert np.abs(np.asarray(out, int) - np.asarray(expected, int)).max() <= 1
    assert seen[-1][0] == seen[-1][1] > 4
