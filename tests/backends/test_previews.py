"""Previews (partial images) of a running generation on both engines, in process and through a
worker process: at the documented steps, real images, and never a change to the final image."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from localimg.backends.previews import preview_size, preview_steps
from localimg.engine import Engine, EngineSettings, worker_slot_factory
from localimg.engine.batching import batch_key
from localimg.errors import InvalidRequest
from localimg.requests import ImageRequest, ProgressEvent

STEPS = 6


def test_preview_steps_are_evenly_spaced_and_never_more_than_one_a_step() -> None:
    assert preview_steps(20, 3) == {5, 10, 15}
    assert preview_steps(20, 1) == {10}
    assert preview_steps(4, 2) == {1, 3}
    assert preview_steps(4, 3) == {1, 2, 3}
    assert preview_steps(3, 3) == {1, 2, 3}
    assert preview_steps(3, 50) == {1, 2, 3}
    assert preview_steps(1, 1) == {1}
    assert preview_steps(20, 0) == frozenset()
    for steps in range(1, 40):
        for count in range(1, 12):
            got = preview_steps(steps, count)
            assert len(got) == min(steps, count)
            assert all(1 <= s <= steps for s in got)


def test_preview_size_keeps_the_aspect_and_caps_the_long_side() -> None:
    assert preview_size(64, 64) == (64, 64)
    assert preview_size(1024, 768) == (512, 384)
    assert preview_size(768, 1536) == (256, 512)


def test_a_request_with_previews_is_never_batched() -> None:
    assert batch_key(ImageRequest(prompt="a")) is not None
    assert batch_key(ImageRequest(prompt="a", previews=2)) is None


def test_projection_known_families_and_packed_latents() -> None:
    import torch

    from localimg.backends.diffusers.decode.previews import Previewer, projection_for

    assert projection_for("StableDiffusionPipeline", 4) is not None
    assert projection_for("StableDiffusionXLPipeline", 4) != projection_for("X", 4)
    assert projection_for("FluxPipeline", 16) is not None
    assert projection_for("StableDiffusion3Pipeline", 16) is not None
    assert projection_for("Flux2Pipeline", 32) is not None
    assert projection_for("SomethingPipeline", 16) is None

    class FakeFlux:  # the name is what picks the table
        vae_scale_factor = 8

    FakeFlux.__name__ = "FluxPipeline"
    maker = Previewer(FakeFlux())
    generator = torch.Generator().manual_seed(0)
    spatial = torch.randn(1, 16, 8, 12, generator=generator)  # a 64x96 image's latents
    # FLUX's packing: (B, C, h/2, 2, w/2, 2) → (B, tokens, C*4)
    packed = spatial.view(1, 16, 4, 2, 6, 2).permute(0, 2, 4, 1, 3, 5).reshape(1, 4 * 6, 16 * 4)
    from_packed = np.asarray(maker(packed, 96, 64))
    from_spatial = np.asarray(maker(spatial, 96, 64))
    assert from_packed.shape == (64, 96, 3)
    assert np.array_equal(from_packed, from_spatial)
    # An unknown channel count still gives an image (the first channels, normalised).
    FakeFlux.__name__ = "OddPipeline"
    odd = Previewer(FakeFlux())(torch.randn(1, 7, 8, 8, generator=generator), 64, 64)
    assert odd.size == (64, 64) and np.asarray(odd).std() > 10


def test_a_tiny_autoencoder_decodes_the_preview() -> None:
    import torch
    from diffusers import AutoencoderTiny

    from localimg.backends.diffusers.decode.previews import Previewer

    torch.manual_seed(0)
    vae: Any = AutoencoderTiny(
        encoder_block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
    )
    vae.eval()

    class Pipe:
        vae_scale_factor = 8

    pipe = Pipe()
    pipe.vae = vae  # type: ignore[attr-defined]
    maker = Previewer(pipe)
    assert maker.tiny is vae
    latents = torch.randn(1, 4, 8, 8)
    image = maker(latents, 64, 64)
    with torch.no_grad():
        direct = vae.decode(latents / vae.config.scaling_factor).sample[0]
    expected = ((direct.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0)
    assert np.array_equal(np.asarray(image), expected.numpy())


def _run(engine: Engine, model: str, previews: int) -> tuple[Image.Image, list[ProgressEvent]]:
    events: list[ProgressEvent] = []
    request = ImageRequest(prompt="a red fox", seed=42, steps=STEPS, previews=previews)
    job = engine.submit(model, request, progress=events.append)
    result = job.result(timeout=300)
    return result.images[0], events


def _check(engine: Engine, model: str, size: tuple[int, int]) -> None:
    plain, plain_events = _run(engine, model, 0)
    shown, events = _run(engine, model, 3)
    # Previews never change the final image.
    assert np.array_equal(np.asarray(plain), np.asarray(shown))
    assert all(e.preview is None for e in plain_events)
    with_preview = [e for e in events if e.preview is not None]
    assert [e.step for e in with_preview] == sorted(preview_steps(STEPS, 3))  # 2, 3, 5 of 6
    assert all(e.phase == "step" for e in with_preview)
    previews = [np.asarray(e.preview, dtype=np.int16) for e in with_preview]
    for each in with_preview:
        assert each.preview is not None
        assert each.preview.mode == "RGB" and each.preview.size == size
    assert all(p.std() > 0 for p in previews)  # real pictures, not blank
    assert not np.array_equal(previews[0], previews[-1])  # the generation moves on
    # One step event per step: a preview rides on its step's event.
    steps = [e.step for e in events if e.phase == "step"]
    assert steps == sorted(set(steps))


@pytest.fixture(scope="module")
def diffusers_models(tmp_path_factory: pytest.TempPathFactory, tiny_sd: Path) -> Path:
    folder = tmp_path_factory.mktemp("preview-models")
    (folder / "tiny.yaml").write_text(
        f"name: tiny\nbackend: diffusers\nparameters:\n  model: {tiny_sd}\n", encoding="utf-8"
    )
    return folder


@pytest.fixture(scope="module")
def diffusers_engine(diffusers_models: Path) -> Iterator[Engine]:
    engine = Engine(EngineSettings(models_path=diffusers_models))
    yield engine
    engine.close()


def test_diffusers_previews_at_the_spaced_steps_and_the_same_final_image(
    diffusers_engine: Engine,
) -> None:
    _check(diffusers_engine, "tiny", (64, 64))


def test_previews_cross_the_worker_pipe(diffusers_models: Path) -> None:
    settings = EngineSettings(models_path=diffusers_models)
    engine = Engine(settings, slot_factory=worker_slot_factory())
    try:
        _check(engine, "tiny", (64, 64))
    finally:
        engine.close()


@pytest.fixture(scope="module")
def ggml_engine(ggml_models_dir: Path) -> Iterator[Engine]:
    pytest.importorskip("stable_diffusion_cpp")
    engine = Engine(EngineSettings(models_path=ggml_models_dir))
    yield engine
    engine.close()


@pytest.mark.ggml
def test_ggml_previews_at_the_spaced_steps_and_the_same_final_image(ggml_engine: Engine) -> None:
    _check(ggml_engine, "stablediffusion", (64, 64))
    # And a call without previews after one with them runs clean (the callback is cleared).
    _again, events = _run(ggml_engine, "stablediffusion", 0)
    assert all(e.preview is None for e in events)


def test_previews_out_of_range_are_refused() -> None:
    with pytest.raises(InvalidRequest, match="previews"):
        ImageRequest(prompt="a", previews=51)


@pytest.mark.ggml
def test_ggml_previews_every_step_decode_with_taesd(
    ggml_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where every step is previewed anyway, a model with a TAESD previews with it (the library
    then decodes each step either way); fewer previews use the projection (as _check above)."""
    from localimg.backends.ggml import previews

    methods: list[str] = []
    real = previews.preview_method

    def recorded(*args: Any) -> str:
        methods.append(real(*args))
        return methods[-1]

    monkeypatch.setattr(previews, "preview_method", recorded)
    plain, _ = _run(ggml_engine, "stablediffusion", 0)
    shown, events = _run(ggml_engine, "stablediffusion", STEPS)
    assert methods == ["proj", "tae"]  # the plain call clears the callback (no previews made)
    assert np.array_equal(np.asarray(plain), np.asarray(shown))
    with_preview = [e for e in events if e.preview is not None]
    assert [e.step for e in with_preview] == list(range(1, STEPS + 1))
    assert all(np.asarray(e.preview).std() > 0 for e in with_preview)
