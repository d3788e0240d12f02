"""Anima (a diffusers modular pipeline) through the real diffusers backend and the engine, on a
tiny random model (tests/support/tiny_families_anima.py): recognised from its
modular_model_index.json or named by pipeline_type, deterministic, every parameter acting or
refused, progress and previews per step, cancel within the run, batches, and the image equal to
the bare modular pipeline's with the same inputs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from localimg.engine import Engine, EngineSettings
from localimg.errors import Cancelled, ConfigError
from localimg.request_parts import HiresFix
from localimg.requests import ImageRequest, ImageResult, ProgressEvent
from tests.support.engine_checks import backend_of, noise, refused

tiny_anima = pytest.importorskip("tests.support.tiny_families_anima")

STEPS = 2
LONG_PROMPT = "a small otter floating on its back in a calm blue river at dawn"


@pytest.fixture(scope="module")
def folder() -> Path:
    path: Path = tiny_anima.tiny_anima_path()
    return path


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory, folder: Path) -> Iterator[Engine]:
    models = tmp_path_factory.mktemp("anima-models")
    for name, extra in (
        ("anima", ""),  # recognised from the folder's modular_model_index.json
        ("anima-typed", "diffusers:\n  pipeline_type: AnimaModularPipeline\n"),
        ("anima-slicing", 'options: ["attention_slicing:true"]\n'),
        ("anima-taesd", 'options: ["vae:taesd", "taesd_path:/nowhere"]\n'),
        ("anima-nhwc", 'options: ["channels_last:true"]\n'),
    ):
        (models / f"{name}.yaml").write_text(
            f"name: {name}\nbackend: diffusers\nparameters:\n  model: {folder}\nstep: 2\n{extra}",
            encoding="utf-8",
        )
    (models / "anima.safetensors").write_bytes(b"")  # a single file: not how Anima loads
    (models / "anima-file.yaml").write_text(
        "name: anima-file\nbackend: diffusers\nparameters:\n  model: anima.safetensors\n"
        "diffusers:\n  pipeline_type: AnimaModularPipeline\n",
        encoding="utf-8",
    )
    engine = Engine(EngineSettings(models_path=models))
    yield engine
    engine.close()


def run(engine: Engine, name: str = "anima", **fields: Any) -> ImageResult:
    fields.setdefault("seed", 3)
    fields.setdefault("steps", STEPS)
    fields.setdefault("width", 32)
    fields.setdefault("height", 32)
    return engine.generate(name, ImageRequest(fields.pop("prompt", "an otter"), **fields))


def pixels(result: ImageResult, index: int = 0) -> np.ndarray:
    return np.asarray(result.images[index].convert("RGB"), dtype=np.int16)


def differ(a: ImageResult, b: ImageResult) -> bool:
    return bool(np.abs(pixels(a) - pixels(b)).max() > 0)


def test_recognised_from_its_folder_and_deterministic(engine: Engine) -> None:
    first = run(engine)
    described = backend_of(engine, "anima").describe()
    assert described["pipeline"] == "AnimaModularPipeline" and described["family"] == "Anima"
    assert first.images[0].size == (32, 32)
    assert not differ(first, run(engine))
    assert differ(first, run(engine, seed=4))
    defaults = backend_of(engine, "anima").defaults
    assert (defaults.width, defaults.height, defaults.cfg_scale) == (1024, 1024, 4.0)
    assert defaults.size_multiple == 16


def test_pipeline_type_names_it(engine: Engine) -> None:
    named = run(engine, "anima-typed")
    assert backend_of(engine, "anima-typed").describe()["pipeline"] == "AnimaModularPipeline"
    assert not differ(named, run(engine))


def test_every_parameter_changes_the_image(engine: Engine) -> None:
    first = run(engine)
    assert run(engine, width=48, height=64).images[0].size == (48, 64)
    assert differ(first, run(engine, steps=3))
    assert differ(first, run(engine, prompt="a red boat"))
    assert differ(first, run(engine, cfg_scale=1.0))
    assert differ(first, run(engine, cfg_scale=7.0))
    assert differ(first, run(engine, negative_prompt="blurry"))
    assert differ(first, run(engine, extra={"shift": 8.0}))
    long = run(engine, prompt=LONG_PROMPT)
    assert differ(long, run(engine, prompt=LONG_PROMPT, extra={"max_sequence_length": 4}))
    heun = run(engine, scheduler="heun")
    assert heun.scheduler == "Heun" and differ(first, heun)


def test_what_it_cannot_do_is_refused(engine: Engine) -> None:
    refused(lambda: run(engine, width=40), "multiples of 16")
    refused(lambda: run(engine, cfg_scale=1.0, negative_prompt="x"), "only with guidance")
    refused(lambda: run(engine, init_image=noise(0, 32), mask=noise(1, 32)), "does not inpaint")
    refused(lambda: run(engine, hires=HiresFix(width=64, height=64, denoise=0.5)), "lanczos")
    refused(lambda: run(engine, mode="edit", init_image=noise(0, 32)), "no reference images")
    refused(lambda: run(engine, extra={"guidance": 3.0}), "no separate distilled guidance")
    refused(lambda: run(engine, extra={"prompt_enhance": True}), "no prompt enhancer")
    refused(lambda: run(engine, extra={"max_sequence_length": 5000}), "at most 4096")
    refused(lambda: run(engine, num_frames=5), "makes images")
    refused(lambda: run(engine, clip_skip=2), "clip_skip")
    refused(lambda: run(engine, extra={"sigmas": [1.0, 0.5]}), "does not accept 'sigmas'")
    refused(lambda: run(engine, cache="first_block_cache"), "no diffusers step cache works")
    with pytest.raises(ConfigError, match="attention_slicing is not supported"):
        run(engine, "anima-slicing")
    with pytest.raises(ConfigError, match="vae:taesd is not supported"):
        run(engine, "anima-taesd")
    with pytest.raises(ConfigError, match="channels_last is not supported"):
        run(engine, "anima-nhwc")
    with pytest.raises(ConfigError, match=r"modular_model_index\.json"):
        run(engine, "anima-file")


def test_lora_tags_act_and_leave_no_trace(engine: Engine) -> None:
    """A LoRA in the models folder's loras/, in Anima's own key layout (diffusers converts it)."""
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(0)
    width = 2 * 12  # the tiny transformer's heads x head size
    tensors = {
        "diffusion_model.blocks.0.self_attn.q_proj.lora_A.weight": (2, width),
        "diffusion_model.blocks.0.self_attn.q_proj.lora_B.weight": (width, 2),
        "diffusion_model.llm_adapter.blocks.0.self_attn.q_proj.lora_A.weight": (2, 16),
        "diffusion_model.llm_adapter.blocks.0.self_attn.q_proj.lora_B.weight": (16, 2),
    }
    loras = engine.settings.models_path / "loras"
    loras.mkdir(exist_ok=True)
    save_file(
        {key: torch.randn(shape, generator=generator) for key, shape in tensors.items()},
        str(loras / "otter-style.safetensors"),
    )
    plain = run(engine)
    styled = run(engine, prompt="an otter <lora:otter-style:1>")
    assert differ(plain, styled)
    assert not differ(plain, run(engine))  # the adapter is off again


def test_an_input_image_is_img2img(engine: Engine) -> None:
    first = run(engine, init_image=noise(0, 32), strength=0.5, steps=4)
    assert not differ(first, run(engine, init_image=noise(0, 32), strength=0.5, steps=4))
    assert differ(first, run(engine, init_image=noise(1, 32), strength=0.5, steps=4))
    assert differ(first, run(engine, init_image=noise(0, 32), strength=0.9, steps=4))
    assert differ(first, run(engine, steps=4))
    refused(lambda: run(engine, init_image=noise(0, 32), strength=0.2), "leave no denoising step")
    # a pixel upscaler's hires fix: the engine's two passes, the second one img2img
    upscaled = run(engine, hires=HiresFix(width=64, height=64, upscaler="lanczos", denoise=0.5))
    assert upscaled.images[0].size == (64, 64)


def test_progress_and_previews_per_step(engine: Engine) -> None:
    events: list[ProgressEvent] = []
    request = ImageRequest("an otter", width=32, height=32, steps=3, seed=1, n=2, previews=3)
    engine.submit("anima", request, events.append).result(120)
    steps = [e for e in events if e.phase == "step"]
    assert [e.step for e in steps] == [1, 2, 3, 4, 5, 6]
    assert {e.total for e in steps} == {6}
    assert all(e.preview is not None and e.preview.size[0] > 0 for e in steps)


def test_cancel_stops_at_the_next_step(engine: Engine) -> None:
    run(engine)  # loaded
    events: list[ProgressEvent] = []

    def cancel_on_first_step(event: ProgressEvent) -> None:
        events.append(event)
        if event.phase == "step":
            job.cancel()

    request = ImageRequest("an otter", width=32, height=32, steps=50, seed=1, n=2)
    job = engine.submit("anima", request, progress=cancel_on_first_step)
    with pytest.raises(Cancelled):
        job.result(timeout=120)
    assert [e.step for e in events if e.phase == "step"] == [1]  # the other 49 were skipped
    assert not differ(run(engine), run(engine))  # the model works on after a cancel


def test_a_batch_gives_each_image_what_it_gets_alone(engine: Engine) -> None:
    import threading

    run(engine)
    backend = backend_of(engine, "anima")
    first = ImageRequest("an otter", width=32, height=32, steps=STEPS, seed=1, cfg_scale=4.0)
    requests = [
        first,
        first.with_(prompt="a red boat on a wide river at dusk", seed=2, n=2, negative_prompt="x"),
    ]
    quiet = [lambda _event: None] * 2
    batched = backend.generate_batch(requests, quiet, threading.Event())
    for request, result in zip(requests, batched, strict=True):
        alone = backend.generate(request, quiet[0], threading.Event())
        for lone, together in zip(alone.images, result.images, strict=True):
            assert np.array_equal(np.asarray(lone), np.asarray(together))


def bare_call(folder: Path, cfg: float, seed: int, **inputs: Any) -> np.ndarray:
    """The modular pipeline as diffusers' docs drive it: from_pretrained, load_components, a
    guider at the scale, the blocks' inputs."""
    import torch
    from diffusers import ClassifierFreeGuidance, ModularPipeline

    pipe = ModularPipeline.from_pretrained(str(folder))
    pipe.load_components(dtype=torch.float32)
    pipe.update_components(guider=ClassifierFreeGuidance(guidance_scale=cfg))
    with torch.inference_mode():
        images = pipe(generator=torch.Generator("cpu").manual_seed(seed), output="images", **inputs)
    return np.asarray(images[0].convert("RGB"), dtype=np.int16)


