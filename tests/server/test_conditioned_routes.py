"""Image-conditioned and video generation over real HTTP: a uvicorn server, httpx and `openai`.

The seed's four curl examples are sent in their own shape (at tiny sizes); edits and variations go
through the official client's `images.edit` / `images.create_variation`, videos through its
`videos` job API. A second server with the default (strict) fetch policy and small image limits
answers the bad inputs.
"""

from __future__ import annotations

import base64
import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from localimg.media.decode import ImageLimits
from localimg.media.fetch import FetchPolicy
from tests.support.conditioned_fixtures import file_server, half_mask, noise_image, png_bytes
from tests.support.served import ServeSpec, serve


def _serve(settings: dict[str, Any], models: Path, root: Path) -> Iterator[str]:
    with serve(ServeSpec(models=models, server=settings), root) as served:
        yield served.url


@pytest.fixture(scope="module")
def server(conditioned_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Private URLs allowed (the test's file server is on 127.0.0.1)."""
    root = tmp_path_factory.mktemp("conditioned-server")
    yield from _serve({"fetch_policy": FetchPolicy(allow_private=True)}, conditioned_models, root)


@pytest.fixture(scope="module")
def strict_server(
    conditioned_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The default fetch policy, and small image limits."""
    limits = ImageLimits(max_bytes=200_000, max_pixels=256 * 256)
    root = tmp_path_factory.mktemp("strict-server")
    yield from _serve({"image_limits": limits}, conditioned_models, root)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("www")
    noise_image(32, 32, seed=5).save(folder / "rocket.png")
    (folder / "not-an-image.png").write_bytes(b"hello")
    with file_server(folder) as base:
        yield base


def post(base: str, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(base + path, json=body, timeout=120)


def b64(image: Image.Image) -> str:
    return base64.b64encode(png_bytes(image)).decode("ascii")


def decoded(text: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(text)))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def mp4_info(data: bytes, tmp_path: Path) -> tuple[dict[str, Any], int]:
    import imageio_ffmpeg

    path = tmp_path / "v.mp4"
    path.write_bytes(data)
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    return meta, len(list(reader))


def openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


# -- the seed's curl examples ------------------------------------------------------------------


def test_seed_image_to_image_and_depth_to_image(server: str) -> None:
    source = noise_image(64, 64, seed=1)
    for model in ("stablediffusion-edit", "stablediffusion-depth"):
        # (echo -n '{"file": "'; base64 $IMAGE_PATH; echo '", "prompt": ..., "size": ...}')
        body = {"file": b64(source), "prompt": "a sky background", "size": "64x64", "model": model}
        response = post(server, "/v1/images/generations", body)
        assert response.status_code == 200, response.text
        image = decoded(response.json()["data"][0]["b64_json"])
        assert image.size == (64, 64)
        assert not np.array_equal(pixels(image), pixels(source))


def test_seed_img2vid_from_a_url(server: str, files: str, tmp_path: Path) -> None:
    body = {"file": f"{files}/rocket.png", "size": "32x32", "model": "img2vid"}
    response = post(server, "/v1/images/generations", body)
    assert response.status_code == 200, response.text
    payload = response.json()
    assert payload["output_format"] == "mp4" and len(payload["data"]) == 1
    item = payload["data"][0]
    assert item["mime_type"] == "video/mp4" and item["fps"] == 7.0 and "b64_json" not in item
    video = httpx.get(item["url"], timeout=30)
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    meta, frames = mp4_info(video.content, tmp_path)
    assert meta["size"] == (32, 32) and frames == item["frames"]


def test_seed_txt2vid_and_video_formats(server: str, tmp_path: Path) -> None:
    body = {"prompt": "spiderman surfing", "size": "32x32", "model": "txt2vid"}
    response = post(server, "/v1/images/generations", {**body, "num_frames": 6, "fps": 6})
    assert response.status_code == 200, response.text
    item = response.json()["data"][0]
    meta, frames = mp4_info(httpx.get(item["url"], timeout=30).content, tmp_path)
    assert frames == 6 and meta["fps"] == 6 and meta["codec"] == "h264"

    asked = {**body, "num_frames": 3, "response_format": "b64_json", "output_format": "gif"}
    response = post(server, "/v1/images/generations", asked)
    assert response.status_code == 200, response.text
    item = response.json()["data"][0]
    assert item["mime_type"] == "image/gif"
    gif = decoded(item["b64_json"])
    assert gif.format == "GIF" and gif.n_frames == 3  # type: ignore[attr-defined]


def test_generation_mode_and_strength(server: str) -> None:
    source = noise_image(64, 64, seed=2)
    common = {"file": b64(source), "prompt": "x", "model": "tiny", "seed": 1, "steps": 4}
    low = post(server, "/v1/images/generations", {**common, "strength": 0.3, "mode": "img2img"})
    high = post(server, "/v1/images/generations", {**common, "strength": 0.9})
    assert low.status_code == high.status_code == 200, low.text + high.text
    assert low.headers.get("x-localimg-ignored") is None
    assert not np.array_equal(
        pixels(decoded(low.json()["data"][0]["b64_json"])),
        pixels(decoded(high.json()["data"][0]["b64_json"])),
    )


# -- OpenAI's edits and variations through the official client -----------------------------------


def test_openai_client_edit_with_a_mask(server: str) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=server + "/v1", api_key="unused")
    source = noise_image(64, 64, seed=7)
    result = client.images.edit(
        model="tiny",
        image=("in.png", png_bytes(source), "image/png"),
        mask=("mask.png", png_bytes(half_mask()), "image/png"),
        prompt="a cat",
        response_format="b64_json",
    )
    assert result.data is not None and result.data[0].b64_json is not None
    out, original = pixels(decoded(result.data[0].b64_json)), pixels(source)
    assert out.shape == (64, 64, 3)
    assert np.abs(out[:, :32] - original[:, :32]).mean() > 10
    assert np.abs(out[:, 33:] - original[:, 33:]).max() <= 1


def test_openai_client_edit_with_transparency_and_variation(server: str) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=server + "/v1", api_key="unused")
    rgba = noise_image(64, 64, seed=8).convert("RGBA")
    rgba.paste((0, 0, 0, 0), (0, 0, 64, 32))  # top half transparent: that is what changes
    result = client.images.edit(
        model="tiny", image=("in.png", png_bytes(rgba), "image/png"), prompt="sky"
    )
    assert result.data is not None and result.data[0].b64_json is not None
    out = pixels(decoded(result.data[0].b64_json))
    kept = pixels(rgba)[33:]
    assert np.abs(out[33:] - kept).max() <= 1

    variation = client.images.create_variation(
        model="tiny", image=("in.png", png_bytes(noise_image(64, 64)), "image/png"), n=2
    )
    assert variation.data is not None and len(variation.data) == 2


def test_openai_client_video_jobs(server: str, tmp_path: Path) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=server + "/v1", api_key="unused")
    job = client.videos.create(
        model="img2vid",
        prompt="",
        input_reference=("rocket.png", png_bytes(noise_image(32, 32)), "image/png"),
        seconds="1",  # type: ignore[arg-type]  # OpenAI lists 4/8/12; localimg takes any
        size="32x32",  # type: ignore[arg-type]
    )
    assert job.status in ("queued", "in_progress") and job.id.startswith("video_")
    deadline = time.monotonic() + 120
    while job.status not in ("completed", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
        job = client.videos.retrieve(job.id)
    assert job.status == "completed", job.error
    assert job.progress == 100 and job.size == "32x32"
    content = client.videos.download_content(job.id)
    meta, frames = mp4_info(content.content, tmp_path)
    assert frames == 9 and meta["fps"] == 8  # 1 s at the default 8 fps: the nearest 8k+1
    thumbnail = client.videos.download_content(job.id, variant="thumbnail")
    assert Image.open(io.BytesIO(thumbnail.content)).format == "WEBP"
    listed = httpx.get(server + "/v1/videos", timeout=10).json()
    assert job.id in [v["id"] for v in listed["data"]]
    deleted = httpx.delete(f"{server}/v1/videos/{job.id}", timeout=10)
    assert deleted.json()["deleted"] is True
    openai_error(httpx.get(f"{server}/v1/videos/{job.id}", timeout=10), 404)


def test_video_job_with_json_body_and_failures(server: str) -> None:
    created = post(server, "/v1/videos", {"prompt": "surf", "model": "txt2vid", "num_frames": 2})
    assert created.status_code == 200, created.text
    video_id = created.json()["id"]
    failed = post(server, "/v1/videos", {"prompt": "x", "model": "tiny", "num_frames": 2})
    assert failed.status_code == 200  # accepted as a job; the model then refuses it
    deadline = time.monotonic() + 60
    states: dict[str, Any] = {}
    while len(states) < 2:
        assert time.monotonic() < deadline
        for vid in (video_id, failed.json()["id"]):
            info = httpx.get(f"{server}/v1/videos/{vid}", timeout=10).json()
            if info["status"] in ("completed", "failed"):
                states[vid] = info
        time.sleep(0.1)
    assert states[video_id]["status"] == "completed"
    bad = states[failed.json()["id"]]
    assert bad["status"] == "failed" and "video models only" in bad["error"]["message"]
    error = openai_error(
        httpx.get(f"{server}/v1/videos/{failed.json()['id']}/content", timeout=10), 409
    )
    assert error["code"] == "video_not_ready"


def test_video_deleted_while_encoding_leaves_no_files(
    conditioned_models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DELETE while the MP4 and thumbnail are being encoded: once encoding ends, both are
    removed (the store deleted the job's files before they existed; the url TTL would have
    kept them for an hour). A slow encoder hook holds the encoding until the DELETE is done."""
    from localimg.media import output
    from tests.support.server_support import wait_until

    encoding, release = threading.Event(), threading.Event()
    written: list[Path] = []
    encode = output.write_video_files

    def slow_encode(result: Any, path: Path, thumbnail: Path) -> None:
        encoding.set()
        assert release.wait(120)
        encode(result, path, thumbnail)
        written.extend(p for p in (path, thumbnail) if p.is_file())

    monkeypatch.setattr(output, "write_video_files", slow_encode)
    with serve(ServeSpec(models=conditioned_models), tmp_path) as served:
        created = post(served.url, "/v1/videos", {"prompt": "surf", "model": "txt2vid"})
        assert created.status_code == 200, created.text
        video_id = created.json()["id"]
        wait_until(encoding.is_set, what="the video's encoding")
        deleted = httpx.delete(f"{served.url}/v1/videos/{video_id}", timeout=10)
        assert deleted.json()["deleted"] is True
        openai_error(httpx.get(f"{served.url}/v1/videos/{video_id}", timeout=10), 404)
        release.set()
        tasks = served.app.state.video_tasks
        wait_until(lambda: not tasks, what="the video job's end")
        assert len(written) == 2  # the encoder did write both files...
        assert not list(served.output_dir.glob(f"{video_id}*"))  # ...and they are gone


# -- bad inputs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body,status,param,needle",
    [
        ({"file": "@@not base64@@", "prompt": "x"}, 422, "file", "not base64"),
        ({"file": "data:image/png,abc", "prompt": "x"}, 422, "file", "base64 data URLs"),
        ({"file": base64.b64encode(b"hello").decode(), "prompt": "x"}, 422, "file", "readable"),
        ({"file": "ftp://example.com/a.png", "prompt": "x"}, 400, "file", "http and https"),
        ({"prompt": "x", "mode": 1}, 400, "mode", "NCNN"),
        ({"prompt": "x", "mode": "outpaint"}, 400, "mode", "outpaint"),
        ({"prompt": "x", "strength": 2}, 400, "strength", "strength"),
        ({"prompt": "x", "num_frames": 4}, 400, "num_frames", "video models only"),
        ({"prompt": "x", "mode": "img2img"}, 400, "image", "needs an input image"),
    ],
)
def test_bad_generation_inputs(
    server: str, body: dict[str, Any], status: int, param: str, needle: str
) -> None:
    error = openai_error(post(server, "/v1/images/generations", {"model": "tiny", **body}), status)
    assert error["param"] == param and needle in error["message"]


def test_bad_urls_and_oversized_images(strict_server: str, server: str, files: str) -> None:
    body = {"file": f"{files}/rocket.png", "prompt": "x", "model": "tiny"}
    error = openai_error(post(strict_server, "/v1/images/generations", body), 400)
    assert error["code"] == "url_not_allowed" and error["param"] == "file"
    missing = {**body, "file": f"{files}/missing.png"}
    assert (
        "HTTP 404" in openai_error(post(server, "/v1/images/generations", missing), 400)["message"]
    )
    garbage = {**body, "file": f"{files}/not-an-image.png"}
    openai_error(post(server, "/v1/images/generations", garbage), 422)
    big = {"file": b64(Image.new("L", (1024, 1024))), "prompt": "x", "model": "tiny"}
    assert (
        "pixels" in openai_error(post(strict_server, "/v1/images/generations", big), 413)["message"]
    )


def test_bad_edits(server: str) -> None:
    image = ("image", ("in.png", png_bytes(noise_image(64, 64)), "image/png"))
    data = {"prompt": "x", "model": "tiny"}
    small_mask = ("mask", ("m.png", png_bytes(half_mask(32, 32)), "image/png"))
    response = httpx.post(
        server + "/v1/images/edits", files=[image, small_mask], data=data, timeout=30
    )
    assert openai_error(response, 400)["param"] == "mask"
    two = [("image[]", image[1]), ("image[]", image[1])]
    response = httpx.post(server + "/v1/images/edits", files=two, data=data, timeout=30)
    error = openai_error(response, 400)  # an SD model takes no reference images
    assert "input image" in error["message"] and error["param"] == "image"
    response = httpx.post(server + "/v1/images/variations", files=two, data=data, timeout=30)
    assert "one image" in openai_error(response, 400)["message"]
    mask = ("mask", ("m.png", png_bytes(half_mask(64, 64)), "image/png"))
    response = httpx.post(server + "/v1/images/edits", files=[*two, mask], data=data, timeout=30)
    assert openai_error(response, 400)["param"] == "mask"
    seventeen = [("image[]", image[1])] * 17
    response = httpx.post(server + "/v1/images/edits", files=seventeen, data=data, timeout=30)
    assert "16" in openai_error(response, 400)["message"]
    refs = {"prompt": "x", "model": "tiny", "ref_images": [b64(noise_image(64, 64))] * 2}
    error = openai_error(post(server, "/v1/images/generations", refs), 400)
    assert "edit" in error["message"]  # a reference edit, which an SD model does not do
    txt2vid = {"prompt": "x", "model": "txt2vid"}
    response = httpx.post(server + "/v1/images/edits", files=[image], data=txt2vid, timeout=30)
    assert "no input image" in openai_error(response, 400)["message"]


def test_bad_video_jobs(server: str) -> None:
    error = openai_error(post(server, "/v1/videos", {"prompt": "x", "duration": 3}), 400)
    assert error["param"] == "duration" and error["code"] == "unknown_parameter"
    error = openai_error(post(server, "/v1/videos", {"model": "txt2vid"}), 400)
    assert error["param"] == "prompt"
    body: dict[str, Any] = {"prompt": "x", "model": "txt2vid", "seconds": "100"}
    assert "limit" in openai_error(post(server, "/v1/videos", body), 400)["message"]
    body = {"prompt": "x", "model": "txt2vid", "seconds": 1, "num_frames": 3}
    openai_error(post(server, "/v1/videos", body), 400)
    openai_error(httpx.get(server + "/v1/videos/video_nope", timeout=10), 404)
    openai_error(httpx.get(server + "/v1/videos/video_nope/content", timeout=10), 404)


@pytest.mark.parametrize(
    ("seconds", "fps", "frames"),
    [(4, 24.0, 97), (5, 16.0, 81), (1, 8.0, 9), (0.1, 8.0, 1), (2.5, 24.0, 57)],
)
def test_seconds_become_the_nearest_count_every_video_family_makes(
    seconds: float, fps: float, frames: int
) -> None:
    from localimg.server.jobs.videos import build_request

    request, shown = build_request({"prompt": "x", "seconds": seconds, "fps": fps}, None)
    assert request.num_frames == frames and (frames - 1) % 8 == 0 and shown == f"{seconds:g}"
