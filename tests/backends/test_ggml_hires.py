"""The latent hires fix on stable-diffusion.cpp: both passes in one generate_image call.

The tiny random SD1 model of tests/support/tiny_ggml.py at 64x64, cfg_scale 1 and 1-2 steps;
each hires call runs the second pass at 128 pixels a side (about a second).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("stable_diffusion_cpp")

from localimg.backends.base import RuntimeSettings, capabilities_of
from localimg.backends.ggml import hires as ggml_hires
from localimg.backends.ggml.backend import GgmlBackend
from localimg.config import load_config_file
from localimg.engine import merge_request
from localimg.errors import BackendError, InvalidRequest
from localimg.requests import ControlUnit, HiresFix, ImageRequest, ImageResult, ProgressEvent

pytestmark = pytest.mark.ggml


@pytest.fixture(scope="module")
def backend(ggml_models_dir: Path) -> Iterator[GgmlBackend]:
    loaded = GgmlBackend(RuntimeSettings())
    loaded.load(load_config_file(ggml_models_dir / "stablediffusion.yaml"), lambda e: None)
    yield loaded
    loaded.unload()


def run(
    backend: GgmlBackend, events: list[ProgressEvent] | None = None, **fields: Any
) -> ImageResult:
    assert backend.config is not None
    asked = ImageRequest(**{"prompt": "a red fox", "cfg_scale": 1.0, "steps": 1, **fields})
    merged = merge_request(asked, backend.config, backend.defaults, backend.option_keys)
    sink: list[ProgressEvent] = [] if events is None else events
    return backend.generate(merged, sink.append, threading.Event())


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_ggml_declares_latent_hires() -> None:
    assert capabilities_of(GgmlBackend).latent_hires


def test_ggml_latent_hires_returns_the_final_size(backend: GgmlBackend) -> None:
    scaled = run(backend, seed=5, hires=HiresFix(scale=2))
    assert [image.size for image in scaled.images] == [(128, 128)]
    sized = run(backend, seed=5, hires=HiresFix(width=128, height=192, upscaler="Latent (bicubic)"))
    assert sized.images[0].size == (128, 192)  # the wrapper's hires_width/height reach the library


@pytest.mark.slow
def test_ggml_hires_differs_from_a_plain_image_at_the_final_size(backend: GgmlBackend) -> None:
    fixed = run(backend, seed=7, hires=HiresFix(scale=2))
    plain = run(backend, seed=7, width=128, height=128)
    assert fixed.images[0].size == plain.images[0].size
    assert not np.array_equal(pixels(fixed.images[0]), pixels(plain.images[0]))


@pytest.mark.slow
def test_ggml_hires_same_seed_same_pixels_and_denoise_changes_them(backend: GgmlBackend) -> None:
    one = run(backend, seed=9, hires=HiresFix(scale=2, denoise=0.5))
    two = run(backend, seed=9, hires=HiresFix(scale=2, denoise=0.5))
    stronger = run(backend, seed=9, hires=HiresFix(scale=2, denoise=1.0))
    assert np.array_equal(pixels(one.images[0]), pixels(two.images[0]))
    assert not np.array_equal(pixels(one.images[0]), pixels(stronger.images[0]))


@pytest.mark.slow
def test_ggml_hires_progress_counts_both_passes_of_every_image(backend: GgmlBackend) -> None:
    events: list[ProgressEvent] = []
    # 1 first-pass step; hires steps 2 at denoise 0.5: a 4-step schedule, 3 of them run.
    run(backend, events, seed=3, n=2, hires=HiresFix(scale=2, steps=2, denoise=0.5))
    steps = [(e.step, e.total, e.image_index) for e in events if e.phase == "step"]
    assert steps == [(k, 8, 0) for k in range(1, 5)] + [(k, 8, 1) for k in range(5, 9)]
    decodes = [(e.step, e.total) for e in events if e.phase == "decode"]
    assert decodes == [(4, 8), (8, 8)]


@pytest.mark.parametrize(
    ("steps", "denoise", "runs"), [(2, 0.7, 2), (3, 0.5, 4), (4, 1.0, 4), (7, 0.7, 8), (1, 0.3, 1)]
)
def test_ggml_hires_second_pass_steps_follow_the_library(
    steps: int, denoise: float, runs: int
) -> None:
    assert ggml_hires.second_pass_steps(steps, denoise) == runs


@pytest.mark.slow
def test_ggml_hires_previews_are_counted_over_both_passes(backend: GgmlBackend) -> None:
    events: list[ProgressEvent] = []
    run(backend, events, seed=4, steps=2, previews=4, hires=HiresFix(scale=2, denoise=0.7))
    shown = [(e.step, e.preview.size) for e in events if e.phase == "step" and e.preview]
    # four steps in all (2 + 2), one preview after each, at the final size's preview size
    assert shown == [(k, (128, 128)) for k in range(1, 5)]


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        "latent",
        "Latent (nearest)",
        "Latent (nearest-exact)",
        "Latent (antialiased)",
        "Latent (bicubic antialiased)",
    ],
)
def test_ggml_hires_every_latent_mode_runs(backend: GgmlBackend, name: str) -> None:
    result = run(backend, seed=2, hires=HiresFix(scale=1.5, upscaler=name, denoise=0.3))
    assert result.images[0].size == (64, 64)  # 96 rounded down to the 64-pixel multiple


def test_ggml_hires_missing_library_mode_is_refused_naming_those_it_has(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ggml_hires, "library_modes", lambda: {"latent": "latent"})
    with pytest.raises(InvalidRequest, match=r"has: 'latent'") as caught:
        ggml_hires.library_name("Latent (bicubic)")
    assert caught.value.param == "hires_upscaler"


@pytest.mark.parametrize(
    ("hires", "words"),
    [
        (HiresFix(prompt="a blue fox"), "hires_prompt must be empty or the same"),
        (HiresFix(negative_prompt="blurry"), "hires_negative_prompt must be empty"),
    ],
)
def test_ggml_hires_prompts_of_their_own_are_refused(
    backend: GgmlBackend, hires: HiresFix, words: str
) -> None:
    assert backend.config is not None
    request = ImageRequest(prompt="a red fox", hires=hires)
    with pytest.raises(InvalidRequest, match=words):
        GgmlBackend.check_request(request, backend.config)
    same = ImageRequest(prompt="a red fox", hires=HiresFix(prompt="a red fox"))
    GgmlBackend.check_request(same, backend.config)


def test_ggml_hires_with_controlnet_is_refused(backend: GgmlBackend) -> None:
    assert backend.config is not None
    unit = ControlUnit(image=Image.new("RGB", (64, 64)), net="canny.safetensors")
    request = ImageRequest(prompt="fox", hires=HiresFix(), controls=(unit,))
    with pytest.raises(InvalidRequest, match="cannot take ControlNet units"):
        ggml_hires.check_request(request)


def test_ggml_hires_pixel_upscaler_never_runs_in_the_backend(backend: GgmlBackend) -> None:
    with pytest.raises(BackendError, match="pixel upscaler"):
        run(backend, seed=1, hires=HiresFix(upscaler="lanczos"))


def test_ggml_hires_struct_fix_sets_the_real_fields() -> None:
    import stable_diffusion_cpp as sd

    from localimg.backends.ggml import native

    native.install()
    params = sd.sd_hires_params_t(enabled=True, path=b"", width=128, height=192, steps=3)
    assert (params.target_width, params.target_height, params.steps) == (128, 192, 3)


@pytest.mark.slow
def test_ggml_hires_through_the_engine_writes_a1111s_parameters(ggml_models_dir: Path) -> None:
    from localimg.engine import Engine, EngineSettings
    from localimg.media.encode import a1111_parameters

    engine = Engine(EngineSettings(models_path=ggml_models_dir))
    try:
        events: list[ProgressEvent] = []
        asked = ImageRequest(
            prompt="a red fox", cfg_scale=1.0, steps=1, seed=8, hires=HiresFix(steps=1)
        )
        result = engine.generate("stablediffusion", asked, progress=events.append)
    finally:
        engine.close()
    assert result.images[0].size == (128, 128)
    assert result.request is not None and result.request.width == 64  # the first pass's
    text = a1111_parameters(result, 0)
    assert "Size: 64x64" in text and "Hires upscale: 2" in text
    assert "Hires upscaler: Latent" in text and "Denoising strength: 0.7" in text
    steps = [(e.step, e.total) for e in events if e.phase == "step"]
    assert steps == [(1, 2), (2, 2)]  # 1 + the library's 1 (int(1 / 0.7) = 1, trimmed)


def test_ggml_hires_is_refused_on_a_video_family() -> None:
    from localimg.backends.ggml.families import Family

    wan = Family("Wan 2.1", "Wan 2.1 T2V", 16, 832, 6.0, video=True)
    request = ImageRequest(prompt="fox", hires=HiresFix(width=128, height=128))
    with pytest.raises(InvalidRequest, match="makes videos") as caught:
        ggml_hires.check_family(request, wan)
    assert caught.value.param == "hires"
    ggml_hires.check_family(ImageRequest(prompt="fox"), wan)
