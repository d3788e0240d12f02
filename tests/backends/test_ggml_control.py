"""ControlNet on the stablediffusion-ggml backend: the real stable-diffusion.cpp on random weights.

stable-diffusion.cpp's ControlNet has SD1.5's fixed widths, so these run a full-width random
SD1.5 UNet (tests/support/tiny_ggml_control.py, about 3 GB of memory once loaded with a
ControlNet) at 64x64, one step, cfg 1. The engine keeps one model loaded at a time. Three YAMLs
share the checkpoint: `sd15` (requests bring the ControlNet), `sd15-ref` (never given one: the
plain reference) and `sd15-canny` (the YAML names one); `tiny` is the tiny-UNet SD1 model of
tests/support/tiny_ggml.py, whose blocks the ControlNet does not fit.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from PIL import Image, ImageDraw

pytest.importorskip("stable_diffusion_cpp")

from localimg.backends.base import RuntimeSettings
from localimg.config import load_config_file
from localimg.engine import Engine, EngineSettings
from localimg.engine.memory import estimate
from localimg.errors import InvalidRequest, ModelNotFound
from localimg.requests import ControlUnit, ImageRequest, ImageResult
from tests.support.tiny_ggml import link_or_copy, tiny_checkpoint_path, tiny_taesd_path
from tests.support.tiny_ggml_control import controlnet_paths, sd15_checkpoint_path

pytestmark = [pytest.mark.ggml, pytest.mark.slow]

YAML = """\
name: {name}
backend: stablediffusion-ggml
parameters:
  model: {model}.safetensors
