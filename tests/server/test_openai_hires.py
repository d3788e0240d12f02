"""The hires fix over the OpenAI-style routes: the `hires_*` extension fields reach the engine as
`ImageRequest.hires` (generations JSON, edits multipart, image jobs, streaming), `hires: false`
turns off the YAML's, bad values are a 400 naming the field, and the server serves on.

Most tests replace the engine's `submit` by one that keeps the request and refuses it
("captured", a 400), so they look at the front end alone; the end-to-end test at the bottom runs
the tiny SD pipeline's second pass.
"""

from __future__ import annotations

import base64
import io
import time
from typing import Any

import httpx
import openai
import pytest
from PIL import Image

from localimg.requests import HiresFix, ImageRequest
from tests.support.conditioned_fixtures import png_bytes
from tests.support.served import Served, captured


def hires_of(served: Served, received: list[ImageRequest], **fields: Any) -> HiresFix | None:
    body = {"prompt": "a house", **fields}
    return captured(served.post("/v1/images/generations", body), received).hires


def test_the_openai_client_sends_the_hires_fields_in_extra_body(
    served: Served, received: list[ImageRequest]
) -> None:
    with pytest.raises(openai.BadRequestError):
        served.client().images.generate(
            model="tiny",
            prompt="a house",
            extra_body={
                "hires_scale": 1.5,
                "hires_upscaler": "lanczos",
                "hires_steps": 3,
                "hires_denoise": 0.45,
                "hires_prompt": "a detailed house",
                "hires_negative_prompt": "blur",
            },
        )
    (request,) = received
    assert request.hires == HiresFix(
        scale=1.5,
        upscaler="lanczos",
        steps=3,
        denoise=0.45,
        prompt="a detailed house",
        negative_prompt="blur",
    )


def test_hires_size_sets_the_second_pass_size(served: Served, received: list[ImageRequest]) -> None:
    assert hires_of(served, received, hires_size="96x128") == HiresFix(width=96, height=128)


def test_hires_false_turns_the_yamls_off_and_true_alone_asks_for_the_defaults(
    served: Served, received: list[ImageRequest]
) -> None:
    assert hires_of(served, received, hires=False) == HiresFix(enabled=False)
    received.clear()
    assert hires_of(served, received, hires=True) == HiresFix()
    received.clear()
    assert hires_of(served, received, hires=True, hires_denoise=0.3) == HiresFix(denoise=0.3)


def test_without_any_hires_field_the_yaml_decides(
    served: Served, received: list[ImageRequest]
) -> None:
    assert hires_of(served, received) is None


def test_edits_take_the_hires_fields_as_form_fields(
    served: Served, received: list[ImageRequest]
) -> None:
    files = {"image": ("photo.png", png_bytes(Image.new("RGB", (64, 64), "gray")), "image/png")}
    data = {"prompt": "a house", "hires_scale": "2", "hires_upscaler": "latent", "hires": "true"}
    response = served.request("POST", "/v1/images/edits", files=files, data=data)
    assert captured(response, received).hires == HiresFix(scale=2.0, upscaler="latent")
    received.clear()
    data = {"prompt": "a house", "hires": "false"}
    response = served.request("POST", "/v1/images/edits", files=files, data=data)
    assert captured(response, received).hires == HiresFix(enabled=False)


def test_image_jobs_and_streams_carry_the_hires_fix(
    served: Served, received: list[ImageRequest]
) -> None:
    body = {"prompt": "a house", "hires_scale": 2, "hires_steps": 2}
    captured(served.post("/v1/images/jobs", body), received)
    streamed = {**body, "stream": True, "partial_images": 1}
    assert served.post("/v1/images/generations", streamed).status_code == 400
    assert [request.hires for request in received] == [HiresFix(scale=2.0, steps=2)] * 2


@pytest.mark.parametrize(
    ("extra", "param", "words"),
    [
        ({"hires_scale": 0.5}, "hires_scale", "greater than or equal to 1"),
        ({"hires_scale": 9}, "hires_scale", "less than or equal to 8"),
        ({"hires_size": "big"}, "hires_size", "hires_size 'big' is not WIDTHxHEIGHT"),
        ({"hires_size": "96x5000"}, "hires_size", "hires_size"),
        ({"hires_denoise": 0}, "hires_denoise", "greater than 0"),
        ({"hires_steps": -1}, "hires_steps", "greater than or equal to 0"),
        ({"hires_upscaler": " "}, "hires_upscaler", "must not be empty"),
        ({"hires": False, "hires_scale": 2}, "hires", "hires is false but hires_scale"),
        ({"hires": "maybe"}, "hires", "bool"),
    ],
)
def test_bad_hires_fields_are_a_400_naming_the_field(
    served: Served, received: list[ImageRequest], extra: dict[str, Any], param: str, words: str
) -> None:
    response = served.post("/v1/images/generations", {"prompt": "a house", **extra})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and words in error["message"], error
    assert error["type"] == "invalid_request_error"
    assert received == []


