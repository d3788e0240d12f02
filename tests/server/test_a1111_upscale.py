"""A1111's upscaling routes and hires fix end to end, on a real server.

The upscaler lists, the Extras routes (`extra-single-image`, `extra-batch-images`) through the
engine's upscalers (the resampling filters and a tiny random x2 ESRGAN in `upscale_models/`),
and txt2img's `enable_hr` on the tiny diffusers pipeline (latent and Lanczos) and the tiny
stable-diffusion.cpp model (latent), with the bodies SillyTavern and webuiapi send.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from tests.server.a1111_support import a1111_error, body, decode, ok, post
from tests.support.served import Served, ServeSpec
from tests.support.server_support import write_model

LATENT_MODES = [
    "Latent",
    "Latent (nearest)",
    "Latent (nearest-exact)",
    "Latent (bicubic)",
    "Latent (antialiased)",
    "Latent (bicubic antialiased)",
]


def _models(tiny_sd: Path, tiny_ggml: dict[str, Path]) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        from tests.support.tiny_esrgan import tiny_esrgan
        from tests.support.tiny_ggml import populate_models_dir

        models = populate_models_dir(folder, tiny_ggml)  # stablediffusion.yaml (ggml)
        write_model(models, "tiny", tiny_sd)
        hires = "size: 64x64\nhires:\n  scale: 1.5\n  upscaler: lanczos\n  steps: 2\n"
        write_model(models, "tinyhr", tiny_sd, extra=hires)  # its YAML turns the fix on
        upscalers = models / "upscale_models"
        upscalers.mkdir()
        (upscalers / "2x-tiny.safetensors").write_bytes(tiny_esrgan(2).read_bytes())
        return models

    return build


@pytest.fixture(scope="module")
def serve_spec(tiny_sd: Path, tiny_ggml: dict[str, Path]) -> ServeSpec:
    return ServeSpec(models=_models(tiny_sd, tiny_ggml))


@pytest.fixture(scope="module")
def served(served: Served) -> Served:
    assert post(served.url, "options", {"sd_model_checkpoint": "tiny"}).status_code == 200
    return served


def b64png(width: int, height: int, parameters: str | None = None) -> str:
    image = Image.new("RGB", (width, height), (200, 40, 40))
    image.paste((10, 220, 10), (0, 0, width // 2, height // 2))
    info = PngImagePlugin.PngInfo()
    if parameters:
        info.add_text("parameters", parameters)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return base64.b64encode(buffer.getvalue()).decode()


def extras(served: Served, **fields: Any) -> httpx.Response:
    data = {"image": b64png(48, 32), "upscaler_1": "Lanczos", **fields}
    return post(served.url, "extra-single-image", data)


def single(response: httpx.Response) -> Image.Image:
    assert response.status_code == 200, response.text
    payload = response.json()
    assert set(payload) == {"html_info", "image"}
    return decode(payload["image"])


# -- the lists -------------------------------------------------------------------------------


def test_upscalers_lists_none_lanczos_nearest_and_the_installed_models(served: Served) -> None:
    items = httpx.get(f"{served.url}/sdapi/v1/upscalers").json()
    assert [item["name"] for item in items] == ["None", "Lanczos", "Nearest", "2x-tiny"]
    assert all(
        set(item) == {"name", "model_name", "model_path", "model_url", "scale"} for item in items
    )
    assert items[1]["model_name"] is None and items[1]["model_path"] is None
    model = items[3]
    assert model["model_name"] == "2x-tiny" and model["scale"] == 2.0
    assert model["model_path"].endswith("upscale_models/2x-tiny.safetensors")


def test_latent_upscale_modes_answer_as_a1111(served: Served) -> None:
    modes = httpx.get(f"{served.url}/sdapi/v1/latent-upscale-modes").json()
    assert [mode["name"] for mode in modes] == LATENT_MODES
    assert all(set(mode) == {"name"} for mode in modes)


# -- extra-single-image / extra-batch-images ---------------------------------------------------


def test_extra_single_image_scales_by_upscaling_resize_keeping_the_parameters(
    served: Served,
) -> None:
    response = extras(served, image=b64png(48, 32, "a fox\nSteps: 3"), upscaling_resize=2)
    image = single(response)
    assert image.size == (96, 64) and image.info["parameters"] == "a fox\nSteps: 3"
    html_info = response.json()["html_info"]
    assert html_info == "<p>Postprocess upscale by: 2, Postprocess upscaler: Lanczos</p>"


def test_extra_single_image_fits_a_size_cropped_or_not(served: Served) -> None:
    cropped = extras(served, resize_mode=1, upscaling_resize_w=100, upscaling_resize_h=100)
    assert single(cropped).size == (100, 100)
    assert "Postprocess upscale to: 100x100" in cropped.json()["html_info"]
    whole = extras(
        served, resize_mode=1, upscaling_resize_w=100, upscaling_resize_h=100, upscaling_crop=False
    )
    assert single(whole).size == (150, 100)  # the larger ratio (100 / 32), aspect kept


def test_upscaler_1_none_leaves_the_image_and_upscaler_2_blends(served: Served) -> None:
    assert single(extras(served, upscaler_1="None")).size == (48, 32)
    lanczos = np.asarray(single(extras(served, upscaling_resize=3)), dtype=np.int16)
    nearest = np.asarray(single(extras(served, upscaler_1="Nearest", upscaling_resize=3)), np.int16)
    blended = extras(
        served,
        upscaling_resize=3,
        upscaler_2="Nearest",
        extras_upscaler_2_visibility=0.5,
    )
    mixed = np.asarray(single(blended), dtype=np.int16)
    assert not np.array_equal(mixed, lanczos) and not np.array_equal(mixed, nearest)
    assert np.abs(mixed - (lanczos + nearest) / 2).max() <= 1
    assert "Postprocess upscaler 2: Nearest" in blended.json()["html_info"]


def test_extra_single_image_runs_an_upscale_models_esrgan(served: Served) -> None:
    image = single(extras(served, upscaler_1="2x-tiny", upscaling_resize=2))
    assert image.size == (96, 64)


def test_extra_batch_images_as_webuiapi_sends_them(served: Served) -> None:
    data = body("webuiapi_extra_batch_images")
    data["imageList"][0]["data"] = b64png(48, 32)
    data["imageList"][1]["data"] = b64png(20, 30)
    response = post(served.url, "extra-batch-images", data)
    assert response.status_code == 200, response.text
    payload = response.json()
    assert set(payload) == {"html_info", "images"}
    assert [decode(text).size for text in payload["images"]] == [(96, 64), (40, 60)]
    assert set(response.headers["X-Localimg-Ignored"].split(",")) == {
        "codeformer_weight",
        "upscale_first",
    }


@pytest.mark.parametrize(
    ("fields", "status", "words"),
    [
        ({"image": base64.b64encode(b"not an image").decode()}, 422, "image"),
        ({"image": ""}, 422, "image is required"),
        ({"upscaler_1": "4x-Ultra"}, 422, "available: None, Lanczos, Nearest"),
        ({"upscaler_2": "4x-Ultra", "extras_upscaler_2_visibility": 1}, 422, "2x-tiny"),
        ({"gfpgan_visibility": 0.5}, 422, "face restoration"),
        ({"codeformer_visibility": 1}, 422, "face restoration"),
        ({"upscaling_resize": 8, "image": b64png(2000, 2000)}, 422, "limit"),
    ],
)
def test_extras_refusals_in_a1111_shape(
    served: Served, fields: dict[str, Any], status: int, words: str
) -> None:
    a1111_error(extras(served, **fields), status, words)


@pytest.mark.parametrize("scale", [0, 9])
def test_extras_scale_out_of_range_is_fastapis_422(served: Served, scale: float) -> None:
    response = extras(served, upscaling_resize=scale)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "upscaling_resize"]


def test_extra_batch_images_needs_images(served: Served) -> None:
    a1111_error(post(served.url, "extra-batch-images", {"imageList": []}), 422, "imageList")


# -- txt2img's hires fix ---------------------------------------------------------------------


def test_sillytavern_hires_fix_on_diffusers_latent(served: Served) -> None:
    data = body(
        "sillytavern_txt2img",
        enable_hr=True,
        hr_scale=2.0,
        seed=3,
        hr_sampler_name="Use same sampler",
        hr_checkpoint_name="Use same checkpoint",
    )
    response = post(served.url, "txt2img", data)
    images, info, parameters = ok(response)
    image = decode(images[0])
    assert image.size == (128, 128)
    assert (info["width"], info["height"]) == (64, 64)  # the first pass's, as A1111 reports
    assert info["denoising_strength"] == 0.7
    extra = info["extra_generation_params"]
    assert extra["Hires upscale"] == "2" and extra["Hires upscaler"] == "Latent"
    text = image.info["parameters"]
    assert text == info["infotexts"][0]
    assert "Hires upscale: 2" in text and "Hires upscaler: Latent" in text
    assert "Denoising strength: 0.7" in text and "Size: 64x64" in text
    assert parameters["enable_hr"] is True and parameters["hr_scale"] == 2.0
    ignored = response.headers.get("X-Localimg-Ignored", "").split(",")
    assert "hr_upscaler" not in ignored and "denoising_strength" not in ignored


@pytest.mark.slow
def test_webuiapi_hires_fix_with_lanczos_and_a_resize(served: Served) -> None:
    data = body("webuiapi_hires_txt2img")
    response = post(served.url, "txt2img", data)
    images, info, _ = ok(response)
    assert decode(images[0]).size == (128, 96)
    extra = info["extra_generation_params"]
    assert extra["Hires resize"] == "128x96" and extra["Hires upscaler"] == "Lanczos"
    assert extra["Hires steps"] == 2 and info["denoising_strength"] == 0.5
    ignored = response.headers["X-Localimg-Ignored"].split(",")
    assert {"firstphase_width", "firstphase_height"} <= set(ignored)


def test_hires_fix_on_stable_diffusion_cpp_latent(served: Served) -> None:
    data = {
        "prompt": "a red fox",
        "seed": 6,
        "steps": 1,
        "cfg_scale": 1,
        "width": 64,
        "height": 64,
        "enable_hr": True,
        "hr_upscaler": "Latent (bicubic)",
        "hr_second_pass_steps": 1,
        "denoising_strength": 0.6,
        "override_settings": {"sd_model_checkpoint": "stablediffusion"},
    }
    images, info, _ = ok(post(served.url, "txt2img", data))
    assert decode(images[0]).size == (128, 128)
    assert info["extra_generation_params"]["Hires upscaler"] == "Latent (bicubic)"
    assert info["sd_model_name"] == "stablediffusion"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"hr_sampler_name": "DPM++ 2M"}, "hr_sampler_name"),
        ({"hr_scheduler": "karras"}, "hr_scheduler"),
        ({"hr_checkpoint_name": "other.safetensors"}, "hr_checkpoint_name"),
        ({"hr_cfg": 3.0}, "hr_cfg"),
        ({"hr_scale": 9}, "hr_scale"),
        ({"denoising_strength": 0}, "denoising_strength"),
        ({"hr_upscaler": "4x-Ultra"}, "hr_upscaler"),
    ],
)
def test_hires_settings_localimg_cannot_run_are_refused(
    served: Served, fields: dict[str, Any], param: str
) -> None:
    data = {"prompt": "fox", "steps": 2, "width": 64, "height": 64, "enable_hr": True, **fields}
    response = post(served.url, "txt2img", data)
    assert response.status_code in (400, 422, 404), response.text
    assert param in json.dumps(response.json())


def test_img2img_with_enable_hr_is_refused(served: Served) -> None:
    data = {"init_images": [b64png(64, 64)], "prompt": "fox", "enable_hr": True}
    a1111_error(post(served.url, "img2img", data), 422, "txt2img")


def test_the_routes_are_in_openapi_with_their_bodies(served: Served) -> None:
    paths = httpx.get(f"{served.url}/openapi.json").json()["paths"]
    assert "get" in paths["/sdapi/v1/upscalers"]
    assert "get" in paths["/sdapi/v1/latent-upscale-modes"]
    for path, model in (
        ("/sdapi/v1/extra-single-image", "ExtrasSingleBody"),
        ("/sdapi/v1/extra-batch-images", "ExtrasBatchBody"),
    ):
        schema = paths[path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert schema["$ref"].endswith(model)


def test_open_webui_with_hires_in_its_additional_parameters(served: Served) -> None:
    """Open WebUI merges its "Additional Parameters" JSON into the body: a hires fix there runs
    on each image of the batch, the grid (first, as A1111 returns it) of the final images."""
    data = body("openwebui_txt2img", enable_hr=True, hr_upscaler="Lanczos", seed=2, steps=2)
    images, info, _ = ok(post(served.url, "txt2img", data))
    assert [decode(text).size for text in images] == [(256, 128), (128, 128), (128, 128)]
    assert info["index_of_first_image"] == 1 and info["all_seeds"] == [2, 3]
    assert info["extra_generation_params"]["Hires upscaler"] == "Lanczos"


def test_enable_hr_false_leaves_the_hires_fix_to_the_models_yaml(served: Served) -> None:
    """SillyTavern sends enable_hr false with every request: a model whose YAML turns the fix
    on still runs it (96 = 64 x 1.5), and says so in its info; a plain model does not."""
    checkpoint = {"sd_model_checkpoint": "tinyhr"}
    data = body("sillytavern_txt2img", seed=1, override_settings=checkpoint)
    images, info, _ = ok(post(served.url, "txt2img", data))
    assert decode(images[0]).size == (96, 96)
    assert info["extra_generation_params"]["Hires upscaler"] == "Lanczos"
    plain = body("sillytavern_txt2img", seed=1)
    images, info, _ = ok(post(served.url, "txt2img", plain))
    assert decode(images[0]).size == (64, 64) and info["extra_generation_params"] == {}