@pytest.mark.parametrize(("cfg", "negative"), [(4.0, None), (5.0, "blurry"), (1.0, None)])
def test_the_image_equals_the_bare_modular_call(
    engine: Engine, folder: Path, cfg: float, negative: str | None
) -> None:
    ours = run(engine, width=48, height=32, cfg_scale=cfg, negative_prompt=negative, seed=9)
    bare = bare_call(
        folder,
        cfg,
        9,
        prompt="an otter",
        negative_prompt=negative,
        width=48,
        height=32,
        num_inference_steps=STEPS,
    )
    assert np.abs(pixels(ours) - bare).max() <= 1


def test_img2img_equals_the_bare_modular_call(engine: Engine, folder: Path) -> None:
    image = noise(2, 32)
    ours = run(engine, init_image=image, strength=0.6, steps=4, seed=5)
    bare = bare_call(
        folder,
        4.0,
        5,
        prompt="an otter",
        image=image,
        strength=0.6,
        width=32,
        height=32,
        num_inference_steps=4,
    )
    assert np.abs(pixels(ours) - bare).max() <= 1


def test_a_hub_repo_is_recognised_by_its_modular_index(
    engine: Engine, tmp_path: Path, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hub id (from the Hugging Face cache, offline): modular_model_index.json, whose entries
    name the repo itself, is what marks it; each component loads from the repo's subfolder."""
    import shutil

    from tests.support.hf_cache import snapshot, use_cache

    repo = "localimg-test/tiny-anima"
    files = snapshot(use_cache(monkeypatch, tmp_path, offline=True), repo)
    shutil.copytree(folder, files, dirs_exist_ok=True)
    index = files / "modular_model_index.json"
    index.write_text(index.read_text(encoding="utf-8").replace(str(folder), repo))
    models = tmp_path / "models"
    models.mkdir()
    (models / "hub.yaml").write_text(
        f"name: hub\nbackend: diffusers\nparameters:\n  model: {repo}\n", encoding="utf-8"
    )
    hub = Engine(EngineSettings(models_path=models))
    try:
        from_hub = run(hub, "hub")
        assert backend_of(hub, "hub").describe()["pipeline"] == "AnimaModularPipeline"
    finally:
        hub.close()
    assert not differ(from_hub, run(engine))  # the same weights as the folder's