def test_the_fields_are_in_openapi(served: Served) -> None:
    document = served.get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    names = {"hires", "hires_scale", "hires_size", "hires_upscaler", "hires_steps"}
    names |= {"hires_denoise", "hires_prompt", "hires_negative_prompt"}
    assert names <= set(schemas["GenerationBody"]["properties"])
    assert names <= set(schemas["EditFields"]["properties"])
    assert schemas["GenerationBody"]["properties"]["hires_scale"]["anyOf"][0]["maximum"] == 8


# -- end to end: the tiny pipeline's second pass ------------------------------------------------


def size_of(response: httpx.Response) -> tuple[int, int]:
    assert response.status_code == 200, response.text
    data = base64.b64decode(response.json()["data"][0]["b64_json"])
    return Image.open(io.BytesIO(data)).size


def test_hires_scale_2_gives_an_image_twice_the_size(served: Served) -> None:
    body = {"prompt": "a house", "size": "64x64", "seed": 3, "steps": 2}
    assert size_of(served.post("/v1/images/generations", body)) == (64, 64)
    hires = {**body, "hires_scale": 2, "hires_steps": 2, "hires_upscaler": "lanczos"}
    assert size_of(served.post("/v1/images/generations", hires)) == (128, 128)
    assert size_of(served.post("/v1/images/generations", body)) == (64, 64)  # serves on


def test_an_unknown_hires_upscaler_is_a_400_naming_the_known_ones(served: Served) -> None:
    body = {"prompt": "a house", "size": "64x64", "hires_upscaler": "4x-nothing"}
    response = served.post("/v1/images/generations", body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "hires_upscaler" and "lanczos" in error["message"], error


def test_an_edit_with_a_hires_fix_is_refused_naming_hires(served: Served) -> None:
    """The hires fix follows a text-to-image pass: an edit's input image cannot take one."""
    files = {"image": ("photo.png", png_bytes(Image.new("RGB", (64, 64), "gray")), "image/png")}
    data = {"prompt": "a house", "hires_scale": "2"}
    response = served.request("POST", "/v1/images/edits", files=files, data=data)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "hires"


def test_the_openai_client_gets_a_hires_image(served: Served) -> None:
    result = served.client().images.generate(
        model="tiny",
        prompt="a house",
        size="64x64",
        extra_body={"seed": 4, "steps": 2, "hires_size": "96x80", "hires_steps": 2},
    )
    assert result.data is not None and result.data[0].b64_json
    image = Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json)))
    assert image.size == (96, 80)
    assert result.size == "96x80"


def test_a_streamed_hires_generation_completes_at_the_hires_size(served: Served) -> None:
    from openai.types import ImageGenCompletedEvent

    stream = served.client().images.generate(
        model="tiny",
        prompt="a house",
        size="64x64",
        stream=True,
        partial_images=1,
        extra_body={"seed": 4, "steps": 2, "hires_scale": 2, "hires_steps": 2},
    )
    events = list(stream)
    done = events[-1]
    assert isinstance(done, ImageGenCompletedEvent), events
    image = Image.open(io.BytesIO(base64.b64decode(done.b64_json)))
    assert image.size == (128, 128) and done.size == "128x128"


def test_an_image_job_with_a_hires_fix_completes_at_the_hires_size(served: Served) -> None:
    body = {"prompt": "a house", "size": "64x64", "seed": 4, "steps": 2, "hires_scale": 1.5}
    created = served.post("/v1/images/jobs", body)
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    status: dict[str, Any] = {}
    for _ in range(600):
        status = served.get(f"/v1/images/jobs/{job_id}").json()
        if status["status"] in ("completed", "failed", "cancelled"):
            break
        time.sleep(0.1)
    assert status["status"] == "completed", status
    assert status["result"]["size"] == "96x96"
    data = base64.b64decode(status["result"]["data"][0]["b64_json"])
    assert Image.open(io.BytesIO(data)).size == (96, 96)
