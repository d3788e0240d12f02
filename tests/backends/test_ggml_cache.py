"""Step caching on stable-diffusion.cpp (issue 16): the real library on the tiny SD1 UNet and the
tiny FLUX.2 klein DiT, and the rules of localimg/backends/ggml/caching.py and cache_knobs.py.

A cache only changes the image when it reuses a step, so the tests use knobs that force reuse
(a threshold far above any change). That each knob reaches the C library is read from the line
stable-diffusion.cpp logs when a cache starts ("UCache enabled - threshold: ..."), and the
knobs whose effect is not visible there are checked by the image changing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("stable_diffusion_cpp")

from localimg.backends.base import RuntimeSettings, capabilities_of
from localimg.backends.ggml import cache_knobs, caching, native
from localimg.backends.ggml.backend import GgmlBackend
from localimg.backends.ggml.families import Family, family_of
from localimg.config import config_from_dict, load_config_file
from localimg.engine import Engine, EngineSettings
from localimg.errors import ConfigError, InvalidRequest
from localimg.requests import ImageRequest
from tests.support.tiny_ggml import link_or_copy
from tests.support.tiny_ggml_families import flux2_klein_files

pytestmark = pytest.mark.ggml

SD1_YAML = """\
name: {name}
backend: stablediffusion-ggml
parameters:
  model: gguf_model.safetensors
step: 8
cfg_scale: 1.0  # one UNet call per step: CFG is not what these tests test
size: 64x64
options:
- "taesd_path:taesd.safetensors"
- "sampler:euler"
"""
KLEIN_YAML = """\
name: {name}
backend: stablediffusion-ggml
parameters:
  model: flux-2-klein-4b.safetensors
step: 8
size: 64x64
options:
- "diffusion_model:true"
- "llm_path:qwen_3_4b.safetensors"
- "taesd_path:taef2.safetensors"
- "sampler:euler"
"""
SD1 = Family("SD 1.x", "SD 1.x", 64, 512, 7.0)
FLUX = Family("Flux", "FLUX.1 (Flux)", 8, 1024, 1.0)
WAN = family_of("Wan 2.x", ["Wan2.1-T2V-1.3B"])


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def write(folder: Path, template: str, name: str, options: list[str]) -> None:
    body = template.format(name=name) + "".join(f'- "{o}"\n' for o in options)
    (folder / f"{name}.yaml").write_text(body, encoding="utf-8")


@pytest.fixture(scope="module")
def sd1_dir(tmp_path_factory: pytest.TempPathFactory, tiny_ggml: dict[str, Path]) -> Path:
    folder = tmp_path_factory.mktemp("ggml-cache-sd1")
    link_or_copy(tiny_ggml["model"], folder / "gguf_model.safetensors")
    link_or_copy(tiny_ggml["taesd"], folder / "taesd.safetensors")
    write(folder, SD1_YAML, "sd1", [])
    write(folder, SD1_YAML, "sd1-ucache", ["cache:ucache", "cache_threshold:100"])
    write(folder, SD1_YAML, "sd1-easycache", ["cache:easycache"])
    write(folder, SD1_YAML, "sd1-knob-alone", ["cache_threshold:1"])
    write(folder, SD1_YAML, "sd1-unknown", ["cache:teacache"])
    write(folder, SD1_YAML, "sd1-bad-knob", ["cache:ucache", "cache_warmup:2"])
    return folder


@pytest.fixture(scope="module")
def sd1(sd1_dir: Path) -> Iterator[Engine]:
    engine = Engine(EngineSettings(models_path=sd1_dir, runtime=RuntimeSettings()))
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def klein(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    files = flux2_klein_files()
    folder = tmp_path_factory.mktemp("ggml-cache-klein")
    link_or_copy(files["diffusion_model"], folder / "flux-2-klein-4b.safetensors")
    link_or_copy(files["llm"], folder / "qwen_3_4b.safetensors")
    link_or_copy(files["taesd"], folder / "taef2.safetensors")
    write(folder, KLEIN_YAML, "klein", [])
    engine = Engine(EngineSettings(models_path=folder, runtime=RuntimeSettings()))
    yield engine
    engine.close()


def run(engine: Engine, model: str, cache: str | None = None, **knobs: Any) -> np.ndarray:
    request = ImageRequest(prompt="a red fox", seed=7, cache=cache, cache_options=knobs)
    return pixels(engine.generate(model, request).images[0])


def logged(engine: Engine, model: str, cache: str, **knobs: Any) -> str:
    """The library's log of one cached generation (the model is loaded first: loading sets its
    own capture)."""
    run(engine, model)
    with native.capturing() as lines:
        run(engine, model, cache, **knobs)
    return "\n".join(text for _, text in lines)


# -- rules, without a model -------------------------------------------------------------------


def test_the_backend_names_the_six_methods_of_the_binding() -> None:
    from stable_diffusion_cpp import stable_diffusion as wrapper

    assert capabilities_of(GgmlBackend).cache_methods == cache_knobs.METHODS
    assert set(cache_knobs.METHODS) == set(wrapper.SD_CACHE_MODE_MAP) - {"disabled"}
    assert capabilities_of(GgmlBackend).batch is False


def test_methods_follow_the_architecture() -> None:
    assert caching.methods_for(SD1) == ("ucache", "spectrum")
    assert caching.methods_for(family_of("SDXL", [])) == ("ucache", "spectrum")
    assert caching.methods_for(FLUX) == caching.DIT_METHODS
    assert caching.methods_for(family_of("Qwen Image", [])) == caching.DIT_METHODS
    assert caching.methods_for(WAN) == ("easycache", "dbcache", "taylorseer", "cachedit")
    assert caching.methods_for(family_of("SVD", [])) == ()


def test_every_binding_keyword_a_knob_names_exists() -> None:
    """A knob's keyword that generate_image did not take would fail only at generation."""
    import inspect

    from stable_diffusion_cpp import StableDiffusion

    image = set(inspect.signature(StableDiffusion.generate_image).parameters)
    video = set(inspect.signature(StableDiffusion.generate_video).parameters)
    for method in cache_knobs.METHODS:
        keywords = set(cache_knobs.parse_knobs(method, {}).keywords())
        assert keywords <= image, method
        if method != "spectrum":
            assert keywords <= video, method
    assert not {k for k in video if k.startswith("cache_spectrum")}  # why spectrum is refused


