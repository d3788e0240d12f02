"""The stablediffusion-ggml backend end to end: the real stable-diffusion.cpp on a random SD1 model.

The model is the tiny-UNet SD1 checkpoint of tests/support/tiny_ggml.py (64x64 images in about a
second).
"""

from __future__ import annotations

import ctypes
import gc
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("stable_diffusion_cpp")

from localimg.backends.base import RuntimeSettings
from localimg.backends.ggml import schedulers as ggml_schedulers
from localimg.backends.ggml.backend import GgmlBackend
from localimg.config import load_config_file
from localimg.engine import Engine, EngineSettings, merge_request
from localimg.errors import (
    Cancelled,
    ConfigError,
    InvalidRequest,
    LocalimgError,
    ModelUnavailable,
)
from localimg.requests import ImageRequest, ProgressEvent
from tests.support.tiny_ggml import SEED_YAML, populate_models_dir

pytestmark = pytest.mark.ggml


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


@pytest.fixture(scope="module")
def engine(ggml_models_dir: Path) -> Iterator[Engine]:
    eng = Engine(EngineSettings(models_path=ggml_models_dir))
    yield eng
    eng.close()


@pytest.fixture
def private_dir(tmp_path: Path, tiny_ggml: dict[str, Path]) -> Path:
    """A models dir of this test's own, for YAML variants and damaged files."""
    return populate_models_dir(tmp_path / "models", tiny_ggml)


def write_yaml(folder: Path, name: str, extra_options: list[str], top: str = "") -> None:
    body = SEED_YAML.replace("name: stablediffusion", f"name: {name}")
    body += "".join(f'- "{opt}"\n' for opt in extra_options) + top
    (folder / f"{name}.yaml").write_text(body, encoding="utf-8")


def generate(engine: Engine, model: str = "stablediffusion", **fields: object) -> object:
    return engine.generate(model, ImageRequest(**{"prompt": "a red fox", **fields}))  # type: ignore[arg-type]


def test_seed_yaml_shape_generates_rgb_images_with_seeds_and_progress(engine: Engine) -> None:
    events: list[ProgressEvent] = []
    result = engine.generate(
        "stablediffusion", ImageRequest(prompt="a red fox", seed=11, n=2), progress=events.append
    )
    assert result.seeds == [11, 12]
    assert [im.mode for im in result.images] == ["RGB", "RGB"]
    assert [im.size for im in result.images] == [(64, 64), (64, 64)]
    assert result.request is not None and result.request.steps == 2
    assert result.request.cfg_scale == 4.5 and result.scheduler == "Euler"
    steps = [(e.step, e.total, e.image_index) for e in events if e.phase == "step"]
    assert steps == [(1, 4, 0), (2, 4, 0), (3, 4, 1), (4, 4, 1)]
    # mid-grey noise, not a black or white image
    assert 60 < pixels(result.images[0]).mean() < 200
    assert not np.array_equal(pixels(result.images[0]), pixels(result.images[1]))


def test_seeds_are_reproducible_and_image_i_uses_seed_plus_i(engine: Engine) -> None:
    pair = generate(engine, seed=21, n=2)
    again = generate(engine, seed=22)
    other = generate(engine, seed=23)
    assert np.array_equal(pixels(pair.images[1]), pixels(again.images[0]))  # type: ignore[attr-defined]
    assert not np.array_equal(pixels(again.images[0]), pixels(other.images[0]))  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "name", [*ggml_schedulers.SAMPLERS, *ggml_schedulers.DIFFUSERS_EQUIVALENTS, "karras"]
)
def test_every_sampler_name_runs(engine: Engine, name: str) -> None:
    # cfg 1: one UNet call per step (what is tested is that the sampler runs, not guidance)
    result = generate(engine, seed=3, scheduler=name, steps=1, cfg_scale=1.0)
    assert result.images[0].size == (64, 64)  # type: ignore[attr-defined]
    sampling = ggml_schedulers.resolve(name)
    if sampling.method:
        assert result.scheduler.startswith(ggml_schedulers.SAMPLERS[sampling.method])  # type: ignore[attr-defined]


def test_karras_schedule_changes_the_image(engine: Engine) -> None:
    plain = generate(engine, seed=4, scheduler="dpmpp_2m", steps=3)
    karras = generate(engine, seed=4, scheduler="k_dpmpp_2m", steps=3)
    assert karras.scheduler == "DPM++ 2M Karras"  # type: ignore[attr-defined]
    assert not np.array_equal(pixels(plain.images[0]), pixels(karras.images[0]))  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ["lms", "unipc", "k_dpmpp_sde", "pndm"])
