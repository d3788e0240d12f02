"""`POST /v1/images/upscale`, LocalAI's upscale route: a multipart form as LocalAI's clients send
it (or a JSON body) enlarged by an upscaler, answered in OpenAI's images shape; every refusal is
an OpenAI error naming its field, and the server serves on after one. `GET /v1/upscalers` lists
the names the route takes.

No diffusion model is needed: the server runs over a models folder holding only a tiny ESRGAN
file in upscale_models/, with a small pixel limit, so the limit is reached with small images.
"""

from __future__ import annotations

import base64
import io
import threading
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from PIL import Image

from localimg.media.decode import ImageLimits
from tests.support.served import Served, ServeSpec
from tests.support.tiny_esrgan import tiny_esrgan

MAX_PIXELS = 512 * 512


def esrgan_models(folder: Path) -> Path:
    """No diffusion model; the tiny x2 ESRGAN file as upscale_models/tiny-x2."""
    (folder / "upscale_models").mkdir(parents=True, exist_ok=True)
    (folder / "upscale_models" / "tiny-x2.safetensors").write_bytes(tiny_esrgan(2).read_bytes())
    return folder


@pytest.fixture(scope="module")
def serve_spec() -> ServeSpec:
    return ServeSpec(
        models=esrgan_models, server={"image_limits": ImageLimits(max_pixels=MAX_PIXELS)}
    )


