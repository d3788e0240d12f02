"""Image-conditioned and video generation: inputs, engine, backend and CLI on tiny real models."""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from localimg.engine import Engine, EngineSettings
from localimg.errors import InvalidRequest, LocalimgError, PayloadTooLarge, UnreadableImage
from localimg.media import conditioning
from localimg.media.decode import ImageLimits, decode_image
from localimg.requests import ImageRequest, parse_mode
from tests.support.conditioned_fixtures import file_server, half_mask, noise_image, png_bytes


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


@pytest.fixture(scope="module")
def engine(conditioned_models: Path) -> Iterator[Engine]:
    engine = Engine(EngineSettings(models_path=conditioned_models))
    yield engine
    engine.close()


# -- inputs: orientation, alpha, masks, size ---------------------------------------------------


def test_exif_orientation_is_applied() -> None:
    image = noise_image(40, 24)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes())
    decoded = decode_image(buffer.getvalue(), "image", ImageLimits())
    assert decoded.size == (40, 24)
    upright = conditioning.as_init(decoded)
    assert upright.size == (24, 40) and upright.mode == "RGB"


def test_alpha_is_laid_over_white_and_becomes_the_edit_mask() -> None:
    rgba = Image.new("RGBA", (16, 16), (10, 20, 30, 255))
    rgba.paste((0, 0, 0, 0), (0, 0, 8, 16))  # left half transparent
    init, mask = conditioning.edit_inputs(rgba, None)
    assert init.mode == "RGB" and init.getpixel((2, 2)) == (255, 255, 255)
    assert init.getpixel((12, 2)) == (10, 20, 30)
    assert mask.mode == "L" and mask.getpixel((2, 2)) == 255 and mask.getpixel((12, 2)) == 0


def test_mask_file_white_or_transparent_means_change() -> None:
    grey = half_mask(16, 16)
    assert conditioning.as_mask(grey).getpixel((2, 2)) == 255
    transparent = Image.new("RGBA", (16, 16), (0, 0, 0, 255))
    transparent.paste((0, 0, 0, 0), (0, 0, 8, 16))
    as_mask = conditioning.as_mask(transparent)
    assert as_mask.getpixel((2, 2)) == 255 and as_mask.getpixel((12, 2)) == 0


def test_edit_needs_a_mask_or_transparency_and_matching_sizes() -> None:
    with pytest.raises(InvalidRequest, match="no mask"):
        conditioning.edit_inputs(noise_image(16, 16), None)
    with pytest.raises(InvalidRequest, match="same size"):
        conditioning.edit_inputs(noise_image(16, 16), half_mask(32, 32))


def test_size_for_rounds_to_the_model_multiple_and_caps() -> None:
    assert conditioning.size_for(noise_image(70, 37), 8) == (72, 40)
    assert conditioning.size_for(noise_image(3, 3), 8) == (8, 8)
    assert conditioning.size_for(Image.new("RGB", (8000, 2000)), 16, max_side=4096) == (4096, 1024)


@pytest.mark.parametrize(
    "data,error",
    [
        (b"", UnreadableImage),
        (b"not an image at all", UnreadableImage),
        (png_bytes(noise_image(16, 16))[:60], UnreadableImage),
    ],
)
def test_unreadable_images_are_refused(data: bytes, error: type[LocalimgError]) -> None:
    with pytest.raises(error) as info:
        decode_image(data, "image", ImageLimits())
    assert info.value.http_status in (400, 422) and info.value.param == "image"


def test_byte_and_pixel_limits_stop_decompression_bombs() -> None:
    data = png_bytes(Image.new("L", (2000, 2000)))  # a few KB of zeros, 4 Mpixels
    assert len(data) < 50_000
    with pytest.raises(PayloadTooLarge, match="pixels"):
        decode_image(data, "image", ImageLimits(max_pixels=1_000_000))
    with pytest.raises(PayloadTooLarge, match="bytes"):
        decode_image(data, "image", ImageLimits(max_bytes=1000))


def test_mode_parsing() -> None:
    assert parse_mode(0) is None and parse_mode("0") is None and parse_mode(None) is None
    assert parse_mode("Inpaint") == "inpaint"
    with pytest.raises(InvalidRequest, match="NCNN"):
        parse_mode(1)
    with pytest.raises(InvalidRequest, match="mode"):
        parse_mode("outpaint")


