"""Z-Image-Omni (ZImageOmniPipeline) and Z-Image base (ZImagePipeline with guidance) on the real
diffusers backend, through the engine, on tiny random pipelines: recognised from their folders,
deterministic, text-to-image and reference edits with one and two images, every parameter acts
or is refused, and the image equals the bare pipeline call with the same arguments."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from localimg.backends.diffusers.families import z_image_omni
from localimg.engine import Engine, EngineSettings
from localimg.requests import ImageRequest, ImageResult
from tests.support.engine_checks import backend_of, noise, refused

omni_support = pytest.importorskip("tests.support.tiny_families_z_image_omni")
tiny_families = pytest.importorskip("tests.support.tiny_families")

STEPS = 2
SIDE = 32  # the output size the tests make
REF = 64  # references: the pipeline refuses sides under 64 pixels
LONG_PROMPT = "a small otter floating on its back in a calm blue river at dawn, " * 2


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("z-image-omni-models")
    omni = omni_support.tiny_z_image_omni_path()
    base = tiny_families.tiny_z_image_path()
    yamls = {
        "omni": f"parameters:\n  model: {omni}\n",
        "omni-bf16": f"parameters:\n  model: {omni}\noptions: ['dtype:bfloat16']\n",
        "omni-trunc": f"parameters:\n  model: {omni}\noptions: ['cfg_truncation:0.0']\n",
        "z-image-base": f"parameters:\n  model: {base}\n",
    }
    for name, body in yamls.items():
        (folder / f"{name}.yaml").write_text(
            f"name: {name}\nbackend: diffusers\nstep: {STEPS}\n{body}", encoding="utf-8"
        )
    return folder


@pytest.fixture(scope="module")
def engine(models: Path) -> Iterator[Engine]:
    engine = Engine(EngineSettings(models_path=models))
    yield engine
    engine.close()


def reference(index: int, side: int = REF, height: int | None = None) -> Image.Image:
    colors = ["red", "navy", "green", "orange"]
    image = Image.new("RGB", (side, height or side), colors[index % len(colors)])
    image.paste("white", (side // 4, side // 4, side // 2, side // 2))
    return image


def run(engine: Engine, name: str = "omni", **fields: Any) -> ImageResult:
    fields.setdefault("seed", 5)
    fields.setdefault("width", SIDE)
    fields.setdefault("height", SIDE)
    if "image" in fields:
        images = fields.pop("image")
        fields["init_image"] = images[0]
        fields["reference_images"] = tuple(images[1:])
    return engine.generate(name, ImageRequest(fields.pop("prompt", "an otter"), **fields))


def pixels(result: ImageResult) -> np.ndarray:
    return np.asarray(result.images[0].convert("RGB"), dtype=np.int16)


def differ(a: ImageResult, b: ImageResult) -> bool:
    return bool(np.abs(pixels(a) - pixels(b)).max() > 0)


def bare_call(dtype: str = "float32", cast: bool = False, **kwargs: Any) -> np.ndarray:
    """ZImageOmniPipeline loaded and called by hand (`cast`: with the VAE input cast localimg
    installs, which a float32 VAE needs for reference edits)."""
    import diffusers
    import torch

    folder = str(omni_support.tiny_z_image_omni_path())
    pipe = diffusers.ZImageOmniPipeline.from_pretrained(folder, dtype=getattr(torch, dtype))
    pipe.set_progress_bar_config(disable=True)
    if cast:
        z_image_omni.encode_in_vae_dtype(pipe.vae)
    seed = kwargs.pop("seed")
    with torch.inference_mode():
        out = pipe(generator=torch.Generator("cpu").manual_seed(seed), **kwargs)
    return np.asarray(out.images[0].convert("RGB"), dtype=np.int16)


# -- recognised, deterministic, text to image ---------------------------------------------------


def test_omni_is_recognised_from_its_folder_and_deterministic(engine: Engine) -> None:
    first = run(engine)
    backend = backend_of(engine, "omni")
    info = backend.describe()
    assert info["pipeline"] == "ZImageOmniPipeline"  # no pipeline_type in the YAML
    assert info["family"] == "Z-Image-Omni"
    defaults = backend.defaults
    assert (defaults.width, defaults.height, defaults.cfg_scale) == (1024, 1024, 5.0)
    assert defaults.size_multiple == 4 and defaults.reference_edits  # 16 on the real model
    assert first.images[0].size == (SIDE, SIDE)
    assert not differ(first, run(engine))
    assert differ(first, run(engine, seed=6))
    assert differ(first, run(engine, steps=STEPS + 1))
    assert differ(first, run(engine, prompt="a red house"))
    assert run(engine, width=SIDE * 2).images[0].size == (SIDE * 2, SIDE)


def test_text_to_image_equals_the_bare_pipeline_call(engine: Engine) -> None:
    ours = run(engine, cfg_scale=3.0, negative_prompt="blurry", seed=9)
    bare = bare_call(
        prompt="an otter",
        negative_prompt="blurry",
        guidance_scale=3.0,
        num_inference_steps=STEPS,
        width=SIDE,
        height=SIDE,
        seed=9,
    )
    assert np.abs(pixels(ours) - bare).max() <= 1


def test_guidance_and_negative_prompt(engine: Engine) -> None:
    assert differ(run(engine, cfg_scale=0.0), run(engine, cfg_scale=4.0))
    plain = run(engine, cfg_scale=4.0)
    assert differ(plain, run(engine, cfg_scale=4.0, negative_prompt="blurry, dark"))
    refused(lambda: run(engine, cfg_scale=0.0, negative_prompt="blurry"), "only with guidance", "0")
    refused(lambda: run(engine, extra={"guidance": 3.5}), "guidance")
    refused(lambda: run(engine, extra={"prompt_enhance": True}), "no prompt enhancer")


# -- cfg_normalization, cfg_truncation ----------------------------------------------------------


def test_cfg_normalization_and_truncation_act_through_extra_and_options(engine: Engine) -> None:
    guided = run(engine, cfg_scale=5.0)
    normalized = run(engine, cfg_scale=5.0, extra={"cfg_normalization": True})
    assert differ(guided, normalized)
    assert differ(normalized, run(engine, cfg_scale=5.0, extra={"cfg_normalization": 0.5}))
    assert not differ(guided, run(engine, cfg_scale=5.0, extra={"cfg_normalization": False}))
    cut = run(engine, cfg_scale=5.0, extra={"cfg_truncation": 0.0})
    assert differ(guided, cut)
    assert not differ(guided, run(engine, cfg_scale=5.0, extra={"cfg_truncation": 1.0}))
    # the YAML's option is the same keyword; a request's extra overrides it
    assert not differ(cut, run(engine, "omni-trunc", cfg_scale=5.0))
    assert not differ(guided, run(engine, "omni-trunc", extra={"cfg_truncation": 1.0}))


@pytest.mark.parametrize("name", ["omni", "z-image-base"])
def test_cfg_keywords_are_refused_without_guidance_or_with_values_it_misreads(
    engine: Engine, name: str
) -> None:
    for key in ("cfg_normalization", "cfg_truncation"):
        refused(
            functools.partial(run, engine, name, cfg_scale=0.0, extra={key: 0.5}),
            key,
            "classifier-free guidance only",
            "above 0",
        )
    refused(lambda: run(engine, name, extra={"cfg_normalization": -1}), "number >= 0")
    refused(lambda: run(engine, name, extra={"cfg_normalization": "on"}), "give true")
    refused(lambda: run(engine, name, extra={"cfg_truncation": 1.5}), "from 0 to 1")
    refused(lambda: run(engine, name, extra={"cfg_truncation": True}), "from 0 to 1")
    refused(lambda: run(engine, "omni-trunc", cfg_scale=0.0), "cfg_truncation", "guidance only")


# -- text length -------------------------------------------------------------------------------


def test_max_sequence_length_cuts_a_long_prompt_and_its_limit_is_refused(engine: Engine) -> None:
    full = run(engine, prompt=LONG_PROMPT)
    assert differ(full, run(engine, prompt=LONG_PROMPT, extra={"max_sequence_length": 8}))
    axis = omni_support.TEXT_AXIS
    no_images = axis - 2 * z_image_omni.PIECE_POSITIONS
    refused(
        lambda: run(engine, extra={"max_sequence_length": no_images + 1}),
        f"at most {no_images} tokens",
        f"{axis} text positions",
    )
    two = axis - 5 * z_image_omni.PIECE_POSITIONS  # 4 pieces with two images
    images = [reference(0), reference(1)]
    refused(
        lambda: run(engine, image=images, extra={"max_sequence_length": two + 1}),
        f"at most {two} tokens with 2 input images",
    )
    assert run(engine, image=images, extra={"max_sequence_length": two}).images


# -- reference edits ----------------------------------------------------------------------------


def test_reference_edits_with_one_and_two_images(engine: Engine) -> None:
    one = run(engine, image=[reference(0)])
    assert one.images[0].size == (SIDE, SIDE)
    assert differ(one, run(engine))  # the reference acts
    assert differ(one, run(engine, image=[reference(1)]))
    assert not differ(one, run(engine, image=[reference(0)], mode="edit"))
    two = run(engine, image=[reference(0), reference(1)])
    assert differ(one, two)
    assert not differ(two, run(engine, image=[reference(0), reference(1)]))
    assert differ(two, run(engine, image=[reference(1), reference(0)]))


def test_an_edit_without_size_takes_the_first_image_size(engine: Engine) -> None:
    request = ImageRequest("an otter", seed=1, steps=1, init_image=reference(0))
    assert engine.generate("omni", request).images[0].size == (REF, REF)  # not 1024x1024


def test_a_reference_edit_equals_the_bare_pipeline_call_in_bfloat16(engine: Engine) -> None:
    """In bfloat16 (the dtype of the real weights, and of a GPU run) the pipeline runs as it is."""
    images = [reference(0), reference(1)]
    ours = run(engine, "omni-bf16", image=images, cfg_scale=3.0, seed=3)
    kwargs: dict[str, Any] = {"prompt": "an otter", "num_inference_steps": STEPS}
    kwargs.update(width=SIDE, height=SIDE)
    bare = bare_call("bfloat16", image=images, guidance_scale=3.0, seed=3, **kwargs)
    assert np.abs(pixels(ours) - bare).max() <= 1


def test_a_float32_reference_edit_equals_the_bare_call_with_the_vae_input_cast(
    engine: Engine,
) -> None:
    """diffusers 0.42 hands references to the VAE in bfloat16, which a float32 VAE refuses: the
    backend casts them to the VAE's dtype (z_image_omni.encode_in_vae_dtype)."""
    images = [reference(0)]
    ours = run(engine, image=images, seed=3)
    kwargs: dict[str, Any] = {"prompt": "an otter", "num_inference_steps": STEPS}
    kwargs.update(width=SIDE, height=SIDE)
    bare = bare_call(cast=True, image=images, guidance_scale=5.0, seed=3, **kwargs)
    assert np.abs(pixels(ours) - bare).max() <= 1


