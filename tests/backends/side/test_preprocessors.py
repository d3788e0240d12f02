"""The ControlNet preprocessors on their own: canny (OpenCV), depth (a tiny random model), names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from localimg.backends.base import RuntimeSettings
from localimg.backends.side import (
    DEFAULT_DEPTH_MODEL,
    DEPTH_MODEL_ENV,
    CannyPreprocessor,
    DepthPreprocessor,
    Preprocessor,
    default_registry,
    preprocessor_for,
)
from localimg.errors import InvalidRequest, ModelNotFound
from tests.support.tiny_depth import tiny_depth_path

RUNTIME = RuntimeSettings(device="cpu")


def drawing(size: tuple[int, int] = (400, 300)) -> Image.Image:
    """A white rectangle, a dark grey disc and a faint square on black: each threshold pair
    sees a different number of them."""
    image = Image.new("RGB", size, "black")
    draw = ImageDraw.Draw(image)
    draw.rectangle((50, 50, 200, 225), fill="white")
    draw.ellipse((240, 75, 360, 195), fill=(80, 80, 80))
    draw.rectangle((250, 230, 350, 280), fill=(20, 20, 20))
    return image.filter(ImageFilter.GaussianBlur(1))


def edge_pixels(image: Image.Image) -> int:
    return int((np.asarray(image.convert("L")) > 127).sum())


def test_canny_finds_the_outline_of_a_drawn_shape_at_the_input_size() -> None:
    image = drawing()
    edges = CannyPreprocessor().preprocess(image, None, None, None)
    assert edges.size == image.size and edges.mode == "RGB"
    grey = np.asarray(edges.convert("L"))
    assert set(np.unique(grey)) <= {0, 255}  # a binary map, still binary at the input's size
    assert grey[50:226, 45:56].max() == 255  # the rectangle's left side
    assert grey[100:180, 100:150].max() == 0  # nothing inside it
    assert grey[:, :40].max() == 0  # nor left of it


def test_the_thresholds_change_the_map() -> None:
    image = drawing()
    canny = CannyPreprocessor()
    loose = edge_pixels(canny.preprocess(image, None, 1, 20))
    default = edge_pixels(canny.preprocess(image, None, None, None))
    strict = edge_pixels(canny.preprocess(image, None, 200, 255))
    assert loose > default > strict  # the faint square, then the disc, drop out


def test_processor_res_sets_the_working_resolution_not_the_output_size() -> None:
    image = drawing()
    canny = CannyPreprocessor()
    coarse = canny.preprocess(image, 64, None, None)
    fine = canny.preprocess(image, 512, None, None)
    assert coarse.size == fine.size == image.size
    assert coarse.tobytes() != fine.tobytes()


@pytest.mark.parametrize(
    ("a", "b", "param"),
    [(0, None, "threshold_a"), (None, 256, "threshold_b"), (-1, 5, "threshold_a")],
)
def test_canny_thresholds_out_of_range_are_refused(
    a: float | None, b: float | None, param: str
) -> None:
    with pytest.raises(InvalidRequest, match=rf"{param} must be between 1 and 255") as err:
        CannyPreprocessor().preprocess(drawing(), None, a, b)
    assert err.value.param == param


def test_a_processor_res_out_of_range_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="processor_res must be between 64 and 4096"):
        CannyPreprocessor().preprocess(drawing(), 32, None, None)


def test_depth_on_a_tiny_random_model_gives_a_map_of_the_input_size() -> None:
    folder = tiny_depth_path()
    depth = DepthPreprocessor(str(folder), RUNTIME)
    assert isinstance(depth, Preprocessor)
    assert depth.estimated_bytes == (folder / "model.safetensors").stat().st_size
    assert depth.where == "ram"
    depth.load()
    try:
        image = drawing((150, 100))  # not square: the map keeps the aspect
        found = depth.preprocess(image, None, None, None)
        assert found.size == image.size and found.mode == "RGB"
        assert len(np.unique(np.asarray(found))) > 1  # a map, not a blank
        assert depth.preprocess(image, 64, 5, 7).size == image.size  # knobs it has not: ignored
    finally:
        depth.unload()


def test_the_depth_model_comes_from_the_setting_then_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(DEPTH_MODEL_ENV, raising=False)
    made = default_registry().create("preprocessor", "depth", RUNTIME)
    assert isinstance(made, DepthPreprocessor) and made.model == DEFAULT_DEPTH_MODEL
    monkeypatch.setenv(DEPTH_MODEL_ENV, "/models/depth")
    made = default_registry().create("preprocessor", "depth", RUNTIME)
    assert isinstance(made, DepthPreprocessor) and made.model == "/models/depth"
    made = default_registry(depth="other/depth").create("preprocessor", "depth", RUNTIME)
    assert isinstance(made, DepthPreprocessor) and made.model == "other/depth"


def test_a_depth_model_that_is_not_there_says_how_to_name_another(tmp_path: Path) -> None:
    depth = DepthPreprocessor(str(tmp_path / "missing"), RUNTIME)
    assert depth.estimated_bytes > 0  # a guess before anything is on disk
    with pytest.raises(ModelNotFound, match=DEPTH_MODEL_ENV):
        depth.load()


@pytest.mark.parametrize(
    ("module", "found"),
    [
        ("none", None),
        ("None", None),
        ("canny", "canny"),
        ("depth", "depth"),
        ("depth_midas", "depth"),
        ("depth_anything_v2", "depth"),
    ],
)
def test_a1111_module_names_map_to_the_preprocessors(module: str, found: str | None) -> None:
    assert preprocessor_for(module) == found


@pytest.mark.parametrize("module", ["openpose", "depth_zoe", "canny2", ""])
def test_unknown_preprocessor_names_are_refused_naming_the_available_ones(module: str) -> None:
    with pytest.raises(InvalidRequest, match="available: none, canny, depth") as err:
        preprocessor_for(module)
    assert err.value.param == "control_preprocess"
