"""ControlNet over the OpenAI-style routes: `control_image` and its settings reach the engine as
ControlNet units (generations JSON, edits multipart, image jobs, streaming), bad ones are a 400
naming the field, and the server keeps serving after one.

Most tests replace the engine's `submit` by one that keeps the request and refuses it
("captured", a 400), so they look at the front end alone; the end-to-end ones at the bottom run
the tiny SD pipeline with the tiny ControlNet installed in the models folder's controlnet/.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from localimg.requests import ImageRequest
from tests.support.conditioned_fixtures import png_bytes
from tests.support.served import Served, ServeSpec, captured, tiny_models


@pytest.fixture(scope="module")
def serve_spec(tiny_sd: Path) -> ServeSpec:
    """`tiny` with the tiny SD ControlNet installed as controlnet/canny-sd."""
    from tests.support.tiny_controlnets import tiny_sd_controlnet_path

    build = tiny_models(tiny_sd)

    def with_controlnet(folder: Path) -> Path:
        models = build(folder)
        (models / "controlnet").mkdir()
        (models / "controlnet" / "canny-sd").symlink_to(tiny_sd_controlnet_path())
        return models

    models: Callable[[Path], Path] = with_controlnet
    return ServeSpec(models=models)


def square(value: int, size: int = 64) -> Image.Image:
    """Black with a centred square of grey `value`: a control map easy to tell apart."""
    image = Image.new("RGB", (size, size), (0, 0, 0))
    image.paste((value, value, value), (size // 4, size // 4, 3 * size // 4, 3 * size // 4))
    return image


def b64(image: Image.Image) -> str:
    return base64.b64encode(png_bytes(image)).decode("ascii")


def refused(response: httpx.Response, param: str, words: str) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and words in error["message"], error
    assert error["type"] == "invalid_request_error"


def test_the_openai_client_sends_control_fields_in_extra_body(
    served: Served, received: list[ImageRequest]
) -> None:
    with pytest.raises(openai.BadRequestError):
        served.client().images.generate(
            model="tiny",
            prompt="a house",
            extra_body={
                "control_image": b64(square(200)),
                "control_net": "canny",
                "control_strength": 0.7,
                "control_start": 0.1,
                "control_end": 0.9,
                "control_preprocess": "canny",
            },
        )
    ((unit,),) = [request.controls for request in received]
    assert (unit.net, unit.strength, unit.start, unit.end) == ("canny", 0.7, 0.1, 0.9)
    assert unit.preprocess == "canny"
    assert unit.image.size == (64, 64) and unit.image.getpixel((32, 32)) == (200, 200, 200)


def test_a_list_of_control_images_makes_units_in_order(
    served: Served, received: list[ImageRequest]
) -> None:
    body = {
        "model": "tiny",
        "prompt": "a house",
        "control_image": [b64(square(255)), "data:image/png;base64," + b64(square(90))],
        "control_net": ["canny", "depth"],
        "control_strength": [0.5, 1.5],
    }
    request = captured(served.post("/v1/images/generations", body), received)
    first, second = request.controls
    assert (first.net, first.strength) == ("canny", 0.5)
    assert (second.net, second.strength) == ("depth", 1.5)
    assert first.image.getpixel((32, 32)) == (255, 255, 255)
    assert second.image.getpixel((32, 32)) == (90, 90, 90)


def test_one_net_for_every_control_image_and_the_yaml_fills_the_rest(
    served: Served, received: list[ImageRequest]
) -> None:
    body: dict[str, Any] = {
        "prompt": "a house",
        "control_image": [b64(square(255)), b64(square(90))],
        "control_net": "union",
    }
    body["control_mode"] = 3  # a union ControlNet's control type: a pipeline keyword
    request = captured(served.post("/v1/images/generations", body), received)
    assert request.extra == {"control_mode": 3}
    assert [(u.net, u.strength, u.preprocess) for u in request.controls] == [
        ("union", None, "none"),
        ("union", None, "none"),
    ]


def test_edits_take_control_image_file_parts_and_repeated_fields(
    served: Served, received: list[ImageRequest]
) -> None:
    files = [
        ("image", ("photo.png", png_bytes(square(30)), "image/png")),
        ("control_image", ("a.png", png_bytes(square(255)), "image/png")),
        ("control_image[]", ("b.png", png_bytes(square(90)), "image/png")),
    ]
    data = {
        "prompt": "a house",
        "model": "tiny",
        "control_net": ["canny", "depth"],  # a repeated field: one per control image
        "control_strength": "0.25",
    }
    response = served.request("POST", "/v1/images/edits", files=files, data=data)
    request = captured(response, received)
    assert request.init_image is not None and request.init_image.getpixel((32, 32)) == (30,) * 3
    assert [(u.net, u.strength) for u in request.controls] == [("canny", 0.25), ("depth", 0.25)]
    assert request.controls[1].image.getpixel((32, 32)) == (90, 90, 90)


def test_image_jobs_and_streams_carry_the_units(
    served: Served, received: list[ImageRequest]
) -> None:
    body = {"prompt": "a house", "control_image": b64(square(255)), "control_net": "canny"}
    captured(served.post("/v1/images/jobs", body), received)
    streamed = {**body, "stream": True, "partial_images": 1}
    assert served.post("/v1/images/generations", streamed).status_code == 400
    assert [len(request.controls) for request in received] == [1, 1]
    assert received[1].previews == 1


@pytest.mark.parametrize(
    ("extra", "param", "words"),
    [
        ({"control_strength": 2.5}, "control_strength", "between 0 and 2"),
        ({"control_net": ["a", "b"]}, "control_net", "2 ControlNets (control_net) for 1"),
        ({"control_start": 0.8, "control_end": 0.2}, "control_start", "0 <= start < end"),
        ({"control_strength": [1, 1]}, "control_strength", "2 values of control_strength"),
        ({"control_image": "bm90IGFuIGltYWdl"}, "control_image", "control_image"),
        ({"control_image": [b64(square(1))] * 5}, "control_image", "at most 4"),
        ({"control_image": None, "control_net": "canny"}, "control_image", "without"),
        ({"control_net": 3}, "control_net", "control_net"),
        ({"control_mode": 9}, "control_mode", "less than or equal to 7"),
    ],
)
def test_bad_control_fields_are_a_400_naming_the_field(
    served: Served, received: list[ImageRequest], extra: dict[str, Any], param: str, words: str
) -> None:
    body = {"prompt": "a house", "control_image": b64(square(255)), "control_net": "c", **extra}
    response = served.post("/v1/images/generations", body)
    if param == "control_image" and response.status_code == 422:  # undecodable: invalid_image
        assert response.json()["error"]["param"] == param
    else:
        refused(response, param, words)
    assert received == []


def test_an_unknown_preprocessor_is_a_400_naming_the_available_ones(served: Served) -> None:
    body = {
        "prompt": "a house",
        "control_image": b64(square(255)),
        "control_net": "canny",
        "control_preprocess": "sketch",
    }
    response = served.post("/v1/images/generations", body)
    refused(response, "control_preprocess", "available: none, canny, depth")


def test_multipart_control_image_must_be_a_file(served: Served) -> None:
    files = {"image": ("photo.png", png_bytes(square(30)), "image/png")}
    data = {"prompt": "a house", "control_image": b64(square(255))}
    response = served.request("POST", "/v1/images/edits", files=files, data=data)
    refused(response, "control_image", "must be an uploaded file")


def test_without_the_controlnet_anywhere_it_is_refused_and_the_server_serves_on(
    served: Served,
) -> None:
    """The tiny model's YAML names no control_net: the unit is refused before anything runs."""
    body = {"prompt": "a house", "control_image": b64(square(255)), "size": "64x64"}
    response = served.post("/v1/images/generations", body)
    refused(response, "control_net", "needs a ControlNet")
    plain = served.post("/v1/images/generations", {"prompt": "a house", "size": "64x64"})
    assert plain.status_code == 200, plain.text
    assert len(plain.json()["data"]) == 1


