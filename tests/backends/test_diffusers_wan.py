"""Wan 2.1/2.2 video through the real diffusers backend and the engine, on tiny random pipelines
(tests/support/tiny_families.py): text-to-video, image-to-video, TI2V (an image on a WanPipeline
with `expand_timesteps`), Wan's 4k+1 frames and size multiples, and parity with the bare call."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from localimg.engine import Engine, EngineSettings
from localimg.requests import ImageRequest, ImageResult
from tests.support.engine_checks import backend_of, noise, refused

tiny_families = pytest.importorskip("tests.support.tiny_families")

HAS_WAN = hasattr(tiny_families, "tiny_wan_path") and hasattr(tiny_families, "tiny_wan_i2v_path")


@pytest.fixture(scope="module")
def stub_ftfy() -> Iterator[None]:
    """diffusers 0.42's WanImageToVideoPipeline calls ftfy.fix_text unguarded; without ftfy
    installed, an identity stand-in (the prompts here are plain ASCII, which ftfy leaves as is)."""
    import importlib.machinery
    import sys
    import types

    from diffusers.pipelines.wan import pipeline_wan_i2v

    if importlib.util.find_spec("ftfy") is not None:
        yield
        return
    stub = types.ModuleType("ftfy")
    stub.__spec__ = importlib.machinery.ModuleSpec("ftfy", None)
    stub.fix_text = lambda text: text  # type: ignore[attr-defined]
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "ftfy", stub)
        patch.setattr(pipeline_wan_i2v, "ftfy", stub, raising=False)
        yield


@pytest.fixture(scope="module")
def wan(tmp_path_factory: pytest.TempPathFactory, stub_ftfy: None) -> Iterator[Engine]:
    if not HAS_WAN:
        pytest.skip("no tiny Wan pipelines")
    folder = tmp_path_factory.mktemp("wan-models")
    t2v, i2v = tiny_families.tiny_wan_path(), tiny_families.tiny_wan_i2v_path()
    for name, path, extra in (
        ("wan", t2v, ""),
        ("wan-i2v", i2v, ""),
        ("wan-ti2v", i2v, "diffusers:\n  pipeline_type: WanPipeline\n"),  # TI2V-5B's own class
    ):
        (folder / f"{name}.yaml").write_text(
            f"name: {name}\nbackend: diffusers\nparameters:\n  model: {path}\nstep: 2\n{extra}",
            encoding="utf-8",
        )
    engine = Engine(EngineSettings(models_path=folder))
    yield engine
    engine.close()


def video(engine: Engine, name: str, **fields: Any) -> ImageResult:
    side = 64 if name != "wan" else 32
    fields.setdefault("seed", 3)
    fields.setdefault("num_frames", 5)
    fields.setdefault("width", side)
    fields.setdefault("height", side)
    return engine.generate(name, ImageRequest(fields.pop("prompt", "an otter swims"), **fields))


def frames(result: ImageResult) -> np.ndarray:
    return np.stack([np.asarray(f.convert("RGB"), dtype=np.int16) for f in result.images])


def vdiffer(a: ImageResult, b: ImageResult) -> bool:
    return bool(np.abs(frames(a) - frames(b)).max() > 0)


def test_wan_text_to_video(wan: Engine) -> None:
    first = video(wan, "wan")
    assert backend_of(wan, "wan").describe()["pipeline"] == "WanPipeline"
    assert len(first.images) == 5 and first.images[0].size == (32, 32) and first.fps
    assert not vdiffer(first, video(wan, "wan"))
    assert vdiffer(first, video(wan, "wan", seed=4))
    assert vdiffer(first, video(wan, "wan", steps=3))
    assert len(video(wan, "wan", num_frames=9).images) == 9
    assert vdiffer(first, video(wan, "wan", cfg_scale=1.0))
    assert vdiffer(first, video(wan, "wan", negative_prompt="blurry, static"))
    assert vdiffer(first, video(wan, "wan", extra={"shift": 8.0}))
    euler = video(wan, "wan", scheduler="euler")
    assert euler.scheduler == "Euler" and vdiffer(first, euler)
    assert backend_of(wan, "wan").defaults.width == 832  # Wan's own default size


def test_wan_refuses_what_it_would_round_or_ignore(wan: Engine) -> None:
    refused(lambda: video(wan, "wan", num_frames=6), "4k+1", "try 5 or 9")
    refused(lambda: video(wan, "wan", width=40), "multiples of 16")
    refused(lambda: video(wan, "wan", init_image=noise(0, 32)), "video from text only")
    refused(lambda: video(wan, "wan", cfg_scale=1.0, negative_prompt="x"), "only with guidance")
    refused(lambda: video(wan, "wan", extra={"guidance": 3.0}), "guidance")
    refused(lambda: video(wan, "wan", scheduler="euler_a"), "use one of: euler")


def test_wan_image_to_video(wan: Engine) -> None:
    start = video(wan, "wan-i2v", init_image=noise(0, 64))
    assert backend_of(wan, "wan-i2v").describe()["pipeline"] == "WanImageToVideoPipeline"
    assert len(start.images) == 5 and start.images[0].size == (64, 64)
    assert not vdiffer(start, video(wan, "wan-i2v", init_image=noise(0, 64)))
    assert vdiffer(start, video(wan, "wan-i2v", init_image=noise(1, 64)))
    refused(lambda: video(wan, "wan-i2v"), "needs an input image")
    refused(lambda: video(wan, "wan-i2v", init_image=noise(0, 48), width=48), "multiples of 32")
    two = (noise(1, 64),)
    refused(
        lambda: video(wan, "wan-i2v", init_image=noise(0, 64), reference_images=two),
        "takes no reference images",
    )


def test_wan_ti2v_makes_video_from_text_or_from_an_image(wan: Engine) -> None:
    from_text = video(wan, "wan-ti2v")
    from_image = video(wan, "wan-ti2v", init_image=noise(0, 64))
    assert len(from_image.images) == 5 and vdiffer(from_text, from_image)
    siblings = backend_of(wan, "wan-ti2v")._siblings
    assert {type(p).__name__ for p in siblings.values()} == {"WanImageToVideoPipeline"}
    # the same weights loaded as WanImageToVideoPipeline make the same video
    assert not vdiffer(from_image, video(wan, "wan-i2v", init_image=noise(0, 64)))


def test_wan_video_equals_the_bare_pipeline_call(wan: Engine) -> None:
    import diffusers
    import torch

    ours = video(wan, "wan", seed=8)
    pipe = diffusers.WanPipeline.from_pretrained(tiny_families.tiny_wan_path())
    pipe.set_progress_bar_config(disable=True)
    with torch.inference_mode():
        out = pipe(
            prompt="an otter swims",
            num_frames=5,
            width=32,
            height=32,
            num_inference_steps=2,
            guidance_scale=backend_of(wan, "wan").defaults.cfg_scale,
            generator=torch.Generator("cpu").manual_seed(8),
            output_type="pil",
        )
    bare = np.stack([np.asarray(f.convert("RGB"), dtype=np.int16) for f in out.frames[0]])
    assert np.abs(frames(ours) - bare).max() <= 1