@pytest.mark.parametrize(
    "fields,match",
    [
        ({"mask": half_mask()}, "mask needs an image"),
        ({"mode": "img2img"}, "needs an input image"),
        ({"mode": "inpaint", "init_image": noise_image()}, "needs a mask"),
        ({"mode": "txt2img", "init_image": noise_image()}, "takes no input image"),
        ({"mode": "img2img", "init_image": noise_image(), "mask": half_mask()}, "takes no mask"),
        ({"num_frames": 0}, "num_frames"),
        ({"fps": 0}, "fps"),
        ({"strength": 1.5}, "strength"),
    ],
)
def test_inconsistent_requests_are_refused(fields: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidRequest, match=match):
        ImageRequest(prompt="x", **fields)  # type: ignore[arg-type]


# -- engine + diffusers backend ------------------------------------------------------------------


def test_img2img_uses_the_input_size_and_strength(engine: Engine) -> None:
    source = noise_image(72, 40)
    low = engine.generate("tiny", ImageRequest("a cat", init_image=source, strength=0.3, seed=5))
    high = engine.generate("tiny", ImageRequest("a cat", init_image=source, strength=0.9, seed=5))
    again = engine.generate("tiny", ImageRequest("a cat", init_image=source, strength=0.3, seed=5))
    assert low.images[0].size == (72, 40)
    assert low.request is not None and low.request.strength == 0.3
    assert np.array_equal(pixels(low.images[0]), pixels(again.images[0]))
    assert not np.array_equal(pixels(low.images[0]), pixels(high.images[0]))


def test_inpaint_changes_the_masked_area_only(engine: Engine) -> None:
    source = noise_image(64, 64, seed=3)
    result = engine.generate(
        "tiny", ImageRequest("a cat", init_image=source, mask=half_mask(), seed=1)
    )
    out, original = pixels(result.images[0]), pixels(source)
    assert np.abs(out[:, :32] - original[:, :32]).mean() > 10  # the white half changed
    assert np.abs(out[:, 33:] - original[:, 33:]).max() <= 1  # the black half is kept


def test_siblings_share_the_loaded_modules(engine: Engine) -> None:
    engine.generate("tiny", ImageRequest("x", init_image=noise_image(), steps=2))
    engine.generate("tiny", ImageRequest("x", init_image=noise_image(), mask=half_mask(), steps=2))
    backend = engine.slots["tiny"].backend  # type: ignore[attr-defined]
    siblings = backend._siblings
    assert {type(p).__name__ for p in siblings.values()} == {
        "StableDiffusionImg2ImgPipeline",
        "StableDiffusionInpaintPipeline",
    }
    for sibling in siblings.values():
        assert sibling.unet is backend.pipe.unet and sibling.vae is backend.pipe.vae


def test_text_only_request_to_an_img2img_model(engine: Engine) -> None:
    result = engine.generate("stablediffusion-edit", ImageRequest("a cat", seed=2))
    assert result.images[0].size == (64, 64)


def test_variation_with_an_empty_prompt(engine: Engine) -> None:
    source = noise_image(64, 64, seed=9)
    result = engine.generate("tiny", ImageRequest("", init_image=source, mode="variation", seed=3))
    assert result.images[0].size == (64, 64)
    assert not np.array_equal(pixels(result.images[0]), pixels(source))


def test_depth2img(engine: Engine) -> None:
    source = noise_image(64, 48, seed=4)
    a = engine.generate("stablediffusion-depth", ImageRequest("a room", init_image=source, seed=1))
    b = engine.generate(
        "stablediffusion-depth", ImageRequest("a room", init_image=source, seed=1, strength=0.5)
    )
    assert a.images[0].size == (64, 48)
    assert not np.array_equal(pixels(a.images[0]), pixels(b.images[0]))
    assert type(engine.slots["stablediffusion-depth"].backend.pipe).__name__ == (  # type: ignore[attr-defined]
        "StableDiffusionDepth2ImgPipeline"
    )


def test_img2vid_frames_and_fps(engine: Engine) -> None:
    result = engine.generate(
        "img2vid", ImageRequest("", init_image=noise_image(32, 32), num_frames=3, seed=1)
    )
    assert result.fps == 7.0  # SVD's own default
    assert len(result.images) == 3 and result.images[0].size == (32, 32)
    faster = engine.generate(
        "img2vid", ImageRequest("", init_image=noise_image(32, 32), num_frames=3, fps=12, seed=1)
    )
    assert faster.fps == 12
    # SVD conditions on fps: another fps is another video
    assert not np.array_equal(pixels(result.images[1]), pixels(faster.images[1]))


def test_txt2vid_frames_and_fps(engine: Engine) -> None:
    result = engine.generate("txt2vid", ImageRequest("surfing", num_frames=5, fps=4, seed=1))
    assert result.fps == 4 and len(result.images) == 5
    assert result.images[0].size == (32, 32)


