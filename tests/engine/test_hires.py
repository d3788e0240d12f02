"""The hires fix through the engine on real tiny pipelines: a latent upscaler inside the diffusers
backend, a pixel upscaler run by the slot over two backend calls (in process and in a worker),
progress over both passes, the YAML's block, the refusals before any step, the PNG fields."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from localimg.engine import Engine, EngineSettings, WorkerOptions, worker_slot_factory
from localimg.engine.batching import batch_key
from localimg.errors import BackendError, Cancelled, InvalidRequest
from localimg.media.encode import a1111_parameters
from localimg.requests import HiresFix, ImageRequest, ImageResult, ProgressEvent

SIDE = 32  # the first pass; the second is 64


def write_model(folder: Path, name: str, model: Path, extra: str = "") -> None:
    text = f"name: {name}\nbackend: diffusers\nparameters:\n  model: {model}\nstep: 2\n{extra}"
    (folder / f"{name}.yaml").write_text(text, encoding="utf-8")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, tiny_sd: Path) -> Path:
    folder = tmp_path_factory.mktemp("hires") / "models"
    folder.mkdir()
    write_model(folder, "sd", tiny_sd)
    hires = "hires:\n  scale: 2\n  upscaler: Lanczos\n  steps: 2\n  denoise: 0.6\n"
    write_model(folder, "sd-hires", tiny_sd, hires)
    return folder


@pytest.fixture(scope="module")
def engine(models: Path) -> Iterator[Engine]:
    engine = Engine(EngineSettings(models_path=models, keep_alive=None))
    yield engine
    engine.close()


def ask(hires: HiresFix | None = None, **fields: object) -> ImageRequest:
    values: dict[str, object] = {"width": SIDE, "height": SIDE, "seed": 7, "steps": 2}
    values.update(fields)
    return ImageRequest(prompt="an otter", hires=hires, **values)  # type: ignore[arg-type]


def pixels(result: ImageResult) -> list[bytes]:
    return [image.tobytes() for image in result.images]


def test_latent_and_lanczos_make_the_final_size_and_differ(engine: Engine) -> None:
    plain = engine.generate("sd", ask(width=64, height=64))
    latent = engine.generate("sd", ask(HiresFix(scale=2)))
    lanczos = engine.generate("sd", ask(HiresFix(scale=2, upscaler="lanczos")))
    for result in (latent, lanczos):
        assert result.images[0].size == (64, 64)
        assert result.request is not None and result.request.hires is not None
        assert (result.request.width, result.request.hires.width) == (SIDE, 64)
    assert len({pixels(r)[0] for r in (plain, latent, lanczos)}) == 3
    assert pixels(engine.generate("sd", ask(HiresFix(scale=2)))) == pixels(latent)
    again = engine.generate("sd", ask(HiresFix(scale=2, upscaler="lanczos")))
    assert pixels(again) == pixels(lanczos)
    nearest = engine.generate("sd", ask(HiresFix(scale=2, upscaler="Latent (nearest)")))
    assert pixels(nearest) != pixels(latent)
    assert "hires_upscale" in lanczos.timings and "hires_inference" in lanczos.timings


@pytest.mark.parametrize("upscaler", ["latent", "lanczos"])
def test_denoise_and_steps_change_the_image(engine: Engine, upscaler: str) -> None:
    base = pixels(engine.generate("sd", ask(HiresFix(upscaler=upscaler, denoise=0.5))))
    denoised = engine.generate("sd", ask(HiresFix(upscaler=upscaler, denoise=1.0)))
    stepped = engine.generate("sd", ask(HiresFix(upscaler=upscaler, denoise=0.5, steps=4)))
    assert pixels(denoised) != base and pixels(stepped) != base


@pytest.mark.parametrize("upscaler", ["latent", "lanczos"])
def test_progress_counts_both_passes_with_previews_from_each(engine: Engine, upscaler: str) -> None:
    events: list[ProgressEvent] = []
    hires = HiresFix(upscaler=upscaler, steps=4, denoise=0.5)
    result = engine.generate("sd", ask(hires, n=2, previews=2), events.append)
    assert [image.size for image in result.images] == [(64, 64)] * 2
    steps = [e for e in events if e.phase == "step"]
    total = 2 * (2 + 2)  # two images: 2 first-pass steps + int(4 * 0.5)
    assert {e.total for e in steps} == {total}
    assert [e.step for e in steps] == sorted(e.step for e in steps)
    assert steps[-1].step == total and len(steps) == total
    assert events[-1].phase == "done" and events[-1].total == total
    previews = [e.preview for e in steps if e.preview is not None]
    assert {p.size for p in previews} == {(SIDE, SIDE), (64, 64)}


def test_the_yaml_block_applies_to_text_to_image_and_a_disabled_fix_turns_it_off(
    engine: Engine,
) -> None:
    on = engine.generate("sd-hires", ask())
    assert on.images[0].size == (64, 64)
    assert on.request is not None and on.request.hires is not None
    assert (on.request.hires.upscaler, on.request.hires.denoise) == ("lanczos", 0.6)
    off = engine.generate("sd-hires", ask(HiresFix(enabled=False)))
    assert off.images[0].size == (SIDE, SIDE)
    start = Image.new("RGB", (SIDE, SIDE), "gray")  # img2img runs as asked, without the fix
    edited = engine.generate("sd-hires", ask(init_image=start, strength=0.5))
    assert edited.images[0].size == (SIDE, SIDE)
    assert edited.request is not None and edited.request.hires is None


def test_unknown_upscalers_and_input_images_are_refused_before_queueing(engine: Engine) -> None:
    with pytest.raises(InvalidRequest, match="no hires upscaler named 'sharpest'") as caught:
        engine.submit("sd", ask(HiresFix(upscaler="sharpest")))
    assert caught.value.param == "hires_upscaler"
    assert "lanczos" in str(caught.value) and "'latent (bicubic)'" in str(caught.value)
    with pytest.raises(InvalidRequest, match="text-to-image"):
        engine.submit("sd", ask(HiresFix(), init_image=Image.new("RGB", (SIDE, SIDE))))


def test_a_failing_second_pass_fails_the_request(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    slot = engine.slot_for(engine.resolve("sd"))

    def broken(image: Image.Image, name: str, scale: float) -> Image.Image:
        raise BackendError("the upscaler broke")

    monkeypatch.setattr(slot, "upscale", broken)
    with pytest.raises(BackendError, match="the upscaler broke"):
        engine.generate("sd", ask(HiresFix(upscaler="lanczos")))


@pytest.mark.parametrize("upscaler", ["latent", "lanczos"])
def test_a_cancel_between_the_passes_stops_the_request(engine: Engine, upscaler: str) -> None:
    job = engine.submit("sd", ask(HiresFix(upscaler=upscaler, steps=4)))

    def cancel_after_the_first_pass(event: ProgressEvent) -> None:
        if event.phase == "step" and event.step >= 2:
            job.cancel()

    job.listeners.append(cancel_after_the_first_pass)
    with pytest.raises(Cancelled):
        job.result(120)


def test_the_png_parameters_carry_the_hires_fields(engine: Engine) -> None:
    scaled = engine.generate("sd", ask(HiresFix(scale=2, steps=3)))
    text = a1111_parameters(scaled, 0)
    assert "Size: 32x32" in text and "Hires upscale: 2" in text and "Hires steps: 3" in text
    assert "Hires upscaler: Latent" in text and "Denoising strength: 0.7" in text
    sized = engine.generate(
        "sd",
        ask(HiresFix(width=64, height=64, upscaler="lanczos", prompt="a cat, detailed")),
    )
    text = a1111_parameters(sized, 0)
    assert "Hires resize: 64x64" in text and "Hires upscaler: Lanczos" in text
    assert 'Hires prompt: "a cat, detailed"' in text and "Hires steps" not in text


def test_a_hires_request_never_batches() -> None:
    assert batch_key(ask()) is not None
    assert batch_key(ask(HiresFix())) is None


def test_a_family_without_img2img_is_refused_before_any_step(
    tmp_path: Path, tiny_family: object
) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    write_model(folder, "klein", tiny_family("flux2_klein"))  # type: ignore[operator]
    engine = Engine(EngineSettings(models_path=folder, keep_alive=None))
    try:
        for upscaler in ("latent", "lanczos"):
            events: list[ProgressEvent] = []
            with pytest.raises(InvalidRequest, match="img2img") as caught:
                engine.generate("klein", ask(HiresFix(upscaler=upscaler)), events.append)
            assert caught.value.param == "hires"
            assert not [e for e in events if e.phase == "step"]
    finally:
        engine.close()


def test_sdxl_runs_both_upscalers(tmp_path: Path) -> None:
    from tests.support.tiny_sdxl_sd3 import tiny_sdxl_path

    folder = tmp_path / "models"
    folder.mkdir()
    write_model(folder, "xl", tiny_sdxl_path())
    engine = Engine(EngineSettings(models_path=folder, keep_alive=None))
    try:
        plain = engine.generate("xl", ask(width=64, height=64))
        found = [plain.images[0].tobytes()]
        for upscaler in ("latent", "lanczos"):
            result = engine.generate("xl", ask(HiresFix(upscaler=upscaler)))
            assert result.images[0].size == (64, 64)
            found.append(result.images[0].tobytes())
        assert len(set(found)) == 3
    finally:
        engine.close()


@pytest.mark.slow
def test_a_worker_process_gives_the_in_process_pixels(engine: Engine, models: Path) -> None:
    factory = worker_slot_factory(WorkerOptions(cancel_grace=20))
    settings = EngineSettings(models_path=models, keep_alive=None)
    workers = Engine(settings, slot_factory=factory)
    try:
        for upscaler in ("lanczos", "latent"):
            request = ask(HiresFix(upscaler=upscaler), n=2)
            events: list[ProgressEvent] = []
            remote = workers.generate("sd", request, events.append)
            assert pixels(remote) == pixels(engine.generate("sd", request))
            steps = [e.step for e in events if e.phase == "step"]
            assert steps == sorted(steps) and steps[-1] == 2 * (2 + 1)
            assert events[-1].phase == "done"
    finally:
        workers.close()
