"""The 2025-26 families through the real stable-diffusion.cpp: FLUX.2 klein (text to image and
reference edits) on tiny random checkpoints from tests/support/tiny_ggml_families.py.

What the tiny files cover and what they cannot is written in that module's docstring.
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

from localimg.backends.base import RuntimeSettings
from localimg.backends.ggml.backend import GgmlBackend
from localimg.config import load_config_file
from localimg.engine import Engine, EngineSettings
from localimg.errors import ConfigError, InvalidRequest
from localimg.requests import ImageRequest, ImageResult, ProgressEvent
from tests.support.tiny_ggml import link_or_copy
from tests.support.tiny_ggml_families import flux2_klein_files

pytestmark = pytest.mark.ggml

KLEIN_YAML = """\
name: {name}
backend: stablediffusion-ggml
parameters:
  model: flux-2-klein-4b.safetensors
step: 2
size: 64x64
options:
- "diffusion_model:true"
- "llm_path:qwen_3_4b.safetensors"
- "taesd_path:taef2.safetensors"
- "sampler:euler"
"""


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def write_klein(folder: Path, name: str, options: list[str] = ()) -> None:  # type: ignore[assignment]
    body = KLEIN_YAML.format(name=name) + "".join(f'- "{o}"\n' for o in options)
    (folder / f"{name}.yaml").write_text(body, encoding="utf-8")


@pytest.fixture(scope="module")
def klein_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    files = flux2_klein_files()
    folder = tmp_path_factory.mktemp("klein-models")
    link_or_copy(files["diffusion_model"], folder / "flux-2-klein-4b.safetensors")
    link_or_copy(files["llm"], folder / "qwen_3_4b.safetensors")
    link_or_copy(files["taesd"], folder / "taef2.safetensors")
    write_klein(folder, "klein")
    write_klein(folder, "klein-ref-index", ["increase_ref_index:true"])
    write_klein(folder, "klein-offload", ["offload_params_to_cpu:true"])
    write_klein(folder, "klein-fa", ["diffusion_flash_attn:true"])
    write_klein(folder, "klein-shift", ["flow_shift:3"])
    write_klein(folder, "klein-zero-cond", ["qwen_image_zero_cond_t:true"])
    write_klein(folder, "klein-guidance", ["guidance:3.5"])
    write_klein(folder, "klein-high-noise", ["high_noise_steps:4"])
    return folder


@pytest.fixture(scope="module")
def engine(klein_dir: Path) -> Iterator[Engine]:
    eng = Engine(EngineSettings(models_path=klein_dir))
    yield eng
    eng.close()


def run(engine: Engine, model: str = "klein", **fields: object) -> ImageResult:
    return engine.generate(model, ImageRequest(**{"prompt": "a red fox", **fields}))  # type: ignore[arg-type]


def square(color: tuple[int, int, int], size: int = 64) -> Image.Image:
    image = Image.new("RGB", (size, size), color)
    image.paste((255 - color[0], 255 - color[1], 255 - color[2]), (0, 0, size // 2, size // 2))
    return image


RED, BLUE = square((230, 30, 30)), square((20, 40, 220))


def test_klein_is_recognised_with_its_defaults(klein_dir: Path) -> None:
    config = load_config_file(klein_dir / "klein.yaml")
    backend = GgmlBackend(RuntimeSettings())
    backend.load(config, lambda e: None)
    try:
        assert backend.family == "Flux.2 klein" and backend.traits.label == "FLUX.2 klein"
        defaults = backend.defaults
        assert (defaults.width, defaults.height, defaults.cfg_scale) == (1024, 1024, 1.0)
        assert defaults.size_multiple == 16  # the FLUX.2 VAE is 16x
        assert backend.traits.references == 10 and not backend.traits.video
        assert "Flux.2 klein" in backend.describe()["pipeline"]
    finally:
        backend.unload()


def test_txt2img_same_seed_same_pixels_and_the_prompt_counts(engine: Engine) -> None:
    events: list[ProgressEvent] = []
    first = engine.generate(
        "klein", ImageRequest(prompt="a red fox", seed=7), progress=events.append
    )
    again = run(engine, seed=7)
    other_seed = run(engine, seed=8)
    other_prompt = run(engine, seed=7, prompt="a blue whale")
    image = first.images[0]
    assert image.mode == "RGB" and image.size == (64, 64)
    assert first.request is not None and first.request.cfg_scale == 1.0
    assert first.scheduler == "Euler"
    assert [(e.step, e.total) for e in events if e.phase == "step"] == [(1, 2), (2, 2)]
    assert 30 < pixels(image).mean() < 225
    assert np.array_equal(pixels(image), pixels(again.images[0]))
    assert not np.array_equal(pixels(image), pixels(other_seed.images[0]))
    assert not np.array_equal(pixels(image), pixels(other_prompt.images[0]))


def test_size_multiple_is_16_and_other_sizes_are_refused(engine: Engine) -> None:
    with pytest.raises(InvalidRequest, match=r"FLUX.2 klein model takes sides that are multiples"):
        run(engine, width=72, height=64)
    assert run(engine, seed=1, width=80, height=48).images[0].size == (80, 48)


def test_negative_prompt_needs_cfg_other_than_1(engine: Engine) -> None:
    with pytest.raises(InvalidRequest, match="negative_prompt needs cfg_scale other than 1"):
        run(engine, negative_prompt="blurry")
    plain = run(engine, seed=3, cfg_scale=2.0)
    negative = run(engine, seed=3, cfg_scale=2.0, negative_prompt="blurry")
    assert not np.array_equal(pixels(plain.images[0]), pixels(negative.images[0]))


def test_distilled_guidance_is_refused_on_klein(engine: Engine) -> None:
    with pytest.raises(InvalidRequest, match=r"FLUX\.2 klein has none"):
        run(engine, "klein-guidance", seed=1)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("klein-shift", "flow_shift has no effect here: FLUX.2 sets its shift"),
        ("klein-ref-index", "FLUX.2 always gives each reference its own index"),
        ("klein-zero-cond", "qwen_image_zero_cond_t applies to Qwen-Image-Edit-2511"),
        ("klein-high-noise", "high_noise_steps sets how the Wan 2.2 high-noise expert"),
    ],
)
def test_options_klein_cannot_use_are_refused(engine: Engine, model: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        run(engine, model, seed=1)


def test_speed_options_load_and_keep_the_image(engine: Engine) -> None:
    """offload_params_to_cpu and flash attention change where and how it computes, not what."""
    plain = pixels(run(engine, seed=5).images[0])
    offload = pixels(run(engine, "klein-offload", seed=5).images[0])
    flash = pixels(run(engine, "klein-fa", seed=5).images[0])
    assert np.array_equal(plain, offload)
    assert np.abs(plain - flash).mean() < 2.0


def test_an_image_on_klein_is_a_reference_edit(engine: Engine) -> None:
    text = run(engine, seed=4)
    red = run(engine, seed=4, init_image=RED)
    explicit = run(engine, seed=4, init_image=RED, mode="edit")
    blue = run(engine, seed=4, init_image=BLUE)
    assert red.images[0].size == (64, 64)
    assert np.array_equal(pixels(red.images[0]), pixels(explicit.images[0]))
    assert not np.array_equal(pixels(red.images[0]), pixels(text.images[0]))
    assert not np.array_equal(pixels(red.images[0]), pixels(blue.images[0]))


def test_two_reference_images_and_their_order(engine: Engine) -> None:
    events: list[ProgressEvent] = []
    both = engine.generate(
        "klein",
        ImageRequest(prompt="fox", seed=4, init_image=RED, reference_images=(BLUE,)),
        progress=events.append,
    )
    swapped = run(engine, prompt="fox", seed=4, init_image=BLUE, reference_images=(RED,))
    one = run(engine, prompt="fox", seed=4, init_image=RED)
    assert [e.step for e in events if e.phase == "step"] == [1, 2]  # no strength: every step
    for other in (swapped, one):
        assert not np.array_equal(pixels(both.images[0]), pixels(other.images[0]))


def test_reference_limits_masks_and_strength(engine: Engine) -> None:
    with pytest.raises(InvalidRequest, match=r"FLUX\.2 klein takes 10 input images; got 11"):
        run(engine, init_image=RED, reference_images=(BLUE,) * 10)
    mask = Image.new("L", (64, 64), 255)
    with pytest.raises(InvalidRequest, match="does reference edits and does not inpaint"):
        run(engine, init_image=RED, mask=mask)
    with pytest.raises(InvalidRequest, match="strength is for img2img"):
        run(engine, init_image=RED, strength=0.5)


def test_img2img_on_klein_when_asked(engine: Engine) -> None:
    light = run(engine, seed=6, init_image=RED, mode="img2img", strength=0.3, steps=4)
    edit = run(engine, seed=6, init_image=RED, steps=4)
    assert not np.array_equal(pixels(light.images[0]), pixels(edit.images[0]))
    image = pixels(light.images[0])
    assert image[..., 0].mean() > image[..., 2].mean()  # a light touch keeps the red input


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"mode": "txt2vid"}, "does not do txt2vid with FLUX.2 klein"),
        ({"num_frames": 5}, "num_frames is for video models; FLUX.2 klein makes images"),
        ({"fps": 8.0}, "fps is for video models"),
    ],
)
def test_video_fields_are_refused_on_an_image_model(
    engine: Engine, fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        run(engine, **fields)


def test_cancel_before_the_call(klein_dir: Path) -> None:
    from localimg.engine import merge_request
    from localimg.errors import Cancelled

    config = load_config_file(klein_dir / "klein.yaml")
    backend = GgmlBackend(RuntimeSettings())
    backend.load(config, lambda e: None)
    try:
        request = merge_request(
            ImageRequest(prompt="fox", seed=1, init_image=RED),
            config,
            backend.defaults,
            backend.option_keys,
        )
        cancel = threading.Event()
        cancel.set()
        with pytest.raises(Cancelled):
            backend.generate(request, lambda e: None, cancel)
    finally:
        backend.unload()


# -- FLUX.1 and FLUX.1 Kontext -------------------------------------------------------------------

FLUX1_YAML = """\
name: {name}
backend: stablediffusion-ggml
parameters:
  model: flux1-kontext-dev-Q4_0.gguf
