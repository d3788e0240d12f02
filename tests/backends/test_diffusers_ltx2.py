"""LTX-2 video through the real diffusers backend and the engine, on a tiny random LTX2Pipeline
(tests/support/tiny_families_ltx2.py, the real 32x / 8x VAE ratios): text-to-video, an input image
as LTX2ImageToVideoPipeline over the same weights, the 8k+1 frames, sizes, fps as frame_rate,
guidance and the negative prompt, the refusals, parity with the bare pipeline call, and the MP4
through `localimg generate` and /v1/videos."""

from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from localimg.engine import Engine, EngineSettings
from localimg.errors import BackendNotInstalled
from localimg.requests import ImageRequest, ImageResult
from tests.support.engine_checks import backend_of, noise, refused

tiny_ltx2 = pytest.importorskip("tests.support.tiny_families_ltx2")

PROMPT = "an otter swims"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ltx2-models")
    path = tiny_ltx2.tiny_ltx2_path()
    # 128 prompt tokens, not the pipeline's 1024: half the time of a tiny call
    for name, model, extra in (
        ("ltx2", path, 'options: ["max_sequence_length:128"]\n'),
        ("ltx2-enhanced", path, 'options: ["max_sequence_length:128", "prompt_enhance:true"]\n'),
        ("ltx2-pe", tiny_ltx2.tiny_ltx2_enhancer_path(), 'options: ["max_sequence_length:128"]\n'),
        (  # image-to-video only, the image used as it is (no PyAV needed)
            "ltx2-i2v",
            path,
            'options: ["max_sequence_length:128", "image_crf:0"]\n'
            "diffusers:\n  pipeline_type: LTX2ImageToVideoPipeline\n",
        ),
    ):
        (folder / f"{name}.yaml").write_text(
            f"name: {name}\nbackend: diffusers\nparameters:\n  model: {model}\nstep: 2\n{extra}",
            encoding="utf-8",
        )
    return folder


@pytest.fixture(scope="module")
def ltx2(models: Path) -> Iterator[Engine]:
    engine = Engine(EngineSettings(models_path=models))
    yield engine
    engine.close()


def video(engine: Engine, name: str = "ltx2", **fields: Any) -> ImageResult:
    fields.setdefault("seed", 3)
    fields.setdefault("num_frames", 9)
    fields.setdefault("width", 64)
    fields.setdefault("height", 64)
    return engine.generate(name, ImageRequest(fields.pop("prompt", PROMPT), **fields))


def frames(result: ImageResult) -> np.ndarray:
    return np.stack([np.asarray(f.convert("RGB"), dtype=np.int16) for f in result.images])


def vdiffer(a: ImageResult, b: ImageResult) -> bool:
    return a.images[0].size != b.images[0].size or bool(np.abs(frames(a) - frames(b)).max() > 0)


def test_ltx2_text_to_video(ltx2: Engine) -> None:
    first = video(ltx2)
    backend = backend_of(ltx2, "ltx2")
    assert backend.describe()["pipeline"] == "LTX2Pipeline"
    assert backend.describe()["family"] == "LTX-2"
    assert len(first.images) == 9 and first.images[0].size == (64, 64)
    assert first.fps == 24.0  # the pipeline's own frame_rate
    assert np.abs(frames(first)[0] - frames(first)[-1]).max() > 0  # the frames move
    assert not vdiffer(first, video(ltx2))
    assert vdiffer(first, video(ltx2, seed=4))
    assert vdiffer(first, video(ltx2, steps=3))
    assert vdiffer(first, video(ltx2, prompt="a red fox runs"))
    longer = video(ltx2, num_frames=17)
    assert len(longer.images) == 17
    wide = video(ltx2, width=96)
    assert wide.images[0].size == (96, 64) and len(wide.images) == 9
    defaults = backend.defaults
    assert (defaults.width, defaults.height, defaults.cfg_scale) == (768, 512, 3.0)
    assert defaults.size_multiple == 32


def test_ltx2_fps_guidance_and_negative_prompt_take_effect(ltx2: Engine) -> None:
    first = video(ltx2)
    slow = video(ltx2, fps=12)
    assert slow.fps == 12.0 and vdiffer(first, slow)  # frame_rate: time positions, audio length
    assert vdiffer(first, video(ltx2, cfg_scale=5.0))
    negative = video(ltx2, negative_prompt="blurry, static")
    assert vdiffer(first, negative)
    # cfg_scale 1 leaves the audio's guidance (7) on: the negative prompt still acts
    plain = video(ltx2, cfg_scale=1.0)
    assert vdiffer(plain, video(ltx2, cfg_scale=1.0, negative_prompt="blurry, static"))
    # the pipeline's other knobs pass through as they are
    assert vdiffer(first, video(ltx2, extra={"stg_scale": 0.0, "modality_scale": 1.0}))
    assert vdiffer(first, video(ltx2, extra={"max_sequence_length": 64}))


