"""The tiny family pipelines reload from disk as their real class and generate deterministically.

Each is loaded the way localimg loads a model (`DiffusionPipeline.from_pretrained(folder)`), run
for 2 steps at a small size it accepts: the same seed must give the same pixels, another seed
other pixels. Edit families also run with one and two reference images.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from typing import Any

import numpy as np
import pytest

from tests.support.tiny_families import FAMILY_BUILDERS, small_edit_plus_references

# Per family: the call's keyword arguments (besides prompt, steps, generator, output_type).
CALLS: dict[str, dict[str, Any]] = {
    "ZImagePipeline": {
        "height": 32,
        "width": 32,
        "negative_prompt": "blurry",
        "guidance_scale": 3.0,
        "max_sequence_length": 64,
    },
    "Flux2KleinPipeline": {"height": 32, "width": 32, "max_sequence_length": 64},
    "Flux2Pipeline": {"height": 32, "width": 32, "guidance_scale": 4.0},
    "ChromaPipeline": {
        "height": 32,
        "width": 32,
        "negative_prompt": "blurry",
        "guidance_scale": 5.0,
        "max_sequence_length": 64,
    },
    # Kontext rescales the output to max_area (default 1 MP) at the requested aspect ratio.
    "FluxKontextPipeline": {"height": 32, "width": 32, "max_area": 32 * 32, "guidance_scale": 2.5},
    "QwenImagePipeline": {
        "height": 32,
        "width": 32,
        "negative_prompt": "blurry",
        "true_cfg_scale": 4.0,
    },
    "QwenImageEditPlusPipeline": {
        "height": 64,
        "width": 64,
        "negative_prompt": "blurry",
        "true_cfg_scale": 4.0,
    },
    "WanPipeline": {
        "height": 32,
        "width": 32,
        "num_frames": 5,
        "negative_prompt": "blurry",
        "guidance_scale": 5.0,
    },
    "WanImageToVideoPipeline": {
        "height": 32,
        "width": 32,
        "num_frames": 5,
        "negative_prompt": "blurry",
        "guidance_scale": 5.0,
    },
}
# Families that cannot run without an input image.
IMAGE_REQUIRED = {"QwenImageEditPlusPipeline", "WanImageToVideoPipeline"}
# Families whose image is one PIL image, not a list.
SINGLE_IMAGE = {"WanImageToVideoPipeline"}
# Families that take reference images through `image=[...]`: how many the tests give.
REFERENCES: dict[str, tuple[int, ...]] = {
    "Flux2KleinPipeline": (1, 2),
    "Flux2Pipeline": (1, 2),
    "FluxKontextPipeline": (1,),
    "QwenImageEditPlusPipeline": (2,),
}


# The size multiple each tiny pipeline needs (documented in tests/support/tiny_families.py).
MULTIPLES = {
    "ZImagePipeline": 4,
    "Flux2KleinPipeline": 4,
    "Flux2Pipeline": 4,
    "ChromaPipeline": 4,
    "FluxKontextPipeline": 16,
    "QwenImagePipeline": 16,
    "QwenImageEditPlusPipeline": 32,
    "WanPipeline": 16,
    "WanImageToVideoPipeline": 32,
}


@pytest.fixture(scope="module", autouse=True)
def small_references() -> Iterator[None]:
    """Qwen-Image-Edit-Plus references encoded at 128 px, not 1 MP (see the helper)."""
    with small_edit_plus_references():
        yield


@cache
def load(name: str) -> Any:
    from diffusers import DiffusionPipeline

    from localimg.backends.diffusers.load.processors import replacement_components

    folder = str(FAMILY_BUILDERS[name]())
    # Without torchvision, Qwen-Image-Edit's processor is built as localimg builds it.
    pipe = DiffusionPipeline.from_pretrained(folder, **replacement_components(name, folder, {}))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(name: str, seed: int, **extra: Any) -> np.ndarray:
    import torch

    kwargs = {**CALLS[name], **extra}
    if name in IMAGE_REQUIRED and "image" not in kwargs:
        images = reference_images(1)
        kwargs["image"] = images[0] if name in SINGLE_IMAGE else images
    out = load(name)(
        prompt="a red fox",
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
        **kwargs,
    )
    frames = out.frames if hasattr(out, "frames") else out.images
    return np.asarray(frames)


@pytest.mark.parametrize("name", sorted(CALLS))
def test_family_reloads_as_its_class_and_is_deterministic(name: str) -> None:
    assert type(load(name)).__name__ == name
    first = generate(name, 0)
    height, width = CALLS[name]["height"], CALLS[name]["width"]
    assert first.shape[0] == 1 and first.shape[-3:] == (height, width, 3)
    if "num_frames" in CALLS[name]:
        assert first.shape[1] == CALLS[name]["num_frames"]
    assert np.isfinite(first).all()
    assert np.array_equal(first, generate(name, 0))
    assert not np.array_equal(first, generate(name, 1))


@pytest.mark.parametrize("name", sorted(CALLS))
def test_family_size_multiple_is_the_documented_one(name: str) -> None:
    pipe = load(name)
    if hasattr(pipe, "vae_scale_factor_spatial"):  # Wan: the VAE's factor times the 2x2 patch
        multiple = pipe.vae_scale_factor_spatial * pipe.transformer.config.patch_size[1]
    else:  # the others pack 2x2 latent patches
        multiple = pipe.vae_scale_factor * 2
    assert multiple == MULTIPLES[name]
    assert CALLS[name]["height"] % multiple == 0 and CALLS[name]["width"] % multiple == 0


def test_image_to_video_follows_its_image() -> None:
    name = "WanImageToVideoPipeline"
    red, blue = reference_images(2)
    assert not np.array_equal(generate(name, 0, image=red), generate(name, 0, image=blue))


def test_wan22_ti2v_folder_loads_as_both_pipelines() -> None:
    """Wan 2.2 TI2V-5B is one checkpoint: saved as a WanPipeline, loadable for image-to-video."""
    import torch
    from diffusers import DiffusionPipeline, WanImageToVideoPipeline

    from tests.support.tiny_families import tiny_wan22_ti2v_path

    folder = str(tiny_wan22_ti2v_path())
    t2v = DiffusionPipeline.from_pretrained(folder)
    assert type(t2v).__name__ == "WanPipeline" and t2v.config.expand_timesteps
    call = {"prompt": "a fox", "num_inference_steps": 2, "height": 32, "width": 32}
    frames = t2v(num_frames=5, generator=torch.Generator().manual_seed(0), **call).frames
    assert np.asarray(frames).shape == (1, 5, 32, 32, 3)
    pytest.importorskip("ftfy")
    i2v = WanImageToVideoPipeline.from_pretrained(folder)
    assert i2v.image_encoder is None and i2v.config.expand_timesteps
    image = reference_images(1)[0]
    frames = i2v(image=image, num_frames=5, generator=torch.Generator().manual_seed(0), **call)
    assert np.asarray(frames.frames).shape == (1, 5, 32, 32, 3)


def reference_images(count: int) -> list[Any]:
    """Small solid images of different sizes (FLUX.2 wants at least 64 px a side)."""
    from PIL import Image

    sizes = [(80, 64), (64, 72)]
    colors = [(200, 30, 30), (30, 30, 200)]
    return [Image.new("RGB", sizes[i], colors[i]) for i in range(count)]


@pytest.mark.parametrize(
    ("name", "count"), [(n, c) for n, counts in sorted(REFERENCES.items()) for c in counts]
)
def test_edit_family_uses_its_reference_images(name: str, count: int) -> None:
    edited = generate(name, 0, image=reference_images(count))
    assert np.array_equal(edited, generate(name, 0, image=reference_images(count)))
    if name not in IMAGE_REQUIRED:
        plain = generate(name, 0)
        assert edited.shape == plain.shape
        assert not np.array_equal(edited, plain)
    if name == "FluxKontextPipeline":  # its default: the image resized to a Kontext resolution
        resized = generate(name, 0, image=reference_images(count), _auto_resize=False)
        assert not np.array_equal(edited, resized)
    if count > 1:
        assert not np.array_equal(edited, generate(name, 0, image=reference_images(count - 1)))
