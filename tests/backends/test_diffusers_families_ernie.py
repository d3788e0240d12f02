"""ERNIE-Image (ErnieImagePipeline) on the real diffusers backend, through the engine, on tiny
random pipelines (tests/support/tiny_families_ernie.py): recognised from its folder (with or
without the prompt enhancer), deterministic, every parameter changes the image or is refused,
the prompt enhancer off unless asked and seeded when on, and the image equals the bare call."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from localimg.backends.diffusers import families
from localimg.backends.diffusers.sampling import flow
from localimg.engine import Engine, EngineSettings
from localimg.requests import ImageRequest, ImageResult
from tests.support.engine_checks import backend_of, noise, refused

tiny = pytest.importorskip("tests.support.tiny_families_ernie")

STEPS = 2
SIDE = 32


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    folder = tmp_path_factory.mktemp("ernie-models")
    with_pe, without_pe = tiny.tiny_ernie_image_path(), tiny.tiny_ernie_image_no_pe_path()
    for name, path, extra in (
        ("ernie", with_pe, ""),
        ("ernie-no-pe", without_pe, ""),
        ("ernie-pe-on", with_pe, "options: ['use_pe:true']\n"),  # the pipeline's own name
        ("ernie-typed", without_pe, "diffusers:\n  pipeline_type: ErnieImagePipeline\n"),
    ):
        (folder / f"{name}.yaml").write_text(
            f"name: {name}\nbackend: diffusers\nparameters:\n  model: {path}\nstep: {STEPS}\n"
            f"{extra}",
            encoding="utf-8",
        )
    engine = Engine(EngineSettings(models_path=folder))
    yield engine
    engine.close()


def run(engine: Engine, name: str = "ernie", **fields: Any) -> ImageResult:
    fields.setdefault("seed", 5)
    fields.setdefault("width", SIDE)
    fields.setdefault("height", SIDE)
    return engine.generate(name, ImageRequest(fields.pop("prompt", "an otter"), **fields))


def pixels(result: ImageResult, index: int = 0) -> np.ndarray:
    return np.asarray(result.images[index].convert("RGB"), dtype=np.int16)


def differ(a: ImageResult, b: ImageResult) -> bool:
    return bool(np.abs(pixels(a) - pixels(b)).max() > 0)


# -- recognised, defaults, deterministic ---------------------------------------------------


@pytest.mark.parametrize("name", ["ernie", "ernie-no-pe", "ernie-typed"])
def test_recognised_from_its_folder_and_deterministic(engine: Engine, name: str) -> None:
    first = run(engine, name)
    backend = backend_of(engine, name)
    info = backend.describe()
    assert info["pipeline"] == "ErnieImagePipeline"
    assert info["family"] == families.FAMILIES["ErnieImagePipeline"].name == "ERNIE-Image"
    assert (backend.pipe.pe is None) == (name != "ernie")  # pe: null loads, without it
    assert first.images[0].size == (SIDE, SIDE)
    assert not differ(first, run(engine, name))
    assert differ(first, run(engine, name, seed=6))


def test_defaults_are_the_pipelines(engine: Engine) -> None:
    run(engine)
    defaults = backend_of(engine, "ernie").defaults
    assert (defaults.width, defaults.height) == (1024, 1024)
    assert defaults.cfg_scale == 4.0
    assert not defaults.reference_edits


def test_the_size_multiple_is_the_pipelines_scale_factor(engine: Engine) -> None:
    """vae_scale_factor counts the 2x2 patches already (16, as on the real model): a side that
    is a multiple of 16 but not of 32 is made, not refused (848x1264 is one it is shown at)."""
    run(engine)
    backend = backend_of(engine, "ernie")
    assert backend.defaults.size_multiple == backend.pipe.vae_scale_factor == 16
    assert run(engine, width=48, height=16).images[0].size == (48, 16)
    refused(lambda: run(engine, width=40), "multiples of 16", "try 32x32")


# -- each parameter acts ---------------------------------------------------------------------


def test_steps_size_prompt_and_n_change_the_image(engine: Engine) -> None:
    base = run(engine)
    assert differ(base, run(engine, steps=STEPS + 1))
    assert differ(base, run(engine, prompt="a red house"))
    assert run(engine, width=SIDE * 2).images[0].size == (SIDE * 2, SIDE)
    two = run(engine, n=2)
    assert len(two.images) == 2 and two.seeds == [5, 6]
    assert np.array_equal(pixels(two, 1), pixels(run(engine, seed=6)))


def test_cfg_scale_and_the_negative_prompt(engine: Engine) -> None:
    plain = run(engine, cfg_scale=1.0)
    guided = run(engine, cfg_scale=4.0)
    assert differ(plain, guided)
    assert differ(guided, run(engine, cfg_scale=4.0, negative_prompt="blurry, dark"))
    assert differ(guided, run(engine, prompt="an otter|blurry, dark", cfg_scale=4.0))
    refused(
        lambda: run(engine, cfg_scale=1.0, negative_prompt="blurry"),
        "only with guidance",
        "above 1",
    )


def test_shift_and_each_flow_sampler(engine: Engine) -> None:
    base = run(engine, steps=3)
    assert differ(base, run(engine, steps=3, extra={"shift": 6.0}))
    assert not differ(base, run(engine, steps=3))  # the model's own scheduler is back
    for sampler, spec in flow.FLOW_SCHEDULERS.items():
        result = run(engine, scheduler=sampler, steps=3)
        assert result.scheduler == spec.label
        assert type(backend_of(engine, "ernie").pipe.scheduler).__name__ == spec.class_name
        if sampler == "euler":  # the model's own
            assert not differ(base, result)
        else:
            assert differ(base, result)
        assert differ(result, run(engine, scheduler=sampler, steps=3, extra={"shift": 8.0}))
        # LCM's noise comes from the global generator (no generator reaches scheduler.step)
        assert not differ(result, run(engine, scheduler=sampler, steps=3))
    refused(lambda: run(engine, scheduler="ddim"), "flow-matching", "use one of: euler")


# -- what ERNIE-Image does not do is refused --------------------------------------------------


def test_what_the_pipeline_does_not_take_is_refused(engine: Engine) -> None:
    image = noise(0, SIDE)
    cases: list[tuple[dict[str, Any], tuple[str, ...]]] = [
        ({"extra": {"guidance": 3.5}}, ("no separate distilled guidance",)),
        ({"extra": {"max_sequence_length": 8}}, ("has no max_sequence_length",)),
        ({"clip_skip": 2}, ("clip_skip",)),
        ({"init_image": image, "reference_images": (image,)}, ("takes no reference images",)),
        ({"init_image": image, "mode": "edit"}, ("takes no reference images",)),
        ({"init_image": image}, ("does txt2img", "no img2img pipeline")),
        ({"init_image": image, "mask": Image.new("L", (SIDE, SIDE), 255)}, ("inpaint",)),
        ({"num_frames": 5}, ("video models only",)),
        ({"extra": {"not_a_keyword": 1}}, ("does not accept 'not_a_keyword'",)),
    ]
    for fields, words in cases:
        refused(lambda fields=fields: run(engine, **fields), *words)  # type: ignore[misc]


# -- the prompt enhancer ---------------------------------------------------------------------


def test_the_prompt_enhancer_is_off_unless_asked(engine: Engine) -> None:
    """The pipeline defaults use_pe to True; localimg passes False unless prompt_enhance asks:
    the image is the one of the same weights loaded without the enhancer."""
    plain = run(engine)
    assert not differ(plain, run(engine, extra={"prompt_enhance": False}))
    assert not differ(plain, run(engine, "ernie-no-pe"))


def test_the_prompt_enhancer_rewrites_the_prompt_the_same_way_for_a_seed(engine: Engine) -> None:
    plain = run(engine)
    enhanced = run(engine, extra={"prompt_enhance": True})
    assert differ(plain, enhanced)  # the model read another prompt
    assert not differ(enhanced, run(engine, extra={"prompt_enhance": True}))
    assert not differ(enhanced, run(engine, extra={"use_pe": True}))  # the pipeline's name
    other_seed = run(engine, seed=6, extra={"prompt_enhance": True})
    assert differ(other_seed, run(engine, seed=6))


def test_the_prompt_enhancer_from_the_yaml_and_switched_off_per_request(engine: Engine) -> None:
    on = run(engine, "ernie-pe-on")
    assert not differ(on, run(engine, extra={"prompt_enhance": True}))
    assert not differ(run(engine, "ernie-pe-on", extra={"prompt_enhance": False}), run(engine))
    assert not differ(run(engine, "ernie-pe-on", extra={"use_pe": False}), run(engine))


def test_the_prompt_enhancer_is_refused_without_it_or_with_a_bad_switch(engine: Engine) -> None:
    for extra in ({"prompt_enhance": True}, {"use_pe": True}):
        refused(
            lambda extra=extra: run(engine, "ernie-no-pe", extra=extra),  # type: ignore[misc]
            "loaded without its prompt enhancer",
            "pe",
        )
    refused(lambda: run(engine, extra={"use_pe": "yes"}), "use_pe must be true or false")
    refused(
        lambda: run(engine, extra={"use_pe": True, "prompt_enhance": False}),
        "disagrees with prompt_enhance",
    )


def test_without_its_tokenizer_the_enhancer_is_refused(engine: Engine) -> None:
    """The pipeline would skip the enhancer silently with `pe` but no `pe_tokenizer`."""
    run(engine)
    pipe = backend_of(engine, "ernie").pipe
    tokenizer = pipe.pe_tokenizer
    pipe.pe_tokenizer = None
    try:
        refused(lambda: run(engine, extra={"prompt_enhance": True}), "pe_tokenizer")
    finally:
        pipe.pe_tokenizer = tokenizer


# -- parity with the bare pipeline, batches -------------------------------------------------


def bare_call(folder: Path, seed: int, global_seed: int | None = None, **kwargs: Any) -> Any:
    import diffusers
    import torch

    pipe = diffusers.ErnieImagePipeline.from_pretrained(str(folder))
    pipe.set_progress_bar_config(disable=True)
    if global_seed is not None:
        torch.manual_seed(global_seed)
    with torch.inference_mode():
        out = pipe(generator=torch.Generator("cpu").manual_seed(seed), **kwargs)
    return np.asarray(out.images[0].convert("RGB"), dtype=np.int16), out.revised_prompts


def test_the_image_equals_the_bare_pipeline_call(engine: Engine) -> None:
    folder = tiny.tiny_ernie_image_path()
    common: dict[str, Any] = {
        "prompt": "an otter",
        "num_inference_steps": STEPS,
        "width": SIDE,
        "height": SIDE,
    }
    ours = run(engine, cfg_scale=4.0, negative_prompt="blurry", seed=9)
    bare, revised = bare_call(
        folder, 9, guidance_scale=4.0, negative_prompt="blurry", use_pe=False, **common
    )
    assert revised is None
    assert np.abs(pixels(ours) - bare).max() <= 1
    ours = run(engine, cfg_scale=1.0, seed=9, extra={"prompt_enhance": True})
    bare, revised = bare_call(folder, 9, global_seed=9, guidance_scale=1.0, use_pe=True, **common)
    assert revised and revised[0] != "an otter"  # the enhancer wrote another prompt
    assert np.abs(pixels(ours) - bare).max() <= 1


def test_a_batch_gives_each_image_what_it_gets_alone(engine: Engine) -> None:
    run(engine)
    backend = backend_of(engine, "ernie")
    first = ImageRequest("an otter", width=SIDE, height=SIDE, steps=STEPS, seed=1, cfg_scale=4.0)
    requests = [
        first,
        first.with_(prompt="a red boat on a wide river at dusk, painted in oils", seed=2, n=2),
    ]
    quiet = [lambda _event: None] * 2
    batched = backend.generate_batch(requests, quiet, threading.Event())
    for request, result in zip(requests, batched, strict=True):
        alone = backend.generate(request, quiet[0], threading.Event())
        assert len(alone.images) == len(result.images) == request.n
        for lone, together in zip(alone.images, result.images, strict=True):
            assert np.array_equal(np.asarray(lone), np.asarray(together))