@pytest.mark.parametrize(
    "model,fields,match",
    [
        ("txt2vid", {"init_image": noise_image()}, "takes no input image"),
        ("stablediffusion-depth", {}, "needs an input image"),
        ("img2vid", {}, "needs an input image"),
        ("img2vid", {"prompt": "a rocket", "init_image": noise_image(32, 32)}, "no text prompt"),
        ("tiny", {"fps": 3.0}, "video models only"),
        ("tiny", {"num_frames": 3}, "video models only"),
        ("txt2vid", {"n": 2}, "one video per request"),
        ("tiny", {"mode": "depth2img", "init_image": noise_image()}, "cannot do depth2img"),
        ("tiny", {"mode": "txt2vid"}, "cannot do txt2vid"),
        ("img2vid", {"init_image": noise_image(32, 32), "strength": 0.5}, "strength"),
        ("tiny", {"init_image": noise_image(), "steps": 1, "strength": 0.5}, "no denoising step"),
    ],
)
def test_requests_a_model_cannot_serve(
    engine: Engine, model: str, fields: dict[str, object], match: str
) -> None:
    fields = {"prompt": "x" if model != "img2vid" else "", **fields}
    with pytest.raises(InvalidRequest, match=match):
        engine.generate(model, ImageRequest(**fields))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "pipeline_type,loaded",
    [
        ("AutoPipelineForImage2Image", "StableDiffusionImg2ImgPipeline"),
        ("StableDiffusionInpaintPipeline", "StableDiffusionInpaintPipeline"),
    ],
)
def test_image_pipeline_types_in_yaml(
    tmp_path: Path, tiny_sd: Path, pipeline_type: str, loaded: str
) -> None:
    (tmp_path / "m.yaml").write_text(
        f"name: m\nparameters:\n  model: {tiny_sd}\nstep: 3\n"
        f"diffusers:\n  pipeline_type: {pipeline_type}\n",
        encoding="utf-8",
    )
    engine = Engine(EngineSettings(models_path=tmp_path))
    try:
        source = noise_image(64, 64, seed=6)
        edited = engine.generate("m", ImageRequest("x", init_image=source, mask=half_mask()))
        assert type(engine.slots["m"].backend.pipe).__name__ == loaded  # type: ignore[attr-defined]
        assert np.abs(pixels(edited.images[0])[:, 33:] - pixels(source)[:, 33:]).max() <= 1
        plain = engine.generate("m", ImageRequest("x", seed=1))  # text only: txt2img sibling
        assert plain.images[0].size == (64, 64)
    finally:
        engine.close()


def test_cancel_stops_a_video_between_steps(engine: Engine) -> None:
    from localimg.errors import Cancelled

    steps: list[int] = []
    holder: dict[str, object] = {}
    submitted = threading.Event()

    def on_progress(event: object) -> None:
        if getattr(event, "phase", "") == "step":
            steps.append(event.step)  # type: ignore[attr-defined]
            submitted.wait(30)  # the job may start before submit() has returned it
            holder["job"].cancel()  # type: ignore[attr-defined]

    job = engine.submit(
        "txt2vid", ImageRequest("surf", num_frames=2, steps=6), progress=on_progress
    )
    holder["job"] = job
    submitted.set()
    with pytest.raises(Cancelled):
        job.result(timeout=120)
    assert steps == [1]  # the text-to-video pipeline stopped at the first step


def test_enable_parameters_gate_the_mask(engine: Engine) -> None:
    # the seed's stablediffusion-edit enables negative_prompt,num_inference_steps,image only
    with pytest.raises(InvalidRequest, match="mask_image"):
        engine.generate(
            "stablediffusion-edit",
            ImageRequest("x", init_image=noise_image(), mask=half_mask()),
        )


# -- CLI -----------------------------------------------------------------------------------------


def cli(models: Path, *args: str) -> tuple[int, str]:
    """Exit code and stdout when it succeeds, else the (one-line) error output."""
    from localimg.cli import app

    result = CliRunner().invoke(app, [*args, "--models-path", str(models)])
    return result.exit_code, result.stdout if result.exit_code == 0 else result.stderr