step: 2
size: 64x64
options:
- "diffusion_model:true"
- "clip_l_path:clip_l.safetensors"
- "taesd_path:taef1.safetensors"
"""


@pytest.fixture(scope="module")
def flux1(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    from tests.support.tiny_ggml_families import flux1_files

    files = flux1_files()
    folder = tmp_path_factory.mktemp("flux1-models")
    link_or_copy(files["diffusion_model"], folder / "flux1-kontext-dev-Q4_0.gguf")
    link_or_copy(files["clip_l"], folder / "clip_l.safetensors")
    link_or_copy(files["taesd"], folder / "taef1.safetensors")
    variants = {
        "flux1": [],
        "kontext": ["reference_edit:true"],
        "flux1-shift": ["flow_shift:3"],
        "kontext-index": ["reference_edit:true", "increase_ref_index:true"],
    }
    for name, options in variants.items():
        body = FLUX1_YAML.format(name=name) + "".join(f'- "{o}"\n' for o in options)
        (folder / f"{name}.yaml").write_text(body, encoding="utf-8")
    eng = Engine(EngineSettings(models_path=folder))
    yield eng
    eng.close()


def test_flux1_prompt_guidance_flow_shift_and_its_8px_sizes(flux1: Engine) -> None:
    plain = run(flux1, "flux1", seed=2)
    assert plain.request is not None and plain.request.cfg_scale == 1.0
    for other in (
        run(flux1, "flux1", seed=2, prompt="a blue whale"),
        run(flux1, "flux1", seed=2, extra={"guidance": 8.0}),
        run(flux1, "flux1-shift", seed=2),
    ):
        assert not np.array_equal(pixels(plain.images[0]), pixels(other.images[0]))
    assert run(flux1, "flux1", seed=2, width=72, height=56).images[0].size == (72, 56)


def test_an_image_on_flux1_is_img2img_and_references_need_kontext(flux1: Engine) -> None:
    events: list[ProgressEvent] = []
    flux1.generate(
        "flux1",
        ImageRequest(prompt="fox", seed=2, init_image=RED, strength=0.5),
        progress=events.append,
    )
    assert [e.step for e in events if e.phase == "step"] == [1, 2]  # int(2 * 0.5) + 1
    with pytest.raises(InvalidRequest, match="reference_edit:true"):
        run(flux1, "flux1", init_image=RED, mode="edit")


def test_kontext_takes_one_reference_image(flux1: Engine) -> None:
    text = run(flux1, "kontext", seed=2)
    edit = run(flux1, "kontext", seed=2, init_image=RED)
    assert not np.array_equal(pixels(text.images[0]), pixels(edit.images[0]))
    with pytest.raises(InvalidRequest, match=r"FLUX\.1 Kontext takes 1 input image; got 2"):
        run(flux1, "kontext", init_image=RED, reference_images=(BLUE,))
    with pytest.raises(ConfigError, match="orders the reference images of Qwen-Image-Edit"):
        run(flux1, "kontext-index", seed=2)


# -- Qwen-Image (one block at full width: slow) ---------------------------------------------------

QWEN_YAML = """\
name: {name}
backend: stablediffusion-ggml
parameters:
  model: qwen-image-Q4_0.gguf