def test_diffusers_names_without_equivalent_are_refused(engine: Engine, name: str) -> None:
    with pytest.raises(InvalidRequest, match=r"no equivalent in stable-diffusion.cpp"):
        generate(engine, scheduler=name)


def test_unknown_sampler_suggests_close_names(engine: Engine) -> None:
    with pytest.raises(InvalidRequest, match="did you mean euler_a"):
        generate(engine, scheduler="euler_aa")


def test_size_must_be_a_multiple_the_model_takes(engine: Engine) -> None:
    with pytest.raises(InvalidRequest, match="multiples of 64"):
        generate(engine, width=96, height=64)
    result = generate(engine, width=128, height=64, seed=1)
    assert result.images[0].size == (128, 64)  # type: ignore[attr-defined]


def test_lora_tag_and_yaml_adapters_apply_the_same_lora(private_dir: Path) -> None:
    write_yaml(private_dir, "tagged", ["lora_dir:loras"])
    write_yaml(
        private_dir,
        "adapted",
        [],
        top="lora_adapters: [loras/mylora.safetensors]\nlora_scales: [0.7]\n",
    )
    eng = Engine(EngineSettings(models_path=private_dir))
    try:
        plain = generate(eng, "tagged", seed=5)
        tagged = generate(eng, "tagged", seed=5, prompt="a red fox <lora:mylora:0.7>")
        adapted = generate(eng, "adapted", seed=5)
        with pytest.raises(InvalidRequest, match=r"LoRA 'missing' not found.*mylora"):
            generate(eng, "tagged", prompt="fox <lora:missing:1>")
        with pytest.raises(InvalidRequest, match="weight must be a number"):
            generate(eng, "tagged", prompt="fox <lora:mylora:heavy>")
    finally:
        eng.close()
    assert not np.array_equal(pixels(plain.images[0]), pixels(tagged.images[0]))  # type: ignore[attr-defined]
    assert np.array_equal(pixels(tagged.images[0]), pixels(adapted.images[0]))  # type: ignore[attr-defined]


def test_img2img_uses_init_image_and_strength(engine: Engine) -> None:
    init = Image.new("RGB", (64, 64), (250, 20, 20))
    events: list[ProgressEvent] = []
    light = engine.generate(
        "stablediffusion",
        ImageRequest(prompt="fox", seed=9, steps=4, init_image=init, strength=0.25),
        progress=events.append,
    )
    strong = generate(engine, seed=9, steps=4, init_image=init, strength=1.0)
    txt = generate(engine, seed=9, steps=4)
    red = pixels(light.images[0])[..., 0].mean() - pixels(light.images[0])[..., 1].mean()
    red_strong = pixels(strong.images[0])[..., 0].mean() - pixels(strong.images[0])[..., 1].mean()  # type: ignore[attr-defined]
    assert red > red_strong  # a light touch keeps more of the red input
    assert not np.array_equal(pixels(strong.images[0]), pixels(txt.images[0]))  # type: ignore[attr-defined]
    assert [e.step for e in events if e.phase == "step"] == [1, 2]  # int(4 * 0.25) + 1 steps
    assert light.request is not None and light.request.strength == 0.25
    with pytest.raises(InvalidRequest, match="strength needs an input image"):
        generate(engine, strength=0.5)


def test_video_and_depth_modes_are_refused(engine: Engine) -> None:
    with pytest.raises(InvalidRequest, match="does not do txt2vid"):
        generate(engine, mode="txt2vid")


def test_unknown_option_lists_known_keys(private_dir: Path) -> None:
    write_yaml(private_dir, "typo", ["samplr:euler"])
    eng = Engine(EngineSettings(models_path=private_dir))
    try:
        with pytest.raises(ConfigError, match=r"unknown key 'samplr'.*known keys: .*sampler"):
            generate(eng, "typo")
    finally:
        eng.close()


def test_missing_optional_file_is_a_clear_error(private_dir: Path) -> None:
    write_yaml(private_dir, "noclip", ["clip_l_path:clip_l.safetensors"])
    eng = Engine(EngineSettings(models_path=private_dir))
    try:
        with pytest.raises(ModelUnavailable, match=r"clip_l_path: file 'clip_l.safetensors' not"):
            generate(eng, "noclip")
    finally:
        eng.close()