def test_ltx2_refuses_what_it_would_round_ignore_or_fail_on(ltx2: Engine) -> None:
    refused(lambda: video(ltx2, num_frames=10), "LTX-2 makes 8k+1 frames", "try 9 or 17")
    refused(lambda: video(ltx2, width=80), "multiples of 32", "try 64x64")
    refused(lambda: video(ltx2, width=32), "at least 64 pixels")
    refused(lambda: video(ltx2, extra={"frame_rate": 12.0}), "fps")
    refused(
        lambda: video(ltx2, cfg_scale=1.0, negative_prompt="x", extra={"audio_guidance_scale": 1}),
        "only with guidance",
    )
    refused(lambda: video(ltx2, n=2), "one video per request")
    refused(lambda: video(ltx2, extra={"guidance": 3.0}), "guidance")
    refused(lambda: video(ltx2, extra={"system_prompt": "x"}), "prompt enhancer, which is off")
    refused(lambda: video(ltx2, extra={"min_seconds": 2.0}), "duration head")
    refused(lambda: video(ltx2, extra={"bogus": 1}), "does not accept 'bogus'")
    refused(lambda: video(ltx2, strength=0.5), "strength")
    refused(lambda: video(ltx2, mask=noise(1, 64)), "mask")
    refused(
        lambda: video(ltx2, init_image=noise(0, 64), reference_images=(noise(1, 64),)),
        "takes no reference images",
    )
    # the model's prompt enhancer: this one was saved without it
    refused(lambda: video(ltx2, "ltx2-enhanced"), "without its prompt enhancer")
    refused(lambda: video(ltx2, extra={"prompt_enhance": True}), "without its prompt enhancer")


def test_ltx2_image_to_video(ltx2: Engine) -> None:
    no_crf = {"image_crf": 0}  # PyAV's H.264 re-compression of the image off
    start = video(ltx2, init_image=noise(0, 64), extra=no_crf)
    siblings = backend_of(ltx2, "ltx2")._siblings
    assert {type(p).__name__ for p in siblings.values()} == {"LTX2ImageToVideoPipeline"}
    assert len(start.images) == 9 and start.images[0].size == (64, 64) and start.fps == 24.0
    assert not vdiffer(start, video(ltx2, init_image=noise(0, 64), extra=no_crf))
    assert vdiffer(start, video(ltx2, init_image=noise(1, 64), extra=no_crf))
    assert vdiffer(start, video(ltx2))
    # the first frame follows the image more closely than a text-only video's does
    image = np.asarray(noise(0, 64), dtype=np.int16)
    text_only = video(ltx2)
    assert np.abs(frames(start)[0] - image).mean() < np.abs(frames(text_only)[0] - image).mean()


@pytest.mark.skipif(importlib.util.find_spec("av") is not None, reason="PyAV is installed")
def test_ltx2_image_to_video_names_pyav_for_its_default_recompression(ltx2: Engine) -> None:
    with pytest.raises(BackendNotInstalled, match="pip install av, or set image_crf 0"):
        video(ltx2, init_image=noise(0, 64))


def test_ltx2_loaded_as_image_to_video(ltx2: Engine) -> None:
    start = video(ltx2, "ltx2-i2v", init_image=noise(0, 64))
    assert backend_of(ltx2, "ltx2-i2v").describe()["pipeline"] == "LTX2ImageToVideoPipeline"
    # the same weights, the same video as the text-to-video model's image-to-video sibling
    assert not vdiffer(start, video(ltx2, init_image=noise(0, 64), extra={"image_crf": 0}))
    refused(lambda: video(ltx2, "ltx2-i2v"), "needs an input image")


