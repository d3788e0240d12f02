"""`localimg serve` end to end: a real uvicorn server, worker processes, the tiny diffusers model.

One server is shared by the whole module (each worker process imports torch, which takes
seconds). Tests that change its state (disconnect, crash) run last.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import threading
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from localimg.media.decode import ImageLimits
from tests.support.served import Served, ServeSpec, tiny_models
from tests.support.server_support import (
    assert_openai_error,
    b64_image,
    png_bytes,
    wait_until,
)

JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def serve_spec(tiny_sd: Path) -> ServeSpec:
    """`tiny` in a worker process (as `localimg serve` runs it), image limits of 300x300."""
    return ServeSpec(
        models=tiny_models(tiny_sd),
        workers=True,
        engine={"max_queue": 8},
        server={
            "image_limits": ImageLimits(max_pixels=300 * 300),
            "max_body_bytes": 4 * 1024 * 1024,
        },
    )


def post(served: Served, body: dict, **kwargs: object) -> httpx.Response:
    return httpx.post(
        f"{served.url}/v1/images/generations",
        json=body,
        timeout=300,
        **kwargs,  # type: ignore[arg-type]
    )


def test_openai_client_b64_json_and_url(served: Served) -> None:
    client = openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0)
    result = client.images.generate(
        model="tiny",
        prompt="a cute baby sea otter",
        size="64x64",
        n=2,
        response_format="b64_json",
        extra_body={"seed": 11},
    )
    assert result.data is not None and len(result.data) == 2
    seeds = [item.model_extra["seed"] for item in result.data]  # type: ignore[index]
    assert seeds == [11, 12]
    images = [b64_image(item.b64_json or "") for item in result.data]
    assert all(image.format == "PNG" and image.size == (64, 64) for image in images)
    assert "Seed: 11," in images[0].text["parameters"]  # type: ignore[attr-defined]
    assert result.usage is not None and result.usage.input_tokens == 5

    by_url = client.images.generate(
        model="tiny",
        prompt="otter",
        size="64x64",
        response_format="url",
        extra_body={"seed": 11},
    )
    assert by_url.data is not None
    url = by_url.data[0].url or ""
    assert url.startswith(f"{served.url}/generated/") and url.endswith(".png")
    fetched = httpx.get(url)
    assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(fetched.content))
    assert image.size == (64, 64)
    assert (served.output_dir / url.rsplit("/", 1)[1]).is_file()


# The JSON bodies of the seed page's curl examples (LocalAI's image-generation page), verbatim;
# `@IMAGE@` stands for the base64 of a local image file (`base64 $IMAGE_PATH` in the examples).
LONG_PROMPT = (
    "floating hair, portrait, ((loli)), ((one girl)), cute face, hidden hands, asymmetrical ban"
    "gs, beautiful detailed eyes, eye shadow, hair ornament, ribbons, bowties, buttons, pleated"
    " skirt, (((masterpiece))), ((best quality)), colorful|((part of the head)), ((((mutated ha"
    "nds and fingers)))), deformed, blurry, bad anatomy, disfigured, poorly drawn face, mutatio"
    "n, mutated, extra limb, ugly, poorly drawn hands, missing limb, blurry, floating limbs, di"
    "sconnected limbs, malformed hands, blur, out of focus, long neck, long body, Octane render"
    "er, lowres, bad anatomy, bad hands, text"
)
SEED_CURL_BODIES: list[dict] = [
    {"prompt": "A cute baby sea otter", "size": "256x256"},
    {"prompt": LONG_PROMPT, "size": "256x256"},
    {
        "prompt": "<positive prompt>|<negative prompt>",
        "model": "animagine-xl",
        "step": 51,
        "size": "1024x1024",
    },
    {
        "file": "@IMAGE@",
        "prompt": "a sky background",
        "size": "512x512",
        "model": "stablediffusion-edit",
    },
    {
        "file": "@IMAGE@",
        "prompt": "a sky background",
        "size": "512x512",
        "model": "stablediffusion-depth",
    },
    {
        "file": "https://huggingface.co/datasets/huggingface/documentation-images/resolve/main/"
        "diffusers/svd/rocket.png?download=true",
        "size": "512x512",
        "model": "img2vid",
    },
    {"prompt": "spiderman surfing", "size": "512x512", "model": "txt2vid"},
]


def _seed_curl_bodies() -> list[dict]:
    image = base64.b64encode(png_bytes((96, 96))).decode()
    return [
        {k: image if v == "@IMAGE@" else v for k, v in body.items()} for body in SEED_CURL_BODIES
    ]


def test_every_seed_curl_example(served: Served) -> None:
    bodies = _seed_curl_bodies()
    assert len(bodies) == 7
    # The first two name no model: the only model answers, at the size they ask for.
    for body in bodies[:2]:
        response = post(served, body, headers=JSON)
        assert response.status_code == 200, response.text
        item = response.json()["data"][0]
        assert b64_image(item["b64_json"]).size == (256, 256)
        assert response.headers["x-localimg-seeds"] == str(item["seed"])
    second = bodies[1]["prompt"]
    assert response.json()["data"][0]["revised_prompt"] == second.split("|")[0].strip()
    # The others name models this server does not have: a 404 listing what it has.
    for body in bodies[2:]:
        error = assert_openai_error(post(served, body, headers=JSON), 404, param="model")
        assert "tiny" in error["message"] and error["code"] == "model_not_found"
    # The same bodies against the tiny model: text to image with LocalAI's `step`, and image to
    # image from the base64 `file`.
    txt2img = {**bodies[2], "model": "tiny", "size": "64x64", "step": 3}
    response = post(served, txt2img)
    assert response.status_code == 200, response.text
    assert response.json()["steps"] == 3
    img2img = {**bodies[3], "model": "tiny", "size": "64x64"}
    response = post(served, img2img)
    assert response.status_code == 200, response.text
    assert b64_image(response.json()["data"][0]["b64_json"]).size == (64, 64)


def test_localai_and_localimg_extensions(served: Served) -> None:
    body = {
        "prompt": "otter|blurry",
        "size": "64x64",
        "step": 3,
        "cfg_scale": 5,
        "scheduler": "euler_a",
        "seed": 7,
        "mode": 0,
        "output_format": "jpeg",
        "output_compression": 80,
    }
    first = post(served, body)
    assert first.status_code == 200, first.text
    assert first.headers["x-localimg-ignored"] == "mode"
    payload = first.json()
    assert payload["data"][0]["seed"] == 7 and payload["steps"] == 3
    assert payload["data"][0]["revised_prompt"] == "otter"
    image = b64_image(payload["data"][0]["b64_json"])
    assert image.format == "JPEG"
    from localimg.media.encode import EXIF_IFD, USER_COMMENT

    comment = image.getexif().get_ifd(EXIF_IFD)[USER_COMMENT][8:].decode("utf-16-be")
    assert "Negative prompt: blurry" in comment and "CFG scale: 5.0" in comment
    assert "Steps: 3" in comment and "Seed: 7" in comment

    # Same seed, same pixels; another seed, other pixels (lossless webp to compare exactly).
    def pixels(seed: int) -> np.ndarray:
        again = post(
            served,
            {
                "prompt": "otter",
                "size": "64x64",
                "steps": 2,
                "seed": seed,
                "negative_prompt": "blurry",
                "output_format": "webp",
                "output_compression": 100,
            },
        )
        assert again.status_code == 200, again.text
        return np.asarray(b64_image(again.json()["data"][0]["b64_json"]).convert("RGB"))

    assert np.array_equal(pixels(3), pixels(3))
    assert not np.array_equal(pixels(3), pixels(4))
    # quality maps to a share of the model's 4 steps.
    low = post(served, {"prompt": "otter", "size": "64x64", "quality": "low"})
    assert low.status_code == 200 and low.json()["steps"] == 2
    auto = post(served, {"prompt": "otter", "size": "auto", "quality": "auto"})
    assert auto.status_code == 200 and auto.json()["steps"] == 4 and auto.json()["size"] == "64x64"


def test_eight_concurrent_requests_all_answered(served: Served) -> None:
    results: dict[int, httpx.Response] = {}

    def one(seed: int) -> None:
        results[seed] = post(served, {"prompt": "otter", "size": "64x64", "steps": 2, "seed": seed})

    threads = [threading.Thread(target=one, args=(100 + i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == list(range(100, 108))
    for seed, response in results.items():
        assert response.status_code == 200, response.text
        item = response.json()["data"][0]
        assert item["seed"] == seed
        assert b64_image(item["b64_json"]).size == (64, 64)


def test_models_health_and_ready(served: Served) -> None:
    listing = httpx.get(f"{served.url}/v1/models").json()
    assert listing["object"] == "list"
    (entry,) = listing["data"]
    assert entry["id"] == "tiny" and entry["object"] == "model" and entry["backend"] == "diffusers"
    assert isinstance(entry["loaded"], bool) and isinstance(entry["created"], int)
    # The tiny YAML has no f16: float32 on this CPU, and the entry says why.
    assert entry["precision"]["device"] == "cpu" and entry["precision"]["dtype"] == "float32"
    assert entry["precision"]["reason"].startswith("automatic")
    one = httpx.get(f"{served.url}/v1/models/tiny").json()
    assert one["id"] == "tiny" and one["precision"] == entry["precision"]
    error = assert_openai_error(httpx.get(f"{served.url}/v1/models/nope"), 404)
    assert "tiny" in error["message"] and error["code"] == "model_not_found"
    assert httpx.get(f"{served.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{served.url}/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


@pytest.mark.parametrize(
    "body,param",
    [
        ({"prompt": "x", "n": 11}, "n"),
        ({"prompt": "x", "size": "big"}, "size"),
        ({"prompt": "x", "response_format": "xml"}, "response_format"),
        ({"prompt": "x", "output_format": "bmp"}, "output_format"),
        ({"prompt": "x", "output_compression": 50}, "output_compression"),
        ({"prompt": "x", "background": "transparent"}, "background"),
        ({"prompt": "x", "quality": "ultra"}, "quality"),
        ({"prompt": "x", "steps": 3, "step": 4}, "steps"),
        ({"prompt": "x", "size": "60x64"}, "size"),
        ({"prompt": "x", "scheduler": "nope"}, "scheduler"),
        ({"prompt": "x", "colour": "red"}, "colour"),
        ({"prompt": "x", "seed": -1}, "seed"),
        ({"prompt": ""}, "prompt"),
        ({"size": "64x64"}, "prompt"),
    ],
)
def test_bad_fields_are_400_naming_the_field(served: Served, body: dict, param: str) -> None:
    error = assert_openai_error(post(served, body), 400, param=param)
    assert error["type"] == "invalid_request_error"


def test_error_rows_without_a_generation(served: Served) -> None:
    url = f"{served.url}/v1/images/generations"
    not_json = httpx.post(url, content=b"{nope", headers=JSON)
    assert "JSON" in assert_openai_error(not_json, 400)["message"]
    assert_openai_error(httpx.post(url, json=["a list"]), 400)
    assert_openai_error(post(served, {"prompt": "x", "model": "/etc/passwd"}), 404, "model")
    assert_openai_error(post(served, {"prompt": "x", "model": "../tiny"}), 404, "model")
    garbage = base64.b64encode(b"not an image at all").decode()
    assert_openai_error(post(served, {"prompt": "x", "file": garbage}), 422, "file")
    huge = base64.b64encode(png_bytes((400, 400))).decode()
    assert_openai_error(post(served, {"prompt": "x", "file": huge}), 413, "file")
    big_body = httpx.post(url, content=b"x" * (5 * 1024 * 1024), headers=JSON)
    assert_openai_error(big_body, 413)
    assert_openai_error(httpx.get(f"{served.url}/no/such/route"), 404)
    assert_openai_error(httpx.get(url), 405)
    assert_openai_error(httpx.get(f"{served.url}/generated/missing.png"), 404)


def test_edits_and_variations_validate_their_uploads(served: Served) -> None:
    client = openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0)
    try:
        edited = client.images.edit(
            model="tiny",
            image=("a.png", png_bytes(), "image/png"),
            prompt="a hat",
            mask=("m.png", png_bytes(color="white"), "image/png"),
            size="64x64",
            extra_body={"steps": 2},
        )
    except openai.BadRequestError as exc:
        # Without an image-conditioned pipeline for the model: a 400 that names the ones needed.
        assert "StableDiffusionImg2ImgPipeline" in exc.message
    else:
        assert edited.data is not None
        assert b64_image(edited.data[0].b64_json or "").size == (64, 64)
    url = f"{served.url}/v1/images"
    # The upload itself is validated first.
    assert_openai_error(httpx.post(f"{url}/edits", data={"prompt": "x"}, files={"x": b"1"}), 400)
    assert_openai_error(httpx.post(f"{url}/edits", json={"prompt": "x"}), 400)
    no_prompt = httpx.post(f"{url}/edits", files=[("image[]", ("a.png", png_bytes()))])
    assert_openai_error(no_prompt, 400, "prompt")
    broken = httpx.post(
        f"{url}/edits", files={"image": ("a.png", b"garbage")}, data={"prompt": "x"}
    )
    assert_openai_error(broken, 422, "image")
    mismatch = httpx.post(
        f"{url}/edits",
        files={"image": ("a.png", png_bytes((64, 64))), "mask": ("m.png", png_bytes((32, 32)))},
        data={"prompt": "x"},
    )
    assert_openai_error(mismatch, 400, "mask")
    too_big = httpx.post(f"{url}/variations", files={"image": ("a.png", png_bytes((400, 400)))})
    assert_openai_error(too_big, 413, "image")
    bad_n = httpx.post(
        f"{url}/variations", files={"image": ("a.png", png_bytes())}, data={"n": "0"}
    )
    assert_openai_error(bad_n, 400, "n")


def _running_job_steps(served: Served) -> int:
    job = served.slot().running
    event = job.last_event if job is not None else None
    return event.step if event is not None and event.phase == "step" else 0


def test_disconnect_stops_the_running_job_and_frees_the_slot(served: Served) -> None:
    body = json.dumps({"prompt": "otter", "size": "64x64", "steps": 500}).encode()
    port = int(served.url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(
        b"POST /v1/images/generations HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    wait_until(lambda: _running_job_steps(served) >= 2, what="the long job to be running")
    job = served.slot().running
    assert job is not None
    sock.close()
    wait_until(lambda: served.slot().running is None, what="the cancelled job to stop")
    assert job.cancel_event.is_set()
    last = job.last_event
    assert last is not None and last.step < 500  # stopped early, not run to the end
    assert served.slot().pid is not None and served.slot().restarts == 0
    after = post(served, {"prompt": "otter", "size": "64x64", "steps": 2})
    assert after.status_code == 200, after.text


def test_killed_worker_costs_one_request_and_is_restarted(served: Served) -> None:
    slot = served.slot()
    responses: list[httpx.Response] = []
    thread = threading.Thread(
        target=lambda: responses.append(
            post(served, {"prompt": "otter", "size": "64x64", "steps": 500})
        )
    )
    thread.start()
    wait_until(lambda: _running_job_steps(served) >= 2, what="the long job to be running")
    old_pid = slot.pid
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)
    thread.join()
    error = assert_openai_error(responses[0], 500)
    assert error["code"] == "worker_crashed" and "SIGKILL" in error["message"]
    assert slot.restarts == 1
    after = post(served, {"prompt": "otter", "size": "64x64", "steps": 2})
    assert after.status_code == 200, after.text
    assert slot.pid not in (None, old_pid)
    # Killed while idle: the next request runs on a fresh worker and does not pay for it.
    idle_pid = slot.pid
    assert idle_pid is not None
    os.kill(idle_pid, signal.SIGKILL)
    again = post(served, {"prompt": "otter", "size": "64x64", "steps": 2})
    assert again.status_code == 200, again.text
    assert slot.pid not in (None, idle_pid)