def test_missing_model_file_is_a_clear_error(private_dir: Path) -> None:
    (private_dir / "gguf_model.safetensors").unlink()
    eng = Engine(EngineSettings(models_path=private_dir))
    try:
        with pytest.raises(ModelUnavailable, match=r"parameters.model: file 'gguf_model"):
            generate(eng)
    finally:
        eng.close()


@pytest.mark.parametrize("damaged", ["gguf_model.safetensors", "taesd.safetensors"])
def test_corrupt_file_is_a_clear_error_and_the_process_survives(
    private_dir: Path, damaged: str
) -> None:
    path = private_dir / damaged
    data = path.read_bytes()[:200_000]
    path.unlink()  # a hard link: never write through it into the shared cache
    path.write_bytes(data)
    eng = Engine(EngineSettings(models_path=private_dir))
    try:
        with pytest.raises(ModelUnavailable, match=r"cannot load .*gguf_model.safetensors"):
            generate(eng)
    finally:
        eng.close()
    gc.collect()  # the failed context must not be freed (that segfaulted in 0.4.7)


def test_cancel_between_images(ggml_models_dir: Path) -> None:
    config = load_config_file(ggml_models_dir / "stablediffusion.yaml")
    backend = GgmlBackend(RuntimeSettings())
    backend.load(config, lambda e: None)
    cancel = threading.Event()

    def on_event(event: ProgressEvent) -> None:
        if event.phase == "decode":
            cancel.set()

    try:
        request = merge_request(
            ImageRequest(prompt="fox", seed=1, n=3), config, backend.defaults, backend.option_keys
        )
        with pytest.raises(Cancelled):
            backend.generate(request, on_event, cancel)
    finally:
        backend.unload()


def test_a_bare_library_call_after_ours_does_not_crash(engine: Engine, tiny_ggml: dict) -> None:
    """0.4.7 left the progress callback dangling: the next call without one segfaulted."""
    import stable_diffusion_cpp as sd

    from localimg.backends.ggml import native as ggml_native

    generate(engine, seed=1)

    model = ggml_native.leak_free_class(sd)(
        model_path=str(tiny_ggml["model"]), taesd_path=str(tiny_ggml["taesd"]), verbose=True
    )
    try:
        ggml_native.quiet_wrapper()
        image = model.generate_image(prompt="fox", width=64, height=64, sample_steps=1, seed=1)
        assert image[0].size == (64, 64)
    finally:
        model.close()


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in [
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        ]
    ]


def _heap_in_use() -> int | None:
    try:
        libc = ctypes.CDLL(None)
        libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):
        return None
    info = libc.mallinfo2()
    return int(info.uordblks + info.hblkhd)


def _rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def test_image_buffers_are_freed_and_rss_stays_flat(engine: Engine) -> None:
    """0.4.7 leaked every image's pixel buffer; the backend frees them."""
    if _heap_in_use() is None:
        pytest.skip("needs glibc's mallinfo2 to measure the C heap")
    for _ in range(2):
        generate(engine, seed=1, steps=1, cfg_scale=1.0)
    heap_before, rss_before = _heap_in_use(), _rss()
    runs = 8
    for index in range(runs):
        generate(engine, seed=index, steps=1, cfg_scale=1.0)
    gc.collect()
    heap_growth = (_heap_in_use() or 0) - (heap_before or 0)
    image_bytes = 64 * 64 * 3
    assert heap_growth < runs * image_bytes / 4, f"C heap grew {heap_growth} bytes"
    assert _rss() - rss_before < 64 * 2**20


def test_unloaded_model_errors_and_describe(ggml_models_dir: Path) -> None:
    config = load_config_file(ggml_models_dir / "stablediffusion.yaml")
    backend = GgmlBackend(RuntimeSettings(threads=1))
    backend.load(config, lambda e: None)
    facts = backend.describe()
    assert facts["threads"] == "1" and "Tiny UNet" in facts["pipeline"]
    assert backend.defaults.size_multiple == 64
    backend.unload()
    request = ImageRequest(prompt="x", seed=1, width=64, height=64, steps=1, cfg_scale=1.0)
    with pytest.raises(LocalimgError, match="not loaded"):
        backend.generate(request, lambda e: None, threading.Event())


def test_device_other_than_auto_is_refused(ggml_models_dir: Path) -> None:
    config = load_config_file(ggml_models_dir / "stablediffusion.yaml")
    with pytest.raises(ConfigError, match="CMAKE_ARGS"):
        GgmlBackend(RuntimeSettings(device="cuda")).load(config, lambda e: None)