@pytest.mark.parametrize(
    ("method", "knobs", "family", "words"),
    [
        ("ucache", {}, FLUX, "ucache is for UNet models"),
        ("easycache", {}, SD1, "this model takes ucache, spectrum"),
        ("dbcache", {}, SD1, "dbcache is for DiT models"),
        ("spectrum", {}, WAN, "generate_video passes none of spectrum's settings"),
        ("teacache", {}, FLUX, "it knows easycache, ucache, dbcache, taylorseer, cachedit"),
        ("easycache", {"start": 0.6, "end": 0.5}, FLUX, "start (0.6) must be below end (0.5)"),
        ("ucache", {"end": 1.5}, SD1, "end: Input should be less than or equal to 1"),
        ("ucache", {"decay": 2}, SD1, "decay: Input should be less than or equal to 1"),
        ("ucache", {"relative": "no"}, SD1, "relative: Input should be a valid boolean"),
        ("dbcache", {"fn_blocks": 1.5}, FLUX, "fn_blocks: Input should be a valid integer"),
        ("dbcache", {"warmup": 2}, FLUX, "accepts max_warmup_steps but never applies it"),
        ("cachedit", {"scm_mask": "1,0"}, FLUX, "its knobs (defaults): threshold (0.08)"),
        ("taylorseer", {"n_derivatives": 2}, FLUX, "taylorseer_n_derivatives but never"),
        ("spectrum", {"m": 0}, SD1, "m: Input should be greater than or equal to 1"),
        ("spectrum", {"speed": 2}, SD1, "spectrum has no knob 'speed'"),
    ],
)
def test_refusals_name_what_is_allowed(
    method: str, knobs: dict[str, Any], family: Family, words: str
) -> None:
    with pytest.raises(InvalidRequest) as err:
        caching.call_keywords(method, knobs, family)
    assert words in err.value.message and err.value.param == "cache"