def png(width: int, height: int, color: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    image = Image.new("RGB", (width, height), color)
    image.paste((10, 220, 10), (0, 0, width // 2, height // 2))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def multipart(
    served: Served, data: dict[str, str], image: bytes | None = None, **kwargs: Any
) -> httpx.Response:
    """A LocalAI-style multipart body: the text fields and the `image` file part."""
    files = {"image": ("input.png", image, "image/png")} if image is not None else None
    return served.request("POST", "/v1/images/upscale", data=data, files=files, **kwargs)


def image_of(served: Served, item: dict[str, Any]) -> Image.Image:
    """The image an answer's item carries: its base64, or the file its URL serves."""
    if "b64_json" in item:
        return Image.open(io.BytesIO(base64.b64decode(item["b64_json"])))
    response = httpx.get(item["url"], timeout=30)
    assert response.status_code == 200, response.text
    return Image.open(io.BytesIO(response.content))


def refused(response: httpx.Response, status: int, param: str, words: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["param"] == param and words in error["message"], error
    return error


# -- what LocalAI's clients send ---------------------------------------------------------------


def test_a_localai_multipart_upscale_answers_a_url_of_an_image_twice_the_size(
    served: Served,
) -> None:
    response = multipart(served, {"model": "lanczos", "scale": "2"}, png(48, 32))
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) >= {"id", "created", "data"} and isinstance(body["created"], int)
    (item,) = body["data"]
    assert set(item) == {"url"} and "/generated/" in item["url"]
    image = image_of(served, item)
    assert (image.format, image.size) == ("PNG", (96, 64))
    assert body["size"] == "96x64" and body["model"] == "lanczos"


def test_scale_defaults_to_2_and_4_gives_four_times(served: Served) -> None:
    sizes = []
    for data in ({"model": "bicubic"}, {"model": "bicubic", "scale": "4"}):
        response = multipart(served, data, png(20, 10))
        assert response.status_code == 200, response.text
        sizes.append(image_of(served, response.json()["data"][0]).size)
    assert sizes == [(40, 20), (80, 40)]


def test_a_fractional_scale_and_b64_json_jpeg(served: Served) -> None:
    data = {
        "model": "nearest",
        "scale": "1.5",
        "response_format": "b64_json",
        "output_format": "jpeg",
        "output_compression": "80",
    }
    response = multipart(served, data, png(40, 20))
    assert response.status_code == 200, response.text
    body = response.json()
    image = image_of(served, body["data"][0])
    assert (image.format, image.size, body["output_format"]) == ("JPEG", (60, 30), "jpeg")


def test_nearest_keeps_the_pixels_exactly(served: Served) -> None:
    data = {"model": "nearest", "scale": "2", "response_format": "b64_json"}
    response = multipart(served, data, png(8, 8))
    image = image_of(served, response.json()["data"][0]).convert("RGB")
    assert image.getpixel((0, 0)) == (10, 220, 10) and image.getpixel((15, 15)) == (200, 40, 40)


def test_a_json_body_takes_a_data_url_or_base64(served: Served) -> None:
    raw = base64.b64encode(png(16, 16)).decode("ascii")
    for text in (raw, f"data:image/png;base64,{raw}"):
        body = {"model": "lanczos", "image": text, "scale": 3, "response_format": "b64_json"}
        response = served.post("/v1/images/upscale", body)
        assert response.status_code == 200, response.text
        assert image_of(served, response.json()["data"][0]).size == (48, 48)


def test_webp_output(served: Served) -> None:
    data = {"model": "lanczos", "output_format": "webp", "response_format": "b64_json"}
    response = multipart(served, data, png(16, 16))
    assert image_of(served, response.json()["data"][0]).format == "WEBP"


def test_the_openai_client_posts_the_multipart_form(served: Served) -> None:
    client = served.client()
    body = client.post(
        "/images/upscale",
        cast_to=object,
        body={"model": "lanczos", "scale": 2, "response_format": "b64_json"},
        files=[("image", ("input.png", png(24, 24), "image/png"))],
        options={"headers": {"Content-Type": "multipart/form-data"}},
    )
    assert isinstance(body, dict)
    assert image_of(served, body["data"][0]).size == (48, 48)


def test_the_openai_client_posts_json_and_gets_the_error_shape(served: Served) -> None:
    client = served.client()
    with pytest.raises(openai.BadRequestError) as raised:
        client.post("/images/upscale", cast_to=object, body={"model": "lanczos", "scale": 9})
    assert raised.value.param == "scale"


def test_an_upscale_models_file_upscales_by_its_name(served: Served) -> None:
    pytest.importorskip("stable_diffusion_cpp")
    data = {"model": "tiny-x2", "scale": "2", "response_format": "b64_json"}
    response = multipart(served, data, png(16, 12))
    assert response.status_code == 200, response.text
    image = image_of(served, response.json()["data"][0]).convert("RGB")
    assert image.size == (32, 24)
    lanczos = multipart(served, {**data, "model": "lanczos"}, png(16, 12))
    assert image.tobytes() != image_of(served, lanczos.json()["data"][0]).convert("RGB").tobytes()


def test_a_file_added_to_upscale_models_is_found_without_a_restart(served: Served) -> None:
    folder = served.engine.settings.models_path / "upscale_models"
    (folder / "later-x4.safetensors").write_bytes(tiny_esrgan(4).read_bytes())
    try:
        assert "later-x4" in [entry["id"] for entry in served.get("/v1/upscalers").json()["data"]]
        response = multipart(served, {"model": "later-x4", "scale": "8"}, png(100, 100))
        assert response.json()["error"]["param"] == "scale"  # the name passed; the size did not
    finally:
        (folder / "later-x4.safetensors").unlink()
        served.engine.refresh_upscalers()


# -- refusals ------------------------------------------------------------------------------


def test_not_an_image_is_refused_naming_image(served: Served) -> None:
    response = multipart(served, {"model": "lanczos"}, b"this is not an image")
    refused(response, 422, "image", "not a readable image")


def test_a_missing_image_is_a_400(served: Served) -> None:
    refused(multipart(served, {"model": "lanczos"}), 400, "image", "image file is required")
    refused(served.post("/v1/images/upscale", {"model": "lanczos"}), 400, "image", "required")


def test_an_image_as_a_text_field_or_two_images_are_refused(served: Served) -> None:
    response = multipart(served, {"model": "lanczos", "image": "abc"})
    refused(response, 400, "image", "the one image file goes in 'image'")
    files = [("image", ("a.png", png(8, 8), "image/png"))] * 2
    response = served.request("POST", "/v1/images/upscale", data={"model": "lanczos"}, files=files)
    refused(response, 400, "image", "more than one image")


@pytest.mark.parametrize("scale", ["0", "-1", "8.5", "100"])
def test_a_scale_not_above_0_or_above_8_is_a_400(served: Served, scale: str) -> None:
    response = multipart(served, {"model": "lanczos", "scale": scale}, png(8, 8))
    error = refused(response, 400, "scale", "scale")
    assert error["type"] == "invalid_request_error"


def test_an_output_over_the_pixel_limit_is_a_400_naming_scale(served: Served) -> None:
    response = multipart(served, {"model": "lanczos", "scale": "8"}, png(100, 100))
    refused(response, 400, "scale", f"the server's limit is {MAX_PIXELS} pixels")
    ok = multipart(served, {"model": "lanczos", "scale": "5"}, png(100, 100))
    assert ok.status_code == 200, ok.text  # 500x500 is under the limit


def test_an_unknown_upscaler_names_the_installed_ones(served: Served) -> None:
    response = multipart(served, {"model": "stable-diffusion-x4-upscaler"}, png(8, 8))
    error = refused(response, 404, "model", "no upscaler named 'stable-diffusion-x4-upscaler'")
    assert "bicubic, lanczos, nearest, tiny-x2" in error["message"]


def test_the_model_is_required_as_in_localai(served: Served) -> None:
    response = multipart(served, {"scale": "2"}, png(8, 8))
    refused(response, 400, "model", "model is required")


def test_unknown_fields_and_bad_formats_are_400s(served: Served) -> None:
    response = multipart(served, {"model": "lanczos", "prompt": "x"}, png(8, 8))
    refused(response, 400, "prompt", "unknown field")
    response = multipart(served, {"model": "lanczos", "output_format": "gif"}, png(8, 8))
    refused(response, 400, "output_format", "")
    data = {"model": "lanczos", "output_compression": "50"}
    refused(multipart(served, data, png(8, 8)), 400, "output_compression", "not png")


def test_a_json_body_that_is_not_json_is_a_400(served: Served) -> None:
    response = served.request(
        "POST",
        "/v1/images/upscale",
        content=b"{nope",
        headers={**served.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text


def test_the_server_serves_on_after_every_refusal(served: Served) -> None:
    multipart(served, {"model": "lanczos"}, b"junk")
    multipart(served, {"model": "lanczos", "scale": "8"}, png(100, 100))
    multipart(served, {"model": "nope"}, png(8, 8))
    response = multipart(served, {"model": "lanczos"}, png(8, 8))
    assert response.status_code == 200, response.text


def test_it_runs_on_a_worker_thread(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[str] = []
    upscale = served.engine.upscale

    def recording(*args: Any, **kwargs: Any) -> Image.Image:
        threads.append(threading.current_thread().name)
        return upscale(*args, **kwargs)

    monkeypatch.setattr(served.engine, "upscale", recording)
    response = multipart(served, {"model": "lanczos"}, png(8, 8))
    assert response.status_code == 200, response.text
    assert threads and threads[0] != "MainThread"
    assert not threads[0].startswith("uvicorn")


# -- the listing and the API description ---------------------------------------------------


def test_the_upscalers_are_listed(served: Served) -> None:
    response = served.get("/v1/upscalers")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "list"
    ids = [entry["id"] for entry in body["data"]]
    assert ids[:3] == ["bicubic", "lanczos", "nearest"] and "tiny-x2" in ids
    assert all(entry["object"] == "upscaler" for entry in body["data"])


def test_the_route_is_in_openapi(served: Served) -> None:
    document = served.get("/openapi.json").json()
    post = document["paths"]["/v1/images/upscale"]["post"]
    content = post["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(content)
    form = content["multipart/form-data"]["schema"]["allOf"]
    assert "image" in form[1]["properties"]
    fields = document["components"]["schemas"]["UpscaleFields"]["properties"]
    assert {"model", "scale", "response_format", "output_format"} <= set(fields)
    assert "image" in document["components"]["schemas"]["UpscaleBody"]["properties"]
    assert "/v1/upscalers" in document["paths"]