step: 1
cfg_scale: 1.0
size: 64x64
options:
- "taesd_path:taesd.safetensors"
- "sampler:euler"
"""
RELOAD = "with ControlNet"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ggml-control") / "models"
    (folder / "controlnet").mkdir(parents=True)
    link_or_copy(sd15_checkpoint_path(), folder / "sd15.safetensors")
    link_or_copy(tiny_taesd_path(), folder / "taesd.safetensors")
    first, second = controlnet_paths()
    link_or_copy(first, folder / "controlnet" / "net-a.safetensors")
    link_or_copy(second, folder / "controlnet" / "net-b.safetensors")
    link_or_copy(tiny_checkpoint_path(), folder / "tiny.safetensors")
    for name in ("sd15", "sd15-ref", "tiny"):
        body = YAML.format(name=name, model="tiny" if name == "tiny" else "sd15")
        (folder / f"{name}.yaml").write_text(body, encoding="utf-8")
    canny = YAML.format(name="sd15-canny", model="sd15") + "control_net: net-a\n"
    (folder / "sd15-canny.yaml").write_text(canny, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def engine(models: Path) -> Iterator[Engine]:
    eng = Engine(EngineSettings(models_path=models, max_loaded_models=1))
    yield eng
    eng.close()


def control_map() -> Image.Image:
    """An edge-map-like control image, larger than the output (the backend resizes it)."""
    image = Image.new("RGB", (128, 96), "black")
    draw = ImageDraw.Draw(image)
    draw.rectangle((24, 16, 100, 80), outline="white", width=4)
    draw.line((0, 95, 127, 0), fill="white", width=3)
    return image


def unit(net: str | None = "net-a", strength: float | None = 1.0, **fields: float) -> ControlUnit:
    return ControlUnit(image=control_map(), net=net, strength=strength, **fields)  # type: ignore[arg-type]


def pixels(engine: Engine, model: str = "sd15", *units: ControlUnit) -> np.ndarray:
    request = ImageRequest(prompt="a house", seed=7, controls=units)
    result = engine.generate(model, request)
    assert isinstance(result, ImageResult)
    return np.asarray(result.images[0], dtype=np.int16)


def reloads(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if RELOAD in r.getMessage()]


def test_ggml_control_image_changes_the_output_and_strength_0_is_the_plain_image(
    engine: Engine,
) -> None:
    plain = pixels(engine, "sd15-ref")
    controlled = pixels(engine, "sd15", unit())
    assert np.abs(controlled - plain).mean() > 0.5
    assert np.array_equal(pixels(engine, "sd15", unit(strength=0.0)), plain)
    # The context now holds a ControlNet; with no control image it never runs.
    assert np.array_equal(pixels(engine, "sd15"), plain)
    assert np.array_equal(pixels(engine, "sd15", unit()), controlled)  # same seed, same pixels
    half = pixels(engine, "sd15", unit(strength=0.5))
    assert not np.array_equal(half, controlled) and not np.array_equal(half, plain)


def test_ggml_control_net_change_reloads_once_and_switching_back_works(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="localimg.backends.ggml.backend")
    first = pixels(engine, "sd15", unit("net-a"))
    caplog.clear()
    other = pixels(engine, "sd15", unit("net-b"))
    assert reloads(caplog) == ["reloading sd15 with ControlNet net-b.safetensors"]
    assert not np.array_equal(other, first)
    caplog.clear()
    pixels(engine, "sd15")  # no control image: runs on the loaded context
    assert reloads(caplog) == []
    again = pixels(engine, "sd15", unit("net-a.safetensors"))  # the file name works too
    assert reloads(caplog) == ["reloading sd15 with ControlNet net-a.safetensors"]
    assert np.array_equal(again, first)


def test_ggml_control_net_of_the_yaml_loads_with_the_model_and_counts_in_memory(
    engine: Engine, models: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="localimg.backends.ggml.backend")
    canny = pixels(engine, "sd15-canny", unit(net=None, strength=None))
    assert reloads(caplog) == []  # loaded with net-a in the first place
    assert np.array_equal(canny, pixels(engine, "sd15", unit("net-a")))
    runtime = RuntimeSettings()
    with_net = estimate(load_config_file(models / "sd15-canny.yaml", models), runtime)
    without = estimate(load_config_file(models / "sd15.yaml", models), runtime)
    assert with_net is not None and without is not None
    net_size = (models / "controlnet" / "net-a.safetensors").stat().st_size
    assert with_net.bytes - without.bytes >= net_size


def test_ggml_control_refuses_several_units_start_end_and_unknown_nets(models: Path) -> None:
    eng = Engine(EngineSettings(models_path=models))  # refused before anything loads
    try:
        with pytest.raises(InvalidRequest, match=r"one ControlNet.*diffusers") as several:
            eng.submit("sd15", ImageRequest(prompt="x", controls=(unit(), unit("net-b"))))
        assert several.value.param == "control_image"
        with pytest.raises(InvalidRequest, match="no guidance start or end") as timing:
            eng.submit("sd15", ImageRequest(prompt="x", controls=(unit(start=0.2),)))
        assert timing.value.param == "control_start"
        with pytest.raises(InvalidRequest, match=r"control_end 0\.5"):
            eng.submit("sd15", ImageRequest(prompt="x", controls=(unit(end=0.5),)))
        with pytest.raises(ModelNotFound, match="net-a, net-b") as unknown:
            eng.submit("sd15", ImageRequest(prompt="x", controls=(unit("net-c"),)))
        assert unknown.value.param == "control_net"
        assert not eng.slots  # nothing was queued or loaded
    finally:
        eng.close()


def test_ggml_control_refuses_a_diffusers_layout_file(models: Path, tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    fake = tmp_path / "diffusers-net.safetensors"
    save_file({"controlnet_cond_embedding.conv_in.weight": np.zeros((16, 3, 3, 3), "f2")}, fake)
    eng = Engine(EngineSettings(models_path=models))
    try:
        with pytest.raises(InvalidRequest, match="diffusers' layout"):
            eng.submit("sd15", ImageRequest(prompt="x", controls=(unit(str(fake)),)))
    finally:
        eng.close()


def test_ggml_control_on_another_family_names_the_families_that_work(engine: Engine) -> None:
    """The tiny-UNet SD1 model (not a standard SD1.5 UNet) is refused, and nothing crashes."""
    request = ImageRequest(prompt="x", seed=1, controls=(unit(),))
    with pytest.raises(InvalidRequest, match=r"works with SD1\.x and SDXL.*Tiny UNet"):
        engine.generate("tiny", request)
    assert pixels(engine, "tiny").shape == (64, 64, 3)


def test_ggml_control_file_from_a_diffusers_controlnet_has_the_names_sd_cpp_reads() -> None:
    """The benchmarks convert diffusers' SD1.5 ControlNet (bench_controlnet.py): each tensor
    lands on a name of the ControlNet stable-diffusion.cpp builds (the random one's names)."""
    pytest.importorskip("diffusers")
    from diffusers import ControlNetModel

    from tests.support.ggml_writer import Writer
    from tests.support.tiny_ggml_control import controlnet, ldm_controlnet_key

    class Names(Writer):
        def normal(self, name: str, shape: tuple[int, ...], std: float) -> None:
            self.tensors[name] = np.zeros(0)

        def const(self, name: str, shape: tuple[int, ...], value: float) -> None:
            self.tensors[name] = np.zeros(0)

    names = Names(0)
    controlnet(names)
    # SD1.5's structure (four levels, two res blocks each, the channel doublings) at small widths.
    small = ControlNetModel(
        block_out_channels=(32, 64, 128, 128),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    keys = cast(Any, small).state_dict()
    converted = {f"control_model.{ldm_controlnet_key(key)}" for key in keys}
    assert converted == set(names.tensors)


def test_ggml_control_net_and_keep_on_cpu_reach_the_constructor(models: Path) -> None:
    from localimg.backends.ggml.loading import constructor_keywords
    from localimg.backends.ggml.options import parse_options

    config = load_config_file(models / "sd15.yaml", models)
    plain = constructor_keywords(config, parse_options(config), 1)
    assert "control_net_path" not in plain and plain["keep_control_net_on_cpu"] is False
    yaml = YAML.format(name="cpu-net", model="sd15") + '- "keep_control_net_on_cpu:true"\n'
    (models / "cpu-net.yaml").write_text(yaml, encoding="utf-8")
    config = load_config_file(models / "cpu-net.yaml", models)
    net = str(models / "controlnet" / "net-a.safetensors")
    kwargs = constructor_keywords(config, parse_options(config), 1, net)
    assert kwargs["control_net_path"] == net and kwargs["keep_control_net_on_cpu"] is True
