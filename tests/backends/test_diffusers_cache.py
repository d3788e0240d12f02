"""Step caching on the diffusers backend (issue 16) through the engine, on the tiny family pipelines
(tests/support/tiny_families.py) and the tiny SD1.5: which methods each family can use, that a
method changes the image when it skips and gives the uncached image when it never skips, that the
cache is off again for the next call, the refusals, the YAML's cache, batches and HTTP.

Random weights say nothing about how much a cache costs in quality: the knobs below force the
hooks to skip (or never to) so that the tests see the hooks act, not that the images stay good.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from localimg.engine import Engine, EngineSettings
from localimg.errors import ConfigError
from localimg.requests import ImageRequest, ImageResult, ProgressEvent
from localimg.server.app import ServerSettings, create_app
from tests.support.engine_checks import refused
from tests.support.server_support import b64_image, serve_in_thread

tiny_families = pytest.importorskip("tests.support.tiny_families")

STEPS = 4
RATIOS = [1.0] * STEPS  # MagCache's magnitude ratios (a checkpoint's own in real use)
# Per method: knobs that never skip a step (the image must equal the uncached one) and knobs
# that skip as much as the method allows (the image must change).
NEVER: dict[str, dict[str, Any]] = {
    "first_block_cache": {"threshold": 0.0},
    "taylorseer_cache": {"disable_cache_before_step": STEPS},
    "mag_cache": {"retention_ratio": 1.0, "mag_ratios": RATIOS},
}
FORCE: dict[str, dict[str, Any]] = {
    "first_block_cache": {"threshold": 1e9},
    "taylorseer_cache": {"disable_cache_before_step": 1, "taylor_factors_dtype": "float32"},
    "mag_cache": {
        "retention_ratio": 0.0,
        "threshold": 1e9,
        "max_skip_steps": 100,
        "mag_ratios": RATIOS,
    },
}
# What each tiny family can use in diffusers 0.42.1 (cache/caching.py says why the others cannot).
USABLE: dict[str, tuple[str, ...]] = {
    "qwen-image": ("first_block_cache", "taylorseer_cache", "mag_cache"),
    "klein": ("taylorseer_cache", "mag_cache"),  # FLUX.2's head and tail blocks differ
    "wan": ("first_block_cache", "mag_cache"),  # TaylorSeer's patterns match no Wan module
    "z-image": (),  # not a CacheMixin transformer
    "flux2": (),  # Flux2Pipeline opens no cache contexts
    "chroma": (),  # no cache contexts, unregistered blocks
    "sd15": (),  # a UNet
}
BUILDERS = {
    "qwen-image": "tiny_qwen_image_path",
    "klein": "tiny_flux2_klein_path",
    "wan": "tiny_wan_path",
    "z-image": "tiny_z_image_path",
    "flux2": "tiny_flux2_path",
    "chroma": "tiny_chroma_path",
}
APPLIES = [(name, method) for name, methods in USABLE.items() for method in methods]


def model_yaml(name: str, path: Path, extra: str = "") -> str:
    return f"name: {name}\nbackend: diffusers\nparameters:\n  model: {path}\nstep: {STEPS}\n{extra}"


@pytest.fixture(scope="module")
def paths(tiny_sd: Path) -> dict[str, Path]:
    found = {name: getattr(tiny_families, b)() for name, b in BUILDERS.items()}
    return {**found, "sd15": tiny_sd}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, paths: dict[str, Path]) -> Path:
    folder = tmp_path_factory.mktemp("cache-models")
    for name, path in paths.items():
        (folder / f"{name}.yaml").write_text(model_yaml(name, path), encoding="utf-8")
    yaml_cache = '  - "cache:first_block_cache"\n  - "cache_threshold:1e9"\n'
    (folder / "qwen-fbc.yaml").write_text(
        model_yaml("qwen-fbc", paths["qwen-image"], f"options:\n{yaml_cache}"), encoding="utf-8"
    )
    return folder


@pytest.fixture(scope="module")
def engine(models: Path) -> Iterator[Engine]:
    engine = Engine(EngineSettings(models_path=models))
    yield engine
    engine.close()


def run(engine: Engine, name: str, **fields: Any) -> ImageResult:
    fields.setdefault("seed", 5)
    fields.setdefault("width", 32)
    fields.setdefault("height", 32)
    if name == "wan":
        fields.setdefault("num_frames", 5)
    return engine.generate(name, ImageRequest(fields.pop("prompt", "an otter"), **fields))


def pixels(result: ImageResult) -> np.ndarray:
    return np.stack([np.asarray(image.convert("RGB"), dtype=np.int16) for image in result.images])


def moved(a: ImageResult, b: ImageResult) -> int:
    return int(np.abs(pixels(a) - pixels(b)).max())


# -- which methods each family can use ------------------------------------------------------


@pytest.mark.parametrize("name", list(USABLE))
def test_describe_names_the_cache_methods_the_loaded_model_can_use(
    engine: Engine, name: str
) -> None:
    run(engine, name, steps=2)
    described = engine.slots[name].backend.describe()["cache"]  # type: ignore[attr-defined]
    assert described == (",".join(USABLE[name]) or "none")


# -- each method acts, and only for its call ------------------------------------------------


@pytest.mark.parametrize(("name", "method"), APPLIES)
def test_a_cache_changes_the_image_when_it_skips_and_keeps_it_when_it_never_does(
    engine: Engine, name: str, method: str
) -> None:
    plain = run(engine, name)
    never = run(engine, name, cache=method, cache_options=NEVER[method])
    assert moved(never, plain) == 0
    forced = run(engine, name, cache=method, cache_options=FORCE[method])
    assert moved(forced, plain) > 0
    # The cache is off again: the next request is the uncached image, bit for bit.
    assert moved(run(engine, name), plain) == 0
    denoiser = engine.slots[name].backend.pipe.transformer  # type: ignore[attr-defined]
    assert not denoiser.is_cache_enabled


def test_a_failed_call_turns_the_cache_off_too(engine: Engine) -> None:
    plain = run(engine, "qwen-image")
    backend = engine.slots["qwen-image"].backend  # type: ignore[attr-defined]
    with pytest.MonkeyPatch.context() as patch:

        def fail(*_args: Any, **_kwargs: Any) -> None:
            raise RuntimeError("the device went away")

        patch.setattr(type(backend.pipe), "check_inputs", fail)
        with pytest.raises(Exception, match="device went away"):
            run(
                engine,
                "qwen-image",
                cache="first_block_cache",
                cache_options=FORCE["first_block_cache"],
            )
    assert not backend.pipe.transformer.is_cache_enabled
    assert moved(run(engine, "qwen-image"), plain) == 0


def test_img2img_sibling_shares_the_cache_and_previews_still_come(engine: Engine) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    plain = run(engine, "qwen-image", init_image=image, strength=0.9)
    cached = run(
        engine,
        "qwen-image",
        init_image=image,
        strength=0.9,
        cache="mag_cache",
        cache_options=FORCE["mag_cache"],
        previews=1,
    )
    assert moved(cached, plain) > 0
    assert moved(run(engine, "qwen-image", init_image=image, strength=0.9), plain) == 0


def test_flux1_takes_mag_cache_with_the_ratios_diffusers_ships(tmp_path: Path) -> None:
    """FLUX.1's FluxPipeline (built here from the tiny Kontext's parts, which are FLUX.1's) opens
    cache contexts; MagCache needs no mag_ratios there (diffusers' FLUX_MAG_RATIOS)."""
    from diffusers import DiffusionPipeline, FluxPipeline

    kontext = DiffusionPipeline.from_pretrained(tiny_families.tiny_flux_kontext_path())
    FluxPipeline.from_pipe(kontext).save_pretrained(tmp_path / "flux1")
    (tmp_path / "flux1.yaml").write_text(model_yaml("flux1", tmp_path / "flux1"), "utf-8")
    engine = Engine(EngineSettings(models_path=tmp_path))
    try:
        plain = run(engine, "flux1")
        described = engine.slots["flux1"].backend.describe()["cache"]  # type: ignore[attr-defined]
        assert described == "first_block_cache,taylorseer_cache,mag_cache"
        skips = {"retention_ratio": 0.0, "threshold": 1e9, "max_skip_steps": 100}
        assert moved(run(engine, "flux1", cache="mag_cache", cache_options=skips), plain) > 0
        forced = run(
            engine, "flux1", cache="first_block_cache", cache_options=FORCE["first_block_cache"]
        )
        assert moved(forced, plain) > 0
        assert moved(run(engine, "flux1"), plain) == 0
    finally:
        engine.close()


# -- refusals -------------------------------------------------------------------------------


def test_an_unknown_method_is_refused_before_queueing_naming_the_methods(engine: Engine) -> None:
    message = refused(
        lambda: engine.submit("qwen-image", ImageRequest("x", cache="tea_cache")),
        "tea_cache",
        "first_block_cache, taylorseer_cache, mag_cache, faster_cache",
    )
    assert "none" in message


def test_a_method_the_model_cannot_use_names_those_it_can(engine: Engine) -> None:
    refused(
        lambda: run(engine, "wan", cache="taylorseer_cache"),
        "taylorseer_cache cannot run on WanPipeline",
        "first_block_cache, mag_cache",
    )
    refused(
        lambda: run(engine, "klein", cache="first_block_cache"),
        "Flux2SingleTransformerBlock",
        "taylorseer_cache, mag_cache",
    )
    refused(lambda: run(engine, "qwen-image", cache="faster_cache"), "batched CFG call")


@pytest.mark.parametrize("name", ["sd15", "z-image", "flux2", "chroma"])
def test_a_model_with_no_usable_cache_says_so_and_points_at_the_ggml_caches(
    engine: Engine, name: str
) -> None:
    hint = "ucache or spectrum" if name == "sd15" else "easycache"
    refused(
        lambda: run(engine, name, cache="first_block_cache"),
        "no diffusers step cache works for this model",
        "stablediffusion-ggml",
        hint,
    )


def test_unknown_knob_and_bad_values_are_refused_naming_the_knobs(engine: Engine) -> None:
    knobs = "threshold (0.05)"
    refused(
        lambda: engine.submit(
            "qwen-image", ImageRequest("x", cache="first_block_cache", cache_options={"speed": 2})
        ),
        "first_block_cache has no knob 'speed'",
        knobs,
    )
    for bad in ({"threshold": -1}, {"threshold": "high"}):

        def submit(options: dict[str, Any] = bad) -> Any:  # the request inside: it may refuse
            request = ImageRequest("x", cache="first_block_cache", cache_options=options)
            return engine.submit("qwen-image", request)

        refused(
            submit,
            "threshold",
            knobs,
        )
    refused(
        lambda: engine.submit(
            "qwen-image",
            ImageRequest("x", cache="taylorseer_cache", cache_options={"max_order": 1.5}),
        ),
        "max_order",
        "cache_interval (5)",
    )
    refused(
        lambda: engine.submit(
            "qwen-image",
            ImageRequest("x", cache="mag_cache", cache_options={"mag_ratios": [1, -2]}),
        ),
        "mag_ratios must all be above 0",
    )
    refused(
        lambda: engine.submit(
            "qwen-image",
            ImageRequest(
                "x",
                cache="faster_cache",
                cache_options={"spatial_attention_timestep_skip_range": [900, 100]},
            ),
        ),
        "low < high",
    )


def test_mag_cache_without_ratios_is_refused_naming_what_it_needs(engine: Engine) -> None:
    refused(lambda: run(engine, "qwen-image", cache="mag_cache"), "mag_ratios", "calibration")


# -- the YAML's cache -------------------------------------------------------------------------


def test_the_yaml_cache_applies_and_a_request_turns_it_off_or_changes_it(engine: Engine) -> None:
    plain = run(engine, "qwen-image")
    from_yaml = run(engine, "qwen-fbc")
    assert moved(from_yaml, plain) > 0
    assert from_yaml.request is not None and from_yaml.request.cache == "first_block_cache"
    assert moved(run(engine, "qwen-fbc", cache="none"), plain) == 0
    # The request's knob wins over the YAML's for the same method.
    assert moved(run(engine, "qwen-fbc", cache_options={"threshold": 0.0}), plain) == 0


def test_a_yaml_cache_the_model_cannot_use_is_a_config_error_at_load(
    tmp_path: Path, paths: dict[str, Path]
) -> None:
    cases = {
        "z": (paths["z-image"], '["cache:first_block_cache"]', "no diffusers cache hooks"),
        "q": (paths["qwen-image"], '["cache:mag_cache"]', "mag_ratios"),
        "k": (paths["qwen-image"], '["cache_threshold:0.1"]', "cache_threshold need a step cache"),
        "u": (paths["qwen-image"], '["cache:fast"]', "unknown cache method 'fast'"),
    }
    for name, (path, options, _) in cases.items():
        text = model_yaml(name, path, f"options: {options}\n")
        (tmp_path / f"{name}.yaml").write_text(text, encoding="utf-8")
    engine = Engine(EngineSettings(models_path=tmp_path))
    try:
        for name, (_, _, words) in cases.items():
            with pytest.raises(ConfigError) as err:
                engine.load(name)
            assert words in err.value.message and f"{name}.yaml" in err.value.message
    finally:
        engine.close()


def test_a_batch_runs_with_the_yaml_cache(tmp_path: Path, paths: dict[str, Path]) -> None:
    """Requests without a cache of their own batch; the YAML's cache then acts on the batch."""
    options = 'options: ["cache:first_block_cache", "cache_threshold:1e9"]\n'
    (tmp_path / "q.yaml").write_text(model_yaml("q", paths["qwen-image"], options), "utf-8")
    (tmp_path / "plain.yaml").write_text(model_yaml("plain", paths["qwen-image"]), "utf-8")
    engine = Engine(EngineSettings(models_path=tmp_path, max_batch=4, keep_alive=None))
    try:
        started, release = threading.Event(), threading.Event()

        def hold(event: ProgressEvent) -> None:
            if event.phase == "step":
                started.set()
                release.wait(120)

        base = ImageRequest("an otter", width=32, height=32)
        holder = engine.submit("q", base.with_(seed=9), hold)
        assert started.wait(120)
        jobs = [engine.submit("q", base.with_(seed=seed)) for seed in (1, 2)]
        release.set()
        holder.result(120)
        batched = [job.result(300) for job in jobs]
        assert [r.timings.get("batch") for r in batched] == [2.0, 2.0]
        plain = [engine.generate("plain", base.with_(seed=seed)) for seed in (1, 2)]
        assert all(moved(b, p) > 0 for b, p in zip(batched, plain, strict=True))
        denoiser = engine.slots["q"].backend.pipe.transformer  # type: ignore[attr-defined]
        assert not denoiser.is_cache_enabled
    finally:
        engine.close()


# -- over HTTP --------------------------------------------------------------------------------


def test_the_cache_field_over_http_changes_the_image(engine: Engine) -> None:
    app = create_app(ServerSettings(), engine)
    body = {
        "model": "qwen-image",
        "prompt": "an otter",
        "size": "32x32",
        "seed": 5,
        "response_format": "b64_json",
    }
    with serve_in_thread(app) as url:
        plain = httpx.post(f"{url}/v1/images/generations", json=body, timeout=300)
        cached = httpx.post(
            f"{url}/v1/images/generations",
            json={**body, "cache": {"method": "first_block_cache", "threshold": 1e9}},
            timeout=300,
        )
        bad = httpx.post(f"{url}/v1/images/generations", json={**body, "cache": "tea"}, timeout=300)
    assert plain.status_code == cached.status_code == 200, cached.text
    a = np.asarray(b64_image(plain.json()["data"][0]["b64_json"]), dtype=np.int16)
    b = np.asarray(b64_image(cached.json()["data"][0]["b64_json"]), dtype=np.int16)
    assert np.abs(a - b).max() > 0
    assert bad.status_code == 400 and "first_block_cache" in bad.json()["error"]["message"]
