"""OpenAI image streaming through a real uvicorn server, on both engines: the official client
iterates the events as its own types, the partial images are real previews, the completed image
is the non-streamed one, the SSE framing is exact, errors and disconnects behave."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from openai.types import (
    ImageEditCompletedEvent,
    ImageEditPartialImageEvent,
    ImageGenCompletedEvent,
    ImageGenPartialImageEvent,
)
from PIL import Image

from localimg.engine import Job
from tests.support.served import Served, ServeSpec, serve, tiny_models
from tests.support.server_support import (
    assert_openai_error,
    png_bytes,
)


@pytest.fixture(scope="module")
def diffusers_served(tmp_path_factory: pytest.TempPathFactory, tiny_sd: Path) -> Iterator[Served]:
    with serve(ServeSpec(models=tiny_models(tiny_sd)), tmp_path_factory.mktemp("stream")) as s:
        yield s


@pytest.fixture(scope="module")
def ggml_served(
    tmp_path_factory: pytest.TempPathFactory, ggml_models_dir: Path
) -> Iterator[Served]:
    spec = ServeSpec(models=ggml_models_dir, model="stablediffusion")
    with serve(spec, tmp_path_factory.mktemp("stream-ggml")) as s:
        yield s


@pytest.fixture(params=["diffusers", pytest.param("ggml", marks=pytest.mark.ggml)])
def served(request: pytest.FixtureRequest) -> Served:
    served: Served = request.getfixturevalue(f"{request.param}_served")
    return served


def decode(b64: str) -> Image.Image:
    data = base64.b64decode(b64)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_the_official_client_streams_partial_images_then_the_completed_one(served: Served) -> None:
    client = served.client()
    extra = {"seed": 7, "steps": 6}
    stream = client.images.generate(
        model=served.model,
        prompt="a lighthouse",
        stream=True,
        partial_images=2,
        size="64x64",
        extra_body=extra,
    )
    events = list(stream)
    assert [type(e) for e in events] == [
        ImageGenPartialImageEvent,
        ImageGenPartialImageEvent,
        ImageGenCompletedEvent,
    ]
    partials = [e for e in events if isinstance(e, ImageGenPartialImageEvent)]
    assert [e.partial_image_index for e in partials] == [0, 1]
    pictures = [np.asarray(decode(e.b64_json).convert("RGB"), dtype=np.int16) for e in partials]
    assert all(p.shape == (64, 64, 3) and p.std() > 0 for p in pictures)
    assert not np.array_equal(pictures[0], pictures[1])
    done = events[-1]
    assert isinstance(done, ImageGenCompletedEvent)
    assert done.size == "64x64" and done.output_format == "png"
    assert done.quality == "auto" and done.background == "auto"
    assert done.usage.input_tokens == 2 and done.usage.output_tokens == 0
    assert all(e.created_at > 0 and e.size == "64x64" for e in partials)
    # The completed image is the image a plain request with the same seed gets.
    plain = client.images.generate(
        model=served.model,
        prompt="a lighthouse",
        size="64x64",
        extra_body=extra,
    )
    assert plain.data and plain.data[0].b64_json
    final = np.asarray(decode(done.b64_json).convert("RGB"))
    assert np.array_equal(final, np.asarray(decode(plain.data[0].b64_json).convert("RGB")))
    assert final.shape == (64, 64, 3)


def test_edits_stream_too(served: Served) -> None:
    client = served.client()
    stream = client.images.edit(
        model=served.model,
        image=("a.png", png_bytes(), "image/png"),
        prompt="a hat",
        stream=True,
        partial_images=1,
        size="64x64",
        extra_body={"steps": 4, "seed": 3},
    )
    events = list(stream)
    assert [type(e) for e in events] == [ImageEditPartialImageEvent, ImageEditCompletedEvent]
    assert events[0].type == "image_edit.partial_image"
    assert decode(events[1].b64_json).size == (64, 64)


def test_zero_partial_images_is_the_completed_event_alone(diffusers_served: Served) -> None:
    events = list(
        diffusers_served.client().images.generate(
            model="tiny", prompt="a cat", stream=True, size="64x64", extra_body={"steps": 2}
        )
    )
    assert [e.type for e in events] == ["image_generation.completed"]


def test_the_exact_sse_framing(diffusers_served: Served) -> None:
    body = {"model": "tiny", "prompt": "a boat", "size": "64x64", "steps": 4}
    body |= {"stream": True, "partial_images": 3, "output_format": "jpeg"}
    with httpx.stream(
        "POST", f"{diffusers_served.url}/v1/images/generations", json=body, timeout=120
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        raw = response.read().decode()
    blocks = raw.split("\n\n")
    assert blocks[-1] == ""  # every event ends with a blank line
    names = []
    for block in blocks[:-1]:
        lines = block.split("\n")
        assert len(lines) == 2 and lines[0].startswith("event: ") and lines[1].startswith("data: ")
        name = lines[0].removeprefix("event: ")
        data = json.loads(lines[1].removeprefix("data: "))
        assert data["type"] == name
        assert data["output_format"] == "jpeg"
        assert base64.b64decode(data["b64_json"]).startswith(b"\xff\xd8")  # JPEG
        names.append(name)
        if name.endswith("partial_image"):
            assert set(data) == {
                "type",
                "b64_json",
                "partial_image_index",
                "size",
                "quality",
                "background",
                "output_format",
                "created_at",
            }
        else:
            assert set(data) == {
                "type",
                "b64_json",
                "size",
                "quality",
                "background",
                "output_format",
                "created_at",
                "usage",
            }
    # 4 steps, 3 partial images: after steps 1, 2 and 3, then the final image.
    assert names == ["image_generation.partial_image"] * 3 + ["image_generation.completed"]


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"partial_images": 2}, "partial_images"),  # without stream
        ({"stream": True, "n": 2}, "n"),
        ({"stream": True, "response_format": "url"}, "response_format"),
        ({"stream": True, "partial_images": 4}, "partial_images"),
        ({"stream": True, "output_format": "mp4"}, "stream"),
    ],
)
def test_refusals_before_the_stream_are_json_errors(
    diffusers_served: Served, extra: dict[str, Any], param: str
) -> None:
    body = {"model": "tiny", "prompt": "a boat", "size": "64x64"} | extra
    response = httpx.post(f"{diffusers_served.url}/v1/images/generations", json=body, timeout=60)
    assert_openai_error(response, 400, param)


def test_an_unknown_model_is_a_json_404_not_a_stream(diffusers_served: Served) -> None:
    body = {"model": "nope", "prompt": "a boat", "stream": True}
    response = httpx.post(f"{diffusers_served.url}/v1/images/generations", json=body, timeout=60)
    assert response.status_code == 404
    assert "error" in response.json()


def test_variations_refuse_stream(diffusers_served: Served) -> None:
    response = httpx.post(
        f"{diffusers_served.url}/v1/images/variations",
        files={"image": ("a.png", png_bytes(), "image/png")},
        data={"model": "tiny", "stream": "true"},
        timeout=60,
    )
    assert_openai_error(response, 400, "stream")


def test_an_error_after_the_stream_started_is_an_error_event(diffusers_served: Served) -> None:
    # The job is accepted (the stream starts), then fails: here it is cancelled by someone else
    # (as a job DELETE or A1111 interrupt would). The stream carries OpenAI's error object and
    # ends; the official client raises it.
    body = {"model": "tiny", "prompt": "a boat", "size": "64x64", "stream": True}
    diffusers_served.on_submit = Job.cancel
    try:
        with httpx.stream(
            "POST", f"{diffusers_served.url}/v1/images/generations", json=body, timeout=120
        ) as response:
            assert response.status_code == 200
            text = response.read().decode()
        assert text.startswith("event: error\ndata: ") and text.endswith("\n\n")
        assert text.count("event: ") == 1
        data = json.loads(text.split("\n")[1].removeprefix("data: "))
        assert data["type"] == "error"
        assert data["error"]["type"] and "cancelled" in data["error"]["message"]
        with pytest.raises(openai.APIError, match="cancelled"):
            list(
                diffusers_served.client().images.generate(
                    model="tiny", prompt="a boat", stream=True, size="64x64"
                )
            )
    finally:
        diffusers_served.on_submit = None


def test_a_client_that_disconnects_mid_stream_cancels_the_job(diffusers_served: Served) -> None:
    body = {"model": "tiny", "prompt": "a long one", "size": "64x64", "steps": 400}
    body |= {"stream": True, "partial_images": 3}
    before = len(diffusers_served.submitted)
    with httpx.stream(
        "POST", f"{diffusers_served.url}/v1/images/generations", json=body, timeout=120
    ) as response:
        lines = response.iter_lines()
        first = next(lines)
        assert first == "event: image_generation.partial_image"
    job = diffusers_served.submitted[before]
    job.future.exception(timeout=120)  # it ends: cancelled at its next step
    assert job.cancel_event.is_set()
    last = job.last_event
    assert last is not None and last.step < 400


def test_keep_alive_comments_while_waiting_are_skipped_by_clients(
    diffusers_served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    from localimg.server.openai import streaming

    monkeypatch.setattr(streaming, "KEEPALIVE", 0.005)
    body = {"model": "tiny", "prompt": "a boat", "size": "64x64", "steps": 6}
    body |= {"stream": True, "partial_images": 1}
    with httpx.stream(
        "POST", f"{diffusers_served.url}/v1/images/generations", json=body, timeout=120
    ) as response:
        raw = response.read().decode()
    assert ": keep-alive\n\n" in raw
    events = list(
        diffusers_served.client().images.generate(
            model="tiny",
            prompt="a boat",
            stream=True,
            partial_images=1,
            size="64x64",
            extra_body={"steps": 6},
        )
    )
    assert [e.type for e in events] == [
        "image_generation.partial_image",
        "image_generation.completed",
    ]