def test_the_fields_are_in_openapi(served: Served) -> None:
    document = served.get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    fields = set(schemas["GenerationBody"]["properties"])
    assert {"control_image", "control_net", "control_strength", "control_preprocess"} <= fields
    assert {"control_start", "control_end", "control_mode"} <= fields
    assert "control_net" in schemas["EditFields"]["properties"]
    edits = document["paths"]["/v1/images/edits"]["post"]["requestBody"]["content"]
    assert "control_image" in edits["multipart/form-data"]["schema"]["allOf"][1]["properties"]


# -- end to end: the tiny pipeline and the tiny ControlNet --------------------------------------


def generated(served: Served, **fields: Any) -> np.ndarray:
    body = {"prompt": "a house", "size": "64x64", "seed": 11, **fields}
    response = served.post("/v1/images/generations", body)
    assert response.status_code == 200, response.text
    data = base64.b64decode(response.json()["data"][0]["b64_json"])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def test_the_control_image_changes_the_image(served: Served) -> None:
    plain = generated(served)
    square_map = generated(served, control_image=b64(square(255)), control_net="canny-sd")
    other_map = generated(served, control_image=b64(square(255, 32)), control_net="canny-sd")
    again = generated(served, control_image=b64(square(255)), control_net="canny-sd")
    assert not np.array_equal(plain, square_map)
    assert not np.array_equal(square_map, other_map)
    assert np.array_equal(square_map, again)


def test_strength_zero_gives_the_plain_image(served: Served) -> None:
    plain = generated(served)
    zero = generated(
        served, control_image=b64(square(255)), control_net="canny-sd", control_strength=0
    )
    assert np.array_equal(plain, zero)


def test_the_openai_client_generates_with_a_controlnet(served: Served) -> None:
    result = served.client().images.generate(
        model="tiny",
        prompt="a house",
        size="64x64",
        extra_body={"control_image": b64(square(255)), "control_net": "canny-sd", "seed": 11},
    )
    assert result.data is not None and result.data[0].b64_json
    image = Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json)))
    assert image.size == (64, 64)
    assert "ControlNet" in image.text.get("parameters", "")  # type: ignore[attr-defined]


def test_an_edit_takes_a_control_image_file_part(served: Served) -> None:
    def edited(**files: Any) -> np.ndarray:
        parts = {"image": ("photo.png", png_bytes(square(60)), "image/png"), **files}
        data = {"prompt": "a house", "seed": "11", "strength": "0.8", "control_net": "canny-sd"}
        response = served.request("POST", "/v1/images/edits", files=parts, data=data)
        assert response.status_code == 200, response.text
        raw = base64.b64decode(response.json()["data"][0]["b64_json"])
        return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"), dtype=np.int16)

    a = edited(control_image=("a.png", png_bytes(square(255)), "image/png"))
    b = edited(control_image=("b.png", png_bytes(square(255, 32)), "image/png"))
    assert not np.array_equal(a, b)


def test_an_unknown_controlnet_is_a_4xx_naming_the_installed(served: Served) -> None:
    body = {"prompt": "a house", "control_image": b64(square(255)), "control_net": "cany-sd"}
    response = served.post("/v1/images/generations", body)
    assert 400 <= response.status_code < 500, response.text
    error = response.json()["error"]
    assert error["param"] == "control_net" and "canny-sd" in error["message"]