def test_cli_img2img_and_inpaint(conditioned_models: Path, tmp_path: Path) -> None:
    source = noise_image(72, 40, seed=2)
    source.save(tmp_path / "in.png")
    code, out = cli(
        conditioned_models, "generate", "a sky background", "-m", "stablediffusion-edit",
        "--image", str(tmp_path / "in.png"), "--strength", "0.6", "--seed", "3",
        "-o", str(tmp_path / "out.png"), "--json",
    )  # fmt: skip
    assert code == 0, out
    report = json.loads(out)
    assert report["strength"] == 0.6 and (report["width"], report["height"]) == (72, 40)
    image = Image.open(tmp_path / "out.png")
    assert image.size == (72, 40)
    assert "Denoising strength: 0.6" in image.text["parameters"]  # type: ignore[attr-defined]

    half_mask(72, 40).save(tmp_path / "mask.png")
    code, out = cli(
        conditioned_models, "generate", "a cat", "-m", "tiny", "--image", str(tmp_path / "in.png"),
        "--mask", str(tmp_path / "mask.png"), "-o", str(tmp_path / "edit.png"),
    )  # fmt: skip
    assert code == 0, out
    edited = pixels(Image.open(tmp_path / "edit.png"))
    assert np.abs(edited[:, 37:] - pixels(source)[:, 37:]).max() <= 1


def test_cli_image_from_a_url_and_a_data_url(conditioned_models: Path, tmp_path: Path) -> None:
    served = tmp_path / "www"
    served.mkdir()
    noise_image(48, 32).save(served / "rocket.png")
    with file_server(served) as base:
        code, out = cli(
            conditioned_models, "generate", "", "-m", "img2vid", "--image",
            f"{base}/rocket.png", "--num-frames", "2", "-o", str(tmp_path / "rocket.mp4"),
        )  # fmt: skip
        assert code == 0, out
        code, out = cli(
            conditioned_models, "generate", "x", "-m", "tiny", "--image", f"{base}/missing.png",
        )  # fmt: skip
        assert code == 2 and "HTTP 404" in out
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(tmp_path / "rocket.mp4"))
    meta = next(reader)
    assert meta["size"] == (48, 32) and len(list(reader)) == 2

    data_url = "data:image/png;base64," + base64.b64encode(png_bytes(noise_image())).decode()
    code, out = cli(
        conditioned_models, "generate", "x", "-m", "tiny", "--image", data_url, "--steps", "2",
        "-o", str(tmp_path / "d.png"),
    )  # fmt: skip
    assert code == 0, out


@pytest.mark.parametrize("suffix", ["mp4", "gif", "webp", "png"])
def test_cli_video_outputs(conditioned_models: Path, tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"clip.{suffix}"
    code, text = cli(
        conditioned_models, "generate", "spiderman surfing", "-m", "txt2vid", "--num-frames", "4",
        "--fps", "5", "--seed", "1", "-o", str(out), "--json",
    )  # fmt: skip
    assert code == 0, text
    report = json.loads(text)
    assert report["video"] == {"frames": 4, "fps": 5.0}
    if suffix == "mp4":
        import imageio_ffmpeg

        reader = imageio_ffmpeg.read_frames(str(out))
        meta = next(reader)
        assert meta["fps"] == 5 and meta["codec"] == "h264" and len(list(reader)) == 4
    elif suffix == "png":  # frames, one file each
        assert [p["path"] for p in report["images"]] == [
            str(tmp_path / f"clip-{i}.png") for i in range(1, 5)
        ]
    else:
        image = Image.open(out)
        assert image.format == suffix.upper() and getattr(image, "n_frames", 1) == 4
        image.load()  # WebP reports a frame's duration once it is read
        assert image.info["duration"] == 200


@pytest.mark.parametrize(
    "args,match",
    [
        (["--image", "/nonexistent/in.png"], "is not a file"),
        (["--image", "data:image/png;base64,@@@"], "not base64"),
        (["--mode", "outpaint"], "mode 'outpaint'"),
        (["--mode", "1"], "NCNN"),
        (["--fps", "5"], "video models only"),
        (["-o", "out.bmp"], "unsupported image format"),
        (["--quality", "50", "-o", "x.png"], "--quality applies"),
        (["--strength", "0"], "strength"),
    ],
)
def test_cli_bad_inputs(
    conditioned_models: Path, tmp_path: Path, args: list[str], match: str
) -> None:
    code, out = cli(conditioned_models, "generate", "x", "-m", "tiny", *args)
    assert code != 0
    assert match in out and "Traceback" not in out
    assert len(out.strip().splitlines()) == 1


def test_cli_bad_image_file(conditioned_models: Path, tmp_path: Path) -> None:
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    code, out = cli(
        conditioned_models, "generate", "x", "-m", "tiny", "--image", str(tmp_path / "bad.png")
    )
    assert code == 2 and "not a readable image" in out
