"""Side models on their own: the registry of kinds and names, and the resampling upscalers."""

from __future__ import annotations

import pytest
from PIL import Image

from localimg.backends.base import RuntimeSettings
from localimg.backends.side import (
    SIDE_KINDS,
    Preprocessor,
    ResizeUpscaler,
    SideModel,
    SideRegistry,
    Upscaler,
    default_registry,
)
from localimg.errors import ModelNotFound

RUNTIME = RuntimeSettings(device="cpu")


def test_the_built_in_upscalers_are_weight_free_resampling_filters() -> None:
    registry = default_registry()
    assert registry.names("upscaler") == ["bicubic", "lanczos", "nearest"]
    assert registry.names("preprocessor") == ["canny", "depth"]
    model = registry.create("upscaler", "lanczos", RUNTIME)
    assert isinstance(model, Upscaler) and isinstance(model, SideModel)
    assert not isinstance(model, Preprocessor)
    assert (model.kind, model.name, model.estimated_bytes, model.where) == (
        "upscaler",
        "lanczos",
        0,
        "ram",
    )
    assert set(SIDE_KINDS) == {"upscaler", "preprocessor"}


@pytest.mark.parametrize("name", ["lanczos", "bicubic", "nearest"])
def test_a_resize_upscaler_scales_each_side_and_keeps_the_mode(name: str) -> None:
    upscaler = ResizeUpscaler(name)
    upscaler.load()
    image = Image.new("RGB", (10, 7), "red")
    bigger = upscaler.upscale(image, 2.5)
    assert bigger.size == (25, 18) and bigger.mode == "RGB"
    assert bigger.getpixel((12, 9)) == (255, 0, 0)
    assert upscaler.upscale(image, 0.01).size == (1, 1)  # never below one pixel
    upscaler.unload()


def test_nearest_repeats_pixels_exactly() -> None:
    image = Image.new("L", (2, 1))
    image.putpixel((1, 0), 200)
    assert list(ResizeUpscaler("nearest").upscale(image, 2).tobytes()) == [0, 0, 200, 200] * 2


def test_an_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ModelNotFound, match="no upscaler named 'esrgan'; known: bicubic") as err:
        default_registry().create("upscaler", "esrgan", RUNTIME)
    assert err.value.param == "upscaler"
    with pytest.raises(ModelNotFound, match="known: canny, depth"):
        default_registry().create("preprocessor", "openpose", RUNTIME)
    with pytest.raises(ValueError, match="no resampling filter"):
        ResizeUpscaler("sinc")


def test_the_registry_knows_only_its_kinds_and_checks_what_factories_make() -> None:
    registry = SideRegistry()
    with pytest.raises(ValueError, match="known: upscaler, preprocessor"):
        registry.register("vae", "tiny", lambda runtime: ResizeUpscaler("nearest"))
    registry.register("preprocessor", "wrong", lambda runtime: ResizeUpscaler("nearest"))
    with pytest.raises(TypeError, match="preprocessor 'wrong'"):
        registry.create("preprocessor", "wrong", RUNTIME)
