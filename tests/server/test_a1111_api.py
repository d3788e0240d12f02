"""The A1111 routes' auth, switch and limits through a real uvicorn server (no generation: the
routes here only read the models folder), and the name mappings and parsers as units."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from localimg.errors import InvalidRequest
from localimg.server.a1111.images import fill_masked, read_mask
from localimg.server.a1111.info import parse_parameters
from localimg.server.a1111.samplers import choose, engine_of
from tests.server.a1111_support import a1111_error, basic, decode, post
from tests.support.served import ServeSpec, serve, tiny_models
from tests.support.server_support import wait_until


def _serve(
    tmp_path: Path, tiny_sd: Path, max_queue: int = 16, workers: bool = False, **settings: object
) -> Iterator[str]:
    spec = ServeSpec(
        models=tiny_models(tiny_sd),
        workers=workers,
        engine={"max_queue": max_queue},
        server=settings,
    )
    with serve(spec, tmp_path) as served:
        yield served.url


@pytest.fixture
def open_server(tmp_path: Path, tiny_sd: Path) -> Iterator[str]:
    yield from _serve(tmp_path, tiny_sd)


@pytest.fixture
def keyed_server(tmp_path: Path, tiny_sd: Path) -> Iterator[str]:
    yield from _serve(tmp_path, tiny_sd, api_keys=("s3cret",), cors_origins=("http://st.local",))


def options(url: str, **headers: str) -> httpx.Response:
    return httpx.get(f"{url}/sdapi/v1/options", headers=headers, timeout=30)


def test_without_a_key_any_basic_header_passes(open_server: str) -> None:
    for headers in (
        {},
        {"authorization": ""},  # Open WebUI without credentials
        {"authorization": "Basic"},  # SillyTavern with an empty auth setting
        {"authorization": basic("undefined")},  # SillyTavern with no auth setting at all
        {"authorization": basic("user:pass")},
    ):
        response = options(open_server, **headers)
        assert response.status_code == 200, headers
        assert response.json()["sd_model_checkpoint"] == "tiny"


def test_with_a_key_basic_password_or_bearer(keyed_server: str) -> None:
    for good in (basic("anyone:s3cret"), basic(":s3cret"), basic("s3cret"), "Bearer s3cret"):
        assert options(keyed_server, authorization=good).status_code == 200, good
    for bad in (None, basic("anyone:wrong"), "Bearer wrong", "Basic !!notbase64"):
        headers = {"authorization": bad} if bad else {}
        response = options(keyed_server, **headers)
        a1111_error(response, 401, "Incorrect username or password")
        assert response.headers["www-authenticate"] == "Basic"
    response = httpx.post(
        f"{keyed_server}/sdapi/v1/txt2img", json={"prompt": "x"}, timeout=30
    )  # refused before any work
    a1111_error(response, 401)
    # The same key check guards the OpenAI routes, which now take Basic too.
    models = httpx.get(
        f"{keyed_server}/v1/models", headers={"authorization": basic("u:s3cret")}, timeout=30
    )
    assert models.status_code == 200
    assert httpx.get(f"{keyed_server}/v1/models", timeout=30).status_code == 401


def test_cors_preflight_for_browser_clients(keyed_server: str) -> None:
    response = httpx.options(
        f"{keyed_server}/sdapi/v1/txt2img",
        headers={
            "Origin": "http://st.local",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
        timeout=30,
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "http://st.local"


def test_unknown_sdapi_route_is_fastapi_404(open_server: str) -> None:
    response = httpx.get(f"{open_server}/sdapi/v1/extensions", timeout=30)
    assert response.status_code == 404 and response.json() == {"detail": "Not Found"}


def test_no_a1111_turns_the_routes_off(tmp_path: Path, tiny_sd: Path) -> None:
    for url in _serve(tmp_path, tiny_sd, a1111=False):
        assert options(url).status_code == 404
        response = httpx.post(f"{url}/sdapi/v1/txt2img", json={"prompt": "x"}, timeout=30)
        assert response.status_code == 404
        assert httpx.get(f"{url}/v1/models", timeout=30).status_code == 200


def test_body_limit_applies(tmp_path: Path, tiny_sd: Path) -> None:
    for url in _serve(tmp_path, tiny_sd, max_body_bytes=1024):
        response = httpx.post(
            f"{url}/sdapi/v1/img2img", json={"init_images": ["A" * 4096]}, timeout=30
        )
        assert response.status_code == 413


def _state(url: str) -> dict[str, int]:
    state: dict[str, int] = httpx.get(f"{url}/sdapi/v1/progress", timeout=30).json()["state"]
    return state


def test_full_queue_is_429_in_a1111_shape(tmp_path: Path, tiny_sd: Path) -> None:
    import concurrent.futures

    for url in _serve(tmp_path, tiny_sd, max_queue=1):
        slow = {"prompt": "x", "steps": 30, "width": 64, "height": 64}
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            running = pool.submit(post, url, "txt2img", slow)

            def sampling(u: str = url) -> bool:
                return bool(_state(u)["sampling_step"] > 0)

            def two_jobs(u: str = url) -> bool:
                return bool(_state(u)["job_count"] == 2)

            wait_until(sampling, what="the first running")
            queued = pool.submit(post, url, "txt2img", slow)
            wait_until(two_jobs, what="the second queued")
            response = post(url, "txt2img", slow)
            a1111_error(response, 429, "queued")
            assert response.headers["retry-after"] == "5"
            assert response.json()["error"] == "Busy"
            assert running.result(timeout=300).status_code == 200
            assert queued.result(timeout=300).status_code == 200


def test_worker_process_previews_and_interrupt(tmp_path: Path, tiny_sd: Path) -> None:
    """As `localimg serve` runs models: in a worker process, whose previews reach /progress and
    which /interrupt stops."""
    import concurrent.futures

    for url in _serve(tmp_path, tiny_sd, workers=True):
        data = {"prompt": "x", "steps": 60, "n_iter": 2, "width": 64, "height": 64, "seed": 1}
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            future = pool.submit(post, url, "txt2img", data)

            def preview(u: str = url) -> bool:
                return (
                    httpx.get(f"{u}/sdapi/v1/progress", timeout=30).json()["current_image"]
                    is not None
                )

            wait_until(preview, what="a preview of the running batch")
            image = httpx.get(f"{url}/sdapi/v1/progress", timeout=30).json()["current_image"]
            assert decode(image).size == (64, 64)
            skipped = httpx.get(f"{url}/sdapi/v1/progress?skip_current_image=true", timeout=30)
            assert skipped.json()["current_image"] is None
            assert post(url, "interrupt", {}).status_code == 200
            response = future.result(timeout=300)
        assert response.status_code == 200
        info = json.loads(response.json()["info"])
        assert info["interrupted"] is True and len(info["all_seeds"]) < 2


# -- units -----------------------------------------------------------------------------------


def test_sampler_mapping_per_engine() -> None:
    assert engine_of("stablediffusion-ggml") == engine_of("sd.cpp") == "ggml"
    assert engine_of("diffusers") == engine_of("some-plugin") == "diffusers"
    karras = choose("DPM++ 2M", "Karras", "diffusers", "sampler_name")
    assert karras.scheduler == "k_dpmpp_2m" and karras.extra == {}
    assert choose("DPM++ 2M Karras", None, "diffusers", "s").scheduler == "k_dpmpp_2m"
    assert choose("k_euler_a", "automatic", "diffusers", "s").scheduler == "euler_a"
    assert choose("DDIM", "normal", "diffusers", "s").scheduler == "ddim"
    assert choose(None, "Automatic", "diffusers", "s").scheduler is None
    ggml = choose("Euler", "Karras", "ggml", "s")
    assert ggml.scheduler == "karras" and ggml.extra == {"sampler": "euler"}
    assert choose("DPM++ 2S a", "Align Your Steps", "ggml", "s").scheduler == "ays"
    assert choose(None, "exponential", "ggml", "s").extra == {}
    for args in [
        ("Euler", "Karras", "diffusers"),  # no Karras Euler in localimg's diffusers table
        ("UniPC", None, "ggml"),
        (None, "exponential", "diffusers"),
        (None, "beta", "ggml"),
        ("Euler a", "nonsense", "diffusers"),
        ("DPM adaptive", None, "diffusers"),
    ]:
        with pytest.raises(InvalidRequest):
            choose(args[0], args[1], args[2], "sampler_name")  # type: ignore[arg-type]


def test_model_titles_as_clients_send_them() -> None:
    from localimg.server.a1111.options import model_ref

    names = ["tiny", "dreamshaper-8"]
    assert model_ref("tiny [abc123]", names) == "tiny"
    assert model_ref("dreamshaper-8.safetensors", names) == "dreamshaper-8"
    assert model_ref("other.safetensors", names) == "other.safetensors"  # refused by the caller


def test_parse_parameters_like_a1111() -> None:
    text = (
        "a cat, best quality\nsecond line\nNegative prompt: ugly, blurry\n"
        "Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 123, Size: 512x768, "
        'Model: "my, model", Version: localimg 0.1.0'
    )
    parsed = parse_parameters(text)
    assert parsed["Prompt"] == "a cat, best quality\nsecond line"
    assert parsed["Negative prompt"] == "ugly, blurry"
    assert parsed["Steps"] == 20 and parsed["CFG scale"] == 7.5 and parsed["Seed"] == 123
    assert (parsed["Size-1"], parsed["Size-2"]) == (512, 768)
    assert parsed["Sampler"] == "DPM++ 2M Karras" and parsed["Model"] == "my, model"
    assert parse_parameters("just a prompt") == {"Prompt": "just a prompt", "Negative prompt": ""}


def test_mask_reading_and_fill() -> None:
    grey = Image.new("L", (8, 8), 200)
    assert read_mask(grey, blur=0, invert=False, round_=True).getextrema() == (255, 255)
    assert read_mask(grey, blur=0, invert=True, round_=True).getextrema() == (0, 0)
    assert read_mask(grey, blur=0, invert=False, round_=False).getextrema() == (200, 200)
    alpha = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    alpha.paste((0, 0, 0, 255), (0, 0, 4, 8))  # opaque = repaint (A1111's rule)
    mask = read_mask(alpha, blur=0, invert=False, round_=True)
    assert mask.getpixel((0, 0)) == 255 and mask.getpixel((7, 0)) == 0
    picture = Image.new("RGB", (8, 8), (10, 200, 30))
    picture.paste((250, 0, 0), (0, 0, 4, 8))
    filled = fill_masked(picture, mask)
    assert filled.getpixel((7, 0)) == (10, 200, 30)  # kept as it was
    pixel = filled.getpixel((0, 0))
    assert isinstance(pixel, tuple)  # an RGB pixel
    red, green, _ = pixel
    assert green > red  # the masked red area took the colours around it