def test_keywords_of_a_call() -> None:
    assert caching.call_keywords(None, {}, SD1) == {}
    assert caching.call_keywords("none", {}, SD1) == {}
    call = caching.call_keywords("ucache", {"threshold": 2, "relative": False}, SD1)
    assert call == {
        "cache_mode": "ucache",
        "cache_reuse_threshold": 2,
        "cache_start_percent": 0.15,
        "cache_end_percent": 0.95,
        "cache_error_decay_rate": 1.0,
        "cache_use_relative_threshold": False,
        "cache_reset_error_on_compute": True,
    }
    # The binding would turn an easycache threshold of exactly 1.0 into 0.2.
    easy = caching.call_keywords("easycache", {"threshold": 1.0}, FLUX)
    assert easy["cache_reuse_threshold"] != 1.0
    assert np.float32(easy["cache_reuse_threshold"]) == np.float32(1.0)


def test_check_request_refuses_before_queueing(tmp_path: Path) -> None:
    def config(options: list[str]) -> Any:
        data = {
            "name": "g",
            "backend": "stablediffusion-ggml",
            "parameters": {"model": "m.gguf"},
            "options": options,
        }
        return config_from_dict(data, where="g.yaml", models_path=tmp_path)

    plain, yaml_ucache = config([]), config(["cache:ucache", "cache_threshold:5"])
    GgmlBackend.check_request(ImageRequest(prompt="p", cache="spectrum"), plain)
    GgmlBackend.check_request(ImageRequest(prompt="p", cache="none"), yaml_ucache)
    GgmlBackend.check_request(ImageRequest(prompt="p", cache_options={"decay": 0.5}), yaml_ucache)
    with pytest.raises(InvalidRequest, match="unknown cache method 'magcache'"):
        GgmlBackend.check_request(ImageRequest(prompt="p", cache="magcache"), plain)
    with pytest.raises(InvalidRequest, match="spectrum has no knob 'threshold'"):
        request = ImageRequest(prompt="p", cache="spectrum", cache_options={"threshold": 1})
        GgmlBackend.check_request(request, plain)
    # Knobs without a method go with the YAML's method and are checked against it.
    with pytest.raises(InvalidRequest, match="ucache: decay"):
        request = ImageRequest(prompt="p", cache_options={"decay": 3})
        GgmlBackend.check_request(request, yaml_ucache)
    # The YAML's own mistakes are the YAML's (ConfigError), found before queueing too.
    with pytest.raises(ConfigError, match="options: unknown cache method 'fastcache'"):
        GgmlBackend.check_request(ImageRequest(prompt="p"), config(["cache:fastcache"]))
    # ...unless the request names another method, which does not read the YAML's knobs.
    GgmlBackend.check_request(ImageRequest(prompt="p", cache="spectrum"), yaml_ucache)


# -- SD1 (UNet): ucache and spectrum --------------------------------------------------------


def test_sd1_ucache_and_spectrum_reuse_steps_and_no_cache_keeps_the_image(sd1: Engine) -> None:
    base = run(sd1, "sd1")
    assert np.array_equal(run(sd1, "sd1"), base)  # the same seed: the same pixels
    ucache = run(sd1, "sd1", "ucache", threshold=100)
    spectrum = run(sd1, "sd1", "spectrum", warmup=1)
    assert ucache.shape == spectrum.shape == base.shape == (64, 64, 3)
    assert np.abs(ucache - base).max() > 0
    assert np.abs(spectrum - base).max() > 0
    assert np.abs(spectrum - ucache).max() > 0


def test_sd1_refuses_the_dit_methods_naming_its_own(sd1: Engine) -> None:
    for method in ("easycache", "dbcache", "taylorseer", "cachedit"):
        with pytest.raises(InvalidRequest) as err:
            run(sd1, "sd1", method)
        assert "this model takes ucache, spectrum" in err.value.message


def test_sd1_ucache_knobs_reach_the_library(sd1: Engine) -> None:
    knobs = {"threshold": 50, "start": 0.2, "end": 0.9, "decay": 0.5}
    text = logged(sd1, "sd1", "ucache", relative=False, reset=False, **knobs)
    assert (
        "UCache enabled - threshold: 50.000, start: 0.20, end: 0.90, decay: 0.50, "
        "relative: false, reset: false"
    ) in text
    assert "UCache skipped" in text


def test_sd1_spectrum_knobs_reach_the_library(sd1: Engine) -> None:
    knobs = {"w": 0.3, "m": 2, "lam": 0.5, "window": 3, "flex": 0.25, "warmup": 1, "stop": 0.8}
    text = logged(sd1, "sd1", "spectrum", **knobs)
    assert (
        "Spectrum enabled - w: 0.30, m: 2, lam: 0.50, window: 3, flex: 0.25, warmup: 1, stop: 80%"
    ) in text


