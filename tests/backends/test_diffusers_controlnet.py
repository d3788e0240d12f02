"""ControlNet on the diffusers backend, through the engine, on tiny random pipelines and tiny
random ControlNets (tests/support/tiny_controlnets.py): the control image steers the image, a
strength of 0 gives exactly the plain image, the image equals diffusers' own ControlNet pipeline
called with the same arguments, and what cannot run is refused naming what can."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from localimg.backends.base import RuntimeSettings
from localimg.config import CONTROLNET_FOLDER, load_config_file
from localimg.engine import Engine, EngineSettings
from localimg.engine.batching import batch_key
from localimg.engine.memory import estimate
from localimg.errors import ModelNotFound
from localimg.requests import ControlUnit, ImageRequest, ImageResult
from tests.support import tiny_controlnets as nets
from tests.support.engine_checks import backend_of, noise, refused
from tests.support.tiny_families import tiny_z_image_path
from tests.support.tiny_families_flux import tiny_flux2_klein_path
from tests.support.tiny_families_qwen_wan import tiny_qwen_image_path
from tests.support.tiny_models import tiny_sd_path
from tests.support.tiny_sdxl_sd3 import tiny_sdxl_path

STEPS = 2
SIDE = {"sd": 64, "sdxl": 64, "flux1": 32, "z-image": 32, "qwen-image": 32, "klein": 32}
# each model's ControlNet, as installed in controlnet/
NET = {
    "sd": "canny-sd",
    "sdxl": "canny-sdxl",
    "flux1": "canny-flux",
    "z-image": "canny-zimage",
    "qwen-image": "canny-qwen",
}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("controlnet-models")
    pipelines = {
        "sd": tiny_sd_path(),
        "sdxl": tiny_sdxl_path(),
        "flux1": nets.tiny_flux1_path(),
        "z-image": tiny_z_image_path(),
        "qwen-image": tiny_qwen_image_path(),
        "klein": tiny_flux2_klein_path(),
    }
    for name, path in pipelines.items():
        (folder / f"{name}.yaml").write_text(
            f"name: {name}\nbackend: diffusers\nparameters:\n  model: {path}\nstep: {STEPS}\n",
            encoding="utf-8",
        )
    installed = folder / CONTROLNET_FOLDER
    installed.mkdir()
    # one file, as many ControlNets are published: offline, its config comes from the model
    single = nets.tiny_sd_controlnet_path() / "diffusion_pytorch_model.safetensors"
    (installed / "canny-sd-file.safetensors").symlink_to(single)
    for name, path in {
        "canny-sd": nets.tiny_sd_controlnet_path(),
        "other-sd": nets.tiny_sd_controlnet_path(seed=1),
        "canny-sdxl": nets.tiny_sdxl_controlnet_path(),
        "union-sdxl": nets.tiny_sdxl_union_controlnet_path(),
        "canny-flux": nets.tiny_flux_controlnet_path(),
        "canny-zimage": nets.tiny_z_image_controlnet_path(),
        "canny-qwen": nets.tiny_qwen_controlnet_path(),
    }.items():
        (installed / name).symlink_to(path, target_is_directory=True)
    return folder


@pytest.fixture(scope="module")
def engine(models: Path) -> Iterator[Engine]:
    engine = Engine(EngineSettings(models_path=models))
    yield engine
    engine.close()


def control_map(side: int, shape: str = "square") -> Image.Image:
    """A white-on-black edge map, as a canny preprocessor would make."""
    image = Image.new("RGB", (side, side), "black")
    draw = ImageDraw.Draw(image)
    box = (side // 4, side // 4, 3 * side // 4, 3 * side // 4)
    (draw.rectangle if shape == "square" else draw.ellipse)(box, outline="white", width=2)
    return image


def unit(model: str, **fields: Any) -> ControlUnit:
    fields.setdefault("net", NET.get(model, "canny-sd"))
    image = fields.pop("image", control_map(SIDE[model]))
    return ControlUnit(image, **fields)


def run(engine: Engine, model: str, *units: ControlUnit, **fields: Any) -> ImageResult:
    fields.setdefault("seed", 3)
    fields.setdefault("width", SIDE[model])
    fields.setdefault("height", SIDE[model])
    return engine.generate(model, ImageRequest("an otter", controls=tuple(units), **fields))


def pixels(result: ImageResult) -> np.ndarray:
    return np.asarray(result.images[0].convert("RGB"), dtype=np.int16)


def same(a: ImageResult, b: ImageResult) -> bool:
    return bool(np.array_equal(pixels(a), pixels(b)))


# -- SD 1.x: the control image acts, strength 0 is the plain image, parity ---------------------


def test_the_control_image_changes_the_image_and_the_same_seed_repeats_it(engine: Engine) -> None:
    plain = run(engine, "sd")
    square = run(engine, "sd", unit("sd"))
    assert not same(plain, square)
    assert same(square, run(engine, "sd", unit("sd")))
    circle = run(engine, "sd", unit("sd", image=control_map(64, "circle")))
    assert not same(square, circle)
    assert not same(square, run(engine, "sd", unit("sd"), seed=4))
    info = backend_of(engine, "sd").describe()
    assert info["pipeline"] == "StableDiffusionPipeline"  # the loaded one stays as it was
    assert info["controlnets"].startswith("canny-sd (")


def test_strength_zero_gives_exactly_the_plain_image(engine: Engine) -> None:
    plain = run(engine, "sd")
    assert same(plain, run(engine, "sd", unit("sd", strength=0.0)))
    assert not run(engine, "sd", unit("sd", strength=0.0)).infotext
    assert not same(plain, run(engine, "sd", unit("sd", strength=0.5)))


def test_strength_start_and_end_change_the_image(engine: Engine) -> None:
    full = run(engine, "sd", unit("sd"))
    assert not same(full, run(engine, "sd", unit("sd", strength=1.5)))
    assert not same(full, run(engine, "sd", unit("sd", start=0.5)))
    assert not same(full, run(engine, "sd", unit("sd", end=0.5)))


def test_a_control_map_of_another_size_is_fitted_to_the_output(engine: Engine) -> None:
    result = run(engine, "sd", unit("sd", image=control_map(48)))
    assert result.images[0].size == (64, 64)


def test_the_image_equals_diffusers_controlnet_pipeline_with_the_same_arguments(
    engine: Engine,
) -> None:
    import torch
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

    ours = run(engine, "sd", unit("sd", strength=0.8, end=0.9), cfg_scale=5.0)
    net = ControlNetModel.from_pretrained(str(nets.tiny_sd_controlnet_path()))
    pipe = StableDiffusionControlNetPipeline.from_pretrained(
        str(tiny_sd_path()), controlnet=net, safety_checker=None
    )
    pipe.set_progress_bar_config(disable=True)
    with torch.inference_mode():
        bare = pipe(
            prompt="an otter",
            image=control_map(64),
            num_inference_steps=STEPS,
            guidance_scale=5.0,
            width=64,
            height=64,
            controlnet_conditioning_scale=0.8,
            control_guidance_start=0.0,
            control_guidance_end=0.9,
            generator=torch.Generator("cpu").manual_seed(3),
        ).images[0]
    assert np.array_equal(pixels(ours), np.asarray(bare, dtype=np.int16))


def test_two_units_equal_diffusers_multi_controlnet_with_the_same_arguments(
    engine: Engine,
) -> None:
    import torch
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

    circle = control_map(64, "circle")
    ours = run(
        engine, "sd", unit("sd", start=0.5), unit("sd", net="other-sd", image=circle, strength=0.7)
    )
    pair = [
        ControlNetModel.from_pretrained(str(nets.tiny_sd_controlnet_path(seed))) for seed in (0, 1)
    ]
    pipe = StableDiffusionControlNetPipeline.from_pretrained(
        str(tiny_sd_path()), controlnet=pair, safety_checker=None
    )
    pipe.set_progress_bar_config(disable=True)
    with torch.inference_mode():
        bare = pipe(
            prompt="an otter",
            image=[control_map(64), circle],
            num_inference_steps=STEPS,
            guidance_scale=ours.request.cfg_scale if ours.request else 7.5,
            width=64,
            height=64,
            controlnet_conditioning_scale=[1.0, 0.7],
            control_guidance_start=[0.5, 0.0],
            control_guidance_end=[1.0, 1.0],
            generator=torch.Generator("cpu").manual_seed(3),
        ).images[0]
    assert np.array_equal(pixels(ours), np.asarray(bare, dtype=np.int16))


def test_a_single_file_controlnet_loads_offline_with_its_models_config(engine: Engine) -> None:
    folder = run(engine, "sd", unit("sd"))
    assert same(folder, run(engine, "sd", unit("sd", net="canny-sd-file")))


def test_two_units_stack_and_the_infotext_names_each(engine: Engine) -> None:
    first = unit("sd")
    second = unit("sd", net="other-sd", image=control_map(64, "circle"), strength=0.7)
    both = run(engine, "sd", first, second)
    assert not same(both, run(engine, "sd", first))
    assert not same(both, run(engine, "sd", second))
    assert same(both, run(engine, "sd", first, second))
    assert both.infotext == {
        "ControlNet 0": (
            "Module: none, Model: canny-sd, Weight: 1, Guidance Start: 0, Guidance End: 1"
        ),
        "ControlNet 1": (
            "Module: none, Model: other-sd, Weight: 0.7, Guidance Start: 0, Guidance End: 1"
        ),
    }


def test_img2img_and_inpainting_run_through_their_controlnet_pipelines(engine: Engine) -> None:
    image = noise(1, 64)
    plain = run(engine, "sd", init_image=image, strength=0.8)
    assert not same(plain, run(engine, "sd", unit("sd"), init_image=image, strength=0.8))
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((16, 16, 48, 48), fill=255)
    painted = run(engine, "sd", init_image=image, mask=mask)
    assert not same(painted, run(engine, "sd", unit("sd"), init_image=image, mask=mask))


def test_a_unit_still_to_preprocess_is_a_programming_error() -> None:
    """The engine runs preprocessors first: the backend only ever sees control maps."""
    from localimg.backends.diffusers.pipeline.controlnet import active_units
    from localimg.errors import BackendError

    request = ImageRequest("x", controls=(unit("sd", preprocess="canny"),))
    with pytest.raises(BackendError, match="preprocessor"):
        active_units(request)


# -- the other families ----------------------------------------------------------------------


@pytest.mark.parametrize("model", ["sdxl", "flux1", "z-image", "qwen-image"])
def test_each_family_runs_its_controlnet(engine: Engine, model: str) -> None:
    plain = run(engine, model)
    controlled = run(engine, model, unit(model))
    assert not same(plain, controlled)
    assert same(controlled, run(engine, model, unit(model)))
    assert same(plain, run(engine, model, unit(model, strength=0.0)))


def test_flux_equals_diffusers_flux_controlnet_pipeline_with_the_same_arguments(
    engine: Engine,
) -> None:
    import torch
    from diffusers import FluxControlNetModel, FluxControlNetPipeline

    ours = run(engine, "flux1", unit("flux1", strength=0.8, end=0.9), cfg_scale=3.5)
    net = FluxControlNetModel.from_pretrained(str(nets.tiny_flux_controlnet_path()))
    pipe = FluxControlNetPipeline.from_pretrained(str(nets.tiny_flux1_path()), controlnet=net)
    pipe.set_progress_bar_config(disable=True)
    with torch.inference_mode():
        bare = pipe(
            prompt="an otter",
            control_image=control_map(32),
            num_inference_steps=STEPS,
            guidance_scale=3.5,
            width=32,
            height=32,
            controlnet_conditioning_scale=0.8,
            control_guidance_start=0.0,
            control_guidance_end=0.9,
            generator=torch.Generator("cpu").manual_seed(3),
        ).images[0]
    assert np.array_equal(pixels(ours), np.asarray(bare, dtype=np.int16))


def test_flux_stacks_two_units(engine: Engine) -> None:
    one = run(engine, "flux1", unit("flux1"))
    circle = control_map(SIDE["flux1"], "circle")
    assert not same(one, run(engine, "flux1", unit("flux1"), unit("flux1", image=circle)))


@pytest.mark.parametrize("model", ["z-image", "qwen-image"])
def test_z_image_and_qwen_refuse_a_second_unit(engine: Engine, model: str) -> None:
    refused(lambda: run(engine, model, unit(model), unit(model)), "one ControlNet unit")


def test_a_task_the_family_has_no_controlnet_pipeline_for_is_refused(engine: Engine) -> None:
    image = noise(2, 32)
    refused(
        lambda: run(engine, "z-image", unit("z-image"), init_image=image, strength=0.8),
        "no Z-Image ControlNet pipeline for img2img",
        "txt2img, inpaint",
    )


def test_z_image_refuses_a_guidance_window_it_cannot_run(engine: Engine) -> None:
    refused(lambda: run(engine, "z-image", unit("z-image", end=0.5)), "control_guidance_start")
    plain = run(engine, "qwen-image", unit("qwen-image"))  # Qwen-Image has the window
    assert not same(plain, run(engine, "qwen-image", unit("qwen-image", start=0.5)))


def test_an_sdxl_union_controlnet_runs_with_its_control_mode(engine: Engine) -> None:
    union = unit("sdxl", net="union-sdxl")
    plain = run(engine, "sdxl")
    canny = run(engine, "sdxl", union, extra={"control_mode": 3})
    assert not same(plain, canny)
    assert not same(canny, run(engine, "sdxl", union, extra={"control_mode": 1}))
    refused(lambda: run(engine, "sdxl", union), "control_mode")
    refused(lambda: run(engine, "sdxl", union, union, extra={"control_mode": 3}), "one ControlNet")


# -- refusals ----------------------------------------------------------------------------------


def test_a_controlnet_of_another_family_is_refused_naming_what_fits(engine: Engine) -> None:
    refused(lambda: run(engine, "sd", unit("sd", net="canny-flux")), "FluxControlNetModel", "SD 1")
    refused(lambda: run(engine, "sd", unit("sd", net="canny-sdxl")), "cross_attention_dim")
    refused(lambda: run(engine, "sdxl", unit("sdxl", net="canny-sd")), "cross_attention_dim")
    refused(lambda: run(engine, "flux1", unit("flux1", net="canny-qwen")), "QwenImageControlNet")
    # a diffusers folder is checked from its config.json: nothing of it was loaded
    assert "canny-sdxl" not in backend_of(engine, "sd").describe()["controlnets"]


def test_a_family_without_controlnets_is_refused_naming_those_with(engine: Engine) -> None:
    refused(
        lambda: run(engine, "klein", unit("klein")),
        "FLUX.2-klein has no ControlNet",
        "SD 1.x/2.x, SDXL, FLUX.1, Z-Image and Qwen-Image",
    )


def test_an_unknown_controlnet_is_refused_before_queueing_naming_the_installed(
    engine: Engine,
) -> None:
    with pytest.raises(ModelNotFound) as caught:
        engine.submit("sd", ImageRequest("x", controls=(unit("sd", net="canny-s"),)))
    assert caught.value.param == "control_net"
    assert "did you mean 'canny-sd'" in caught.value.message
    assert "canny-flux" in caught.value.message


def test_requests_with_controls_never_batch() -> None:
    assert batch_key(ImageRequest("x")) is not None
    assert batch_key(ImageRequest("x", controls=(unit("sd"),))) is None


def test_the_memory_estimate_counts_the_yaml_controlnet(models: Path, tmp_path: Path) -> None:
    path = tiny_sd_path()
    plain = tmp_path / "plain.yaml"
    plain.write_text(f"name: plain\nparameters:\n  model: {path}\n")
    with_net = tmp_path / "with-net.yaml"
    with_net.write_text(f"name: with-net\nparameters:\n  model: {path}\ncontrol_net: canny-sd\n")
    runtime = RuntimeSettings(device="cpu")
    without = estimate(load_config_file(plain, models_path=models), runtime)
    counted = estimate(load_config_file(with_net, models_path=models), runtime)
    assert without is not None and counted is not None
    assert counted.bytes > without.bytes


def test_a_requests_controlnet_counts_in_the_memory_budget_once(models: Path) -> None:
    """A ControlNet a request names stays loaded beside the model: the budget counts it from
    its first request until the model unloads, and refuses one that does not fit."""
    from localimg.engine.lifecycle import Budget
    from localimg.engine.memory import controlnet_need
    from localimg.errors import InsufficientMemory

    probe = Engine(EngineSettings(models_path=models))
    try:
        config = probe.resolve("sd")
        base = estimate(config, probe.settings.runtime)
        net = controlnet_need("canny-sd", config, probe.settings.runtime)
    finally:
        probe.close()
    assert base is not None and net.bytes > 0
    roomy = Engine(EngineSettings(models_path=models, memory_budget=Budget(ram=base.bytes * 4)))
    try:
        run(roomy, "sd")
        slot = roomy.slots["sd"]
        assert slot.memory_need == base
        run(roomy, "sd", unit("sd"))
        run(roomy, "sd", unit("sd"))  # the same ControlNet again: counted once
        assert slot.memory_need is not None
        assert slot.memory_need.bytes == base.bytes + net.bytes
        slot.unload()
        run(roomy, "sd", unit("sd"))  # loaded afresh: counted afresh
        assert slot.memory_need.bytes == base.bytes + net.bytes
    finally:
        roomy.close()
    tight = Engine(
        EngineSettings(models_path=models, memory_budget=Budget(ram=base.bytes + net.bytes // 2))
    )
    try:
        run(tight, "sd")
        with pytest.raises(InsufficientMemory, match="needs about"):
            run(tight, "sd", unit("sd"))
        assert same(run(tight, "sd"), run(tight, "sd"))  # the model still serves
    finally:
        tight.close()