step: 2
size: 32x32
options:
- "diffusion_model:true"
- "llm_path:Qwen2.5-VL-7B-Instruct-Q4_0.gguf"
- "taesd_path:taew2_1.safetensors"
"""


@pytest.fixture(scope="module")
def qwen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    from tests.support.tiny_ggml_families import qwen_image_files

    files = qwen_image_files()
    folder = tmp_path_factory.mktemp("qwen-models")
    link_or_copy(files["diffusion_model"], folder / "qwen-image-Q4_0.gguf")
    link_or_copy(files["llm"], folder / "Qwen2.5-VL-7B-Instruct-Q4_0.gguf")
    link_or_copy(files["taesd"], folder / "taew2_1.safetensors")
    for name, options in (("qwen", []), ("qwen-edit", ["reference_edit:true"])):
        body = QWEN_YAML.format(name=name) + "".join(f'- "{o}"\n' for o in options)
        (folder / f"{name}.yaml").write_text(body, encoding="utf-8")
    eng = Engine(EngineSettings(models_path=folder))
    yield eng
    eng.close()


@pytest.mark.slow
def test_qwen_image_true_cfg_and_negative_prompt(qwen: Engine) -> None:
    """Qwen-Image's transformer (1 of 60 blocks) and Qwen2.5-VL (1 of 28 layers): 0.55 GB."""
    first = run(qwen, "qwen", seed=1)
    assert first.request is not None and first.request.cfg_scale == 2.5
    assert first.images[0].size == (32, 32)
    assert np.array_equal(pixels(first.images[0]), pixels(run(qwen, "qwen", seed=1).images[0]))
    negative = run(qwen, "qwen", seed=1, negative_prompt="blurry")
    other = run(qwen, "qwen", seed=1, prompt="a blue whale", cfg_scale=1.0)
    assert not np.array_equal(pixels(first.images[0]), pixels(negative.images[0]))
    assert not np.array_equal(pixels(first.images[0]), pixels(other.images[0]))