def test_ltx2_prompt_enhancer(ltx2: Engine) -> None:
    short = {"prompt_max_new_tokens": 8}  # the enhancer's rewrite, cut short
    plain = video(ltx2, "ltx2-pe")
    enhanced = video(ltx2, "ltx2-pe", extra={"prompt_enhance": True, **short})
    assert vdiffer(plain, enhanced)
    assert not vdiffer(enhanced, video(ltx2, "ltx2-pe", extra={"prompt_enhance": True, **short}))
    longer = video(ltx2, "ltx2-pe", extra={"prompt_enhance": True, "prompt_max_new_tokens": 16})
    assert vdiffer(enhanced, longer)  # the enhancer's own keywords pass through while it runs
    video(ltx2, "ltx2-pe", extra={"prompt_enhance": True, "system_prompt": "Be brief.", **short})
    assert not vdiffer(plain, video(ltx2, "ltx2-pe", extra={"prompt_enhance": False}))
    refused(lambda: video(ltx2, "ltx2-pe", extra=short), "prompt enhancer, which is off")
    import diffusers

    pipe = diffusers.LTX2Pipeline.from_pretrained(tiny_ltx2.tiny_ltx2_enhancer_path())
    bare = bare_call(pipe, 3, enable_prompt_enhancement=True, **short)
    assert np.abs(frames(enhanced) - bare).max() <= 1


def test_ltx2_prompt_enhancer_needs_its_processor() -> None:
    from types import SimpleNamespace

    from localimg.backends.diffusers.families import ltx2 as row

    request = ImageRequest(PROMPT)
    without = SimpleNamespace(processor=None, prompt_enhancer=object())
    refused(
        lambda: row.check_enhancer(request, without, {"enable_prompt_enhancement": True}),
        "without the processor",
    )


def bare_call(pipe: Any, seed: int, **kwargs: Any) -> np.ndarray:
    import torch

    pipe.set_progress_bar_config(disable=True)
    with torch.inference_mode():
        out = pipe(
            prompt=PROMPT,
            num_frames=9,
            width=64,
            height=64,
            num_inference_steps=2,
            guidance_scale=3.0,
            generator=torch.Generator("cpu").manual_seed(seed),
            output_type="pil",
            max_sequence_length=128,
            **kwargs,
        )
    return np.stack([np.asarray(f.convert("RGB"), dtype=np.int16) for f in out.frames[0]])


def test_ltx2_video_equals_the_bare_pipeline_call(ltx2: Engine) -> None:
    import diffusers

    path = tiny_ltx2.tiny_ltx2_path()
    ours = video(ltx2, seed=8, fps=12, negative_prompt="blurry")
    pipe = diffusers.LTX2Pipeline.from_pretrained(path)
    bare = bare_call(pipe, 8, frame_rate=12.0, negative_prompt="blurry")
    assert np.abs(frames(ours) - bare).max() <= 1
    start = video(ltx2, seed=8, init_image=noise(0, 64), extra={"image_crf": 0})
    i2v = diffusers.LTX2ImageToVideoPipeline.from_pretrained(path)
    bare = bare_call(i2v, 8, image=noise(0, 64), image_crf=0)
    assert np.abs(frames(start) - bare).max() <= 1


def mp4_frames(path: Path) -> tuple[dict[str, Any], int]:
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    return meta, len(list(reader))


def test_ltx2_through_generate_to_mp4(models: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from localimg.cli import app

    out = tmp_path / "otter.mp4"
    args = ["generate", PROMPT, "-m", "ltx2", "--models-path", str(models), "--seed", "1"]
    args += ["--size", "64x64", "--num-frames", "9", "--fps", "12", "-o", str(out), "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["video"] == {"frames": 9, "fps": 12.0}
    meta, count = mp4_frames(out)
    assert count == 9 and meta["fps"] == 12 and meta["size"] == (64, 64)


def test_ltx2_video_job_over_http(models: Path, tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    from localimg.server.app import ServerSettings, create_app

    engine = Engine(EngineSettings(models_path=models))
    body = {"model": "ltx2", "prompt": PROMPT, "size": "64x64", "num_frames": 9, "seed": 2}
    with TestClient(create_app(ServerSettings(), engine)) as client:
        created = client.post("/v1/videos", json={**body, "steps": 2})
        assert created.status_code == 200, created.text
        video_id = created.json()["id"]
        deadline = time.monotonic() + 120
        while (job := client.get(f"/v1/videos/{video_id}").json())["status"] != "completed":
            assert job["status"] != "failed" and time.monotonic() < deadline, job
            time.sleep(0.2)
        content = client.get(f"/v1/videos/{video_id}/content")
        assert content.status_code == 200
        (tmp_path / "job.mp4").write_bytes(content.content)
        meta, count = mp4_frames(tmp_path / "job.mp4")
        assert count == 9 and meta["fps"] == 24  # LTX-2's own frame rate
        bad = client.post("/v1/videos", json={**body, "num_frames": 12})
        video_id = bad.json()["id"]
        deadline = time.monotonic() + 60
        while (job := client.get(f"/v1/videos/{video_id}").json())["status"] != "failed":
            assert job["status"] != "completed" and time.monotonic() < deadline, job
            time.sleep(0.2)
        assert "8k+1" in job["error"]["message"]