def test_references_the_pipeline_cannot_take_are_refused(engine: Engine) -> None:
    four = [reference(i) for i in range(4)]
    refused(lambda: run(engine, image=four), "takes 3 input images", "got 4")
    refused(lambda: run(engine, image=[reference(0, 32)]), "at least 64 pixels")
    refused(lambda: run(engine, image=[reference(0, 64, 576)]), "at most 8 times")
    # the tiny transformer places images up to 64x64 (its RoPE axes of 32, a VAE factor of 2)
    refused(lambda: run(engine, image=[reference(0, 64, 96)]), "read at 64x96", "up to 64x64")
    mask = Image.new("L", (REF, REF), 255)
    refused(lambda: run(engine, image=[reference(0)], mask=mask), "does not inpaint")
    refused(lambda: run(engine, image=[reference(0)], mode="img2img"), "reference edits")
    refused(lambda: run(engine, image=[reference(0)], strength=0.5), "strength")


# -- batches ------------------------------------------------------------------------------------


def test_a_batch_gives_each_image_what_it_gets_alone(engine: Engine) -> None:
    run(engine)  # loaded
    backend = backend_of(engine, "omni")
    first = ImageRequest("an otter", width=SIDE, height=SIDE, steps=STEPS, seed=1, cfg_scale=4.0)
    requests = [first, first.with_(prompt="a red boat on a wide river at dusk", seed=2, n=2)]
    quiet = [lambda _event: None] * 2
    batched = backend.generate_batch(requests, quiet, threading.Event())
    for request, result in zip(requests, batched, strict=True):
        alone = backend.generate(request, quiet[0], threading.Event())
        assert len(alone.images) == len(result.images) == request.n
        for lone, together in zip(alone.images, result.images, strict=True):
            assert np.array_equal(np.asarray(lone), np.asarray(together))


# -- Z-Image base: the non-distilled model on Z-Image's row --------------------------------------


def test_z_image_base_runs_guided_with_the_pipeline_defaults(engine: Engine) -> None:
    """Z-Image (base) loads as ZImagePipeline like Turbo: the same row, guidance at the pipeline's
    default 5.0 (Turbo's YAML sets 0), the negative prompt used whenever guidance is on."""
    plain = run(engine, "z-image-base")
    backend = backend_of(engine, "z-image-base")
    assert backend.describe()["family"] == "Z-Image"
    assert backend.defaults.cfg_scale == 5.0
    assert differ(plain, run(engine, "z-image-base", negative_prompt="blurry"))
    assert differ(plain, run(engine, "z-image-base", extra={"cfg_truncation": 0.0}))
    assert differ(plain, run(engine, "z-image-base", extra={"cfg_normalization": True}))
    img2img = run(engine, "z-image-base", image=[noise(0, SIDE)], strength=0.5, steps=4)
    assert differ(img2img, run(engine, "z-image-base", image=[noise(0, SIDE)], steps=4))