def test_sd1_yaml_cache_is_the_default_and_a_request_turns_it_off(sd1: Engine) -> None:
    base = run(sd1, "sd1")
    assert np.array_equal(run(sd1, "sd1-ucache"), run(sd1, "sd1", "ucache", threshold=100))
    assert np.array_equal(run(sd1, "sd1-ucache", "none"), base)
    # The request's knob wins over the YAML's; the YAML's method stays.
    text = logged(sd1, "sd1-ucache", "ucache", threshold=30)
    assert "UCache enabled - threshold: 30.000" in text


@pytest.mark.parametrize(
    ("model", "words"),
    [
        ("sd1-easycache", "cache easycache does not apply to SD 1.x"),
        ("sd1-knob-alone", "cache_* knobs (threshold) need cache:<method>"),
    ],
)
def test_sd1_yaml_cache_it_cannot_use_fails_the_load(sd1_dir: Path, model: str, words: str) -> None:
    backend = GgmlBackend(RuntimeSettings())
    with pytest.raises(ConfigError) as err:
        backend.load(load_config_file(sd1_dir / f"{model}.yaml"), lambda e: None)
    assert words in err.value.message and f"{model}.yaml" in err.value.message
    assert backend.model is None


@pytest.mark.parametrize(
    ("model", "words"),
    [("sd1-unknown", "unknown cache method 'teacache'"), ("sd1-bad-knob", "no knob 'warmup'")],
)
def test_sd1_yaml_unknown_method_or_knob_refused_before_queueing(
    sd1: Engine, model: str, words: str
) -> None:
    with pytest.raises(ConfigError, match=words):
        sd1.generate(model, ImageRequest(prompt="a red fox"))


# -- FLUX.2 klein (DiT): easycache, the cache-dit modes, spectrum ---------------------------


def test_klein_each_dit_method_reuses_steps(klein: Engine) -> None:
    base = run(klein, "klein")
    forced = {
        "easycache": {"threshold": 100},
        "dbcache": {"threshold": 100},
        "taylorseer": {"threshold": 100},
        "cachedit": {"threshold": 100},
        "spectrum": {"warmup": 1},
    }
    images = {method: run(klein, "klein", method, **knobs) for method, knobs in forced.items()}
    for method, image in images.items():
        assert image.shape == (64, 64, 3)
        assert np.abs(image - base).max() > 0, method
    # stable-diffusion.cpp 0.4.7 runs the three cache-dit modes as one step cache
    # (docs/performance/step-caching.md).
    assert np.array_equal(images["taylorseer"], images["dbcache"])
    assert np.array_equal(images["cachedit"], images["dbcache"])
    assert np.array_equal(run(klein, "klein", "none"), base)


def test_klein_cachedit_threshold_scaling_knobs_change_the_image(klein: Engine) -> None:
    assert (
        np.abs(
            run(klein, "klein", "dbcache", threshold=0.02)
            - run(klein, "klein", "dbcache", threshold=0.02, fn_blocks=58)
        ).max()
        > 0
    )
    assert (
        np.abs(run(klein, "klein", "dbcache") - run(klein, "klein", "dbcache", bn_blocks=16)).max()
        > 0
    )
    text = logged(klein, "klein", "cachedit", threshold=0.5, fn_blocks=4, bn_blocks=2)
    assert "CacheDIT enabled - mode: DBCache+TaylorSeer, Fn: 4, Bn: 2, threshold: 0.500" in text


def test_klein_easycache_knobs_reach_the_library(klein: Engine) -> None:
    text = logged(klein, "klein", "easycache", threshold=1.0, start=0.1, end=0.9)
    assert "EasyCache enabled - threshold: 1.000, start: 0.10, end: 0.90" in text


def test_klein_refuses_ucache_naming_its_methods(klein: Engine) -> None:
    with pytest.raises(InvalidRequest) as err:
        run(klein, "klein", "ucache")
    assert err.value.message == (
        "cache ucache does not apply to FLUX.2 klein: ucache is for UNet models (SD1.x, SD2.x, "
        "SDXL); this model takes easycache, dbcache, taylorseer, cachedit, spectrum"
    )