@pytest.mark.slow
def test_qwen_image_edit_limit_and_the_tiny_autoencoder_guard(qwen: Engine) -> None:
    with pytest.raises(InvalidRequest, match="Qwen-Image-Edit takes 3 input images; got 4"):
        run(qwen, "qwen-edit", init_image=RED, reference_images=(BLUE,) * 3)
    for model in ("qwen", "qwen-edit"):  # img2img and edit: 0.4.7 would abort the process
        with pytest.raises(InvalidRequest, match="aborts encoding it with the tiny autoencoder"):
            run(qwen, model, init_image=RED)


# -- Wan 2.1 (video) -----------------------------------------------------------------------------

WAN_YAML = """\
name: {name}
backend: stablediffusion-ggml
parameters:
  model: wan2.1_t2v_1.3B-Q4_0.gguf
step: 1
cfg_scale: 1.0
size: 32x32
options:
- "diffusion_model:true"
- "taesd_path:taew2_1.safetensors"
"""


@pytest.fixture(scope="module")
def wan_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.support.tiny_ggml_families import wan_files

    files = wan_files()
    folder = tmp_path_factory.mktemp("wan-models")
    link_or_copy(files["diffusion_model"], folder / "wan2.1_t2v_1.3B-Q4_0.gguf")
    link_or_copy(files["taesd"], folder / "taew2_1.safetensors")
    link_or_copy(files["diffusion_model"], folder / "wan2.2_high_noise-Q4_0.gguf")
    pair = ["high_noise_diffusion_model_path:wan2.2_high_noise-Q4_0.gguf", "high_noise_steps:1"]
    variants = {
        "wan": [],
        "wan-shift": ["flow_shift:12"],
        "wan-pair": pair,
        "wan-pair-sampler": [*pair, "high_noise_sampler:euler_a"],
    }
    for name, options in variants.items():
        body = WAN_YAML.format(name=name) + "".join(f'- "{o}"\n' for o in options)
        (folder / f"{name}.yaml").write_text(body, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def wan(wan_dir: Path) -> Iterator[Engine]:
    eng = Engine(EngineSettings(models_path=wan_dir))
    yield eng
    eng.close()


@pytest.mark.slow
def test_wan_txt2vid_frames_fps_and_seeds(wan: Engine) -> None:
    """Wan2.1-T2V-1.3B at full size with random q4_0 weights (0.8 GB): ~7 s per step here."""
    events: list[ProgressEvent] = []
    video = wan.generate(
        "wan", ImageRequest(prompt="a fox", seed=3, num_frames=5), progress=events.append
    )
    again = run(wan, "wan", seed=3, num_frames=5)
    other = run(wan, "wan", seed=4, num_frames=5)
    assert video.fps == 16.0 and len(video.images) == 5
    assert {frame.size for frame in video.images} == {(32, 32)}
    assert {frame.mode for frame in video.images} == {"RGB"}
    assert video.seeds == [3] and [e.step for e in events if e.phase == "step"] == [1]
    for one, two in zip(video.images, again.images, strict=True):
        assert np.array_equal(pixels(one), pixels(two))
    assert not np.array_equal(pixels(video.images[0]), pixels(other.images[0]))
    assert 30 < pixels(video.images[2]).mean() < 225


@pytest.mark.slow
def test_wan_flow_shift_changes_the_video(wan: Engine) -> None:
    plain = run(wan, "wan", seed=5, num_frames=1, steps=2, fps=8.0)
    shifted = run(wan, "wan-shift", seed=5, num_frames=1, steps=2)
    assert plain.fps == 8.0 and len(plain.images) == 1
    assert not np.array_equal(pixels(plain.images[0]), pixels(shifted.images[0]))


@pytest.mark.slow
def test_wan_high_noise_expert_runs_first_with_its_own_settings(wan: Engine) -> None:
    """The A14B pair's mechanics with the 1.3B file loaded twice (1.5 GB): one step each."""
    events: list[ProgressEvent] = []
    pair = wan.generate(
        "wan-pair", ImageRequest(prompt="fox", seed=5, num_frames=1), progress=events.append
    )
    assert [(e.step, e.total) for e in events if e.phase == "step"] == [(1, 2), (2, 2)]
    plain = run(wan, "wan", seed=5, num_frames=1, steps=2)  # the same weights in both experts
    assert np.array_equal(pixels(pair.images[0]), pixels(plain.images[0]))
    ancestral = run(wan, "wan-pair-sampler", seed=5, num_frames=1)
    assert not np.array_equal(pixels(pair.images[0]), pixels(ancestral.images[0]))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"num_frames": 6}, r"makes 4k\+1 frames .*use 5 or 9"),
        ({"init_image": RED}, "Wan2.1-T2V-1.3B is a text-to-video model and takes no input"),
        ({"mode": "txt2img"}, "Wan2.1-T2V-1.3B makes videos; it does txt2vid, not txt2img"),
        ({"n": 2}, "makes one video per request"),
        ({"negative_prompt": "blur"}, "negative_prompt needs cfg_scale other than 1"),
        ({"init_image": RED, "reference_images": (BLUE,)}, "takes no input image"),
    ],
)
def test_wan_refuses_what_it_would_change(
    wan: Engine, fields: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        run(wan, "wan", **fields)


@pytest.mark.slow
def test_wan_through_generate_to_mp4(wan_dir: Path, tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from localimg.cli import app

    out = tmp_path / "fox.mp4"
    args = ["generate", "a fox", "-m", "wan", "--models-path", str(wan_dir), "--seed", "1"]
    result = CliRunner().invoke(app, [*args, "--num-frames", "5", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["video"] == {"frames": 5, "fps": 16.0}
    assert out.stat().st_size > 0 and out.read_bytes()[4:8] == b"ftyp"
