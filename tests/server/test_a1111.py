"""The AUTOMATIC1111 API end to end: a real uvicorn server, the tiny diffusers pipeline and the
tiny stable-diffusion.cpp checkpoint, driven with the request bodies SillyTavern and Open WebUI
send (tests/data/a1111/, see its README).

One server for the module: `tiny` and `tiny2` (the diffusers pipeline; tiny2 runs 2 steps) and
`stablediffusion` (ggml). Models run in-process, so the whole module pays one torch import.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.server.a1111_support import a1111_error, basic, body, decode, ok, pixels, post
from tests.support.served import Served, ServeSpec
from tests.support.server_support import wait_until, write_model


def _models(tiny_sd: Path, tiny_ggml: dict[str, Path]) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        from tests.support.tiny_ggml import populate_models_dir

        models = populate_models_dir(folder, tiny_ggml)  # stablediffusion.yaml (ggml)
        write_model(models, "tiny", tiny_sd)
        write_model(models, "tiny2", tiny_sd, extra="")
        (models / "tiny2.yaml").write_text(
            (models / "tiny2.yaml").read_text().replace("step: 4", "step: 2"), encoding="utf-8"
        )
        return models

    return build


@pytest.fixture(scope="module")
def serve_spec(tiny_sd: Path, tiny_ggml: dict[str, Path]) -> ServeSpec:
    return ServeSpec(models=_models(tiny_sd, tiny_ggml), engine={"max_queue": 8})


@pytest.fixture(scope="module")
def served(served: Served) -> Served:
    """The conftest's server with the A1111 routes' current model set to `tiny` (it starts as
    the first served one)."""
    assert post(served.url, "options", {"sd_model_checkpoint": "tiny"}).status_code == 200
    return served


def small(**changes: Any) -> dict[str, Any]:
    base = {"prompt": "a red fox", "steps": 3, "width": 64, "height": 64, "seed": 5}
    base.update(changes)
    return base


# -- the clients' own requests ---------------------------------------------------------------


def test_sillytavern_txt2img_request(served: Served) -> None:
    # SillyTavern sends "Basic " + base64 of its (empty) auth setting; the server sees "Basic".
    auth = basic("").strip()
    response = post(
        served.url, "txt2img", body("sillytavern_txt2img"), headers={"Authorization": auth}
    )
    images, info, parameters = ok(response)
    assert len(images) == 1
    image = decode(images[0])
    assert image.format == "PNG" and image.size == (64, 64)
    text = image.info["parameters"]
    assert text == info["infotexts"][0]
    assert "Negative prompt: lowres" in text and "Sampler: DDIM" in text
    assert info["seed"] == info["all_seeds"][0] >= 0  # no seed sent: random, reported
    assert f"Seed: {info['seed']}" in text
    assert (info["width"], info["height"], info["steps"], info["cfg_scale"]) == (64, 64, 4, 7.0)
    assert info["sampler_name"] == "DDIM" and info["sd_model_name"] == "tiny"
    assert info["clip_skip"] == 1 and info["index_of_first_image"] == 0
    assert parameters["prompt"].startswith("best quality") and "url" not in parameters
    ignored = response.headers["X-Localimg-Ignored"].split(",")
    assert {"url", "auth", "hr_upscaler", "denoising_strength", "hr_scale"} <= set(ignored)
    # save_images: true → written into the server's output folder, with its parameters
    saved = sorted((served.output_dir / "a1111" / "txt2img-images").glob(f"*-{info['seed']}.png"))
    assert saved and Image.open(saved[-1]).info["parameters"] == text


def test_sillytavern_set_model_then_progress_idle(served: Served) -> None:
    assert post(served.url, "options", body("sillytavern_set_model")).status_code == 200
    try:
        options = httpx.get(f"{served.url}/sdapi/v1/options").json()
        assert options["sd_model_checkpoint"] == "tiny2"
        progress = httpx.get(f"{served.url}/sdapi/v1/progress").json()
        assert progress["progress"] == 0 and progress["state"]["job_count"] == 0
        _, info, _ = ok(post(served.url, "txt2img", small()))
        assert info["sd_model_name"] == "tiny2" and info["steps"] == 3
        _, info, _ = ok(post(served.url, "txt2img", small(steps=None)))
        assert info["steps"] == 2  # tiny2's own step count
    finally:
        post(served.url, "options", {"sd_model_checkpoint": "tiny"})


def test_openwebui_txt2img_request(served: Served) -> None:
    # Open WebUI without credentials sends an empty authorization header.
    response = post(served.url, "txt2img", body("openwebui_txt2img"), headers={"authorization": ""})
    images, info, _ = ok(response)
    assert len(images) == 3  # A1111's grid first, then the two images
    assert info["index_of_first_image"] == 1 and len(info["all_seeds"]) == 2
    assert info["all_seeds"][1] == info["all_seeds"][0] + 1
    assert decode(images[0]).size == (128, 64)  # 1 row, 2 columns
    for text, seed in zip(images[1:], info["all_seeds"], strict=True):
        image = decode(text)
        assert image.size == (64, 64) and f"Seed: {seed}" in image.info["parameters"]
    assert info["negative_prompt"] == "blurry" and info["batch_size"] == 2


def test_openwebui_options_round_trip_switches_the_model(served: Served) -> None:
    models = httpx.get(f"{served.url}/sdapi/v1/sd-models").json()
    titles = {m["title"] for m in models}
    assert {"tiny", "tiny2", "stablediffusion"} <= titles
    assert set(models[0]) == {"title", "model_name", "hash", "sha256", "filename", "config"}
    options = httpx.get(f"{served.url}/sdapi/v1/options", headers={"authorization": ""}).json()
    assert options["sd_model_checkpoint"] in titles
    options["sd_model_checkpoint"] = "tiny2"
    assert post(served.url, "options", options).status_code == 200
    try:
        again = httpx.get(f"{served.url}/sdapi/v1/options").json()
        assert again == options
        _, info, _ = ok(post(served.url, "txt2img", body("openwebui_txt2img", batch_size=1)))
        assert info["sd_model_name"] == "tiny2"
        # a read-only key changed, or one localimg does not have: refused, naming it
        a1111_error(
            post(served.url, "options", {**options, "return_grid": False}), 422, "return_grid"
        )
        a1111_error(post(served.url, "options", {"sd_hypernetwork": "x"}), 422, "sd_hypernetwork")
        a1111_error(post(served.url, "options", {"sd_model_checkpoint": "nope"}), 404, "nope")
    finally:
        post(served.url, "options", {"sd_model_checkpoint": "tiny"})


# -- parameters ------------------------------------------------------------------------------


def test_same_seed_same_pixels_and_random_seed_reported(served: Served) -> None:
    first, info1, _ = ok(post(served.url, "txt2img", small(seed=42)))
    second, info2, _ = ok(post(served.url, "txt2img", small(seed=42)))
    assert info1["seed"] == info2["seed"] == 42
    assert np.array_equal(pixels(first[0]), pixels(second[0]))
    other, _, _ = ok(post(served.url, "txt2img", small(seed=43)))
    assert not np.array_equal(pixels(first[0]), pixels(other[0]))
    _, random1, _ = ok(post(served.url, "txt2img", small(seed=-1)))
    _, random2, _ = ok(post(served.url, "txt2img", small(seed=-1)))
    assert random1["seed"] >= 0 and random1["seed"] != random2["seed"]


def test_n_iter_batches_continue_the_seeds(served: Served) -> None:
    images, info, _ = ok(post(served.url, "txt2img", small(seed=100, batch_size=2, n_iter=2)))
    assert info["all_seeds"] == [100, 101, 102, 103] and len(images) == 5
    assert len(info["infotexts"]) == 5  # the grid's first
    alone, _, _ = ok(post(served.url, "txt2img", small(seed=101, n_iter=1)))
    iterated, info, _ = ok(post(served.url, "txt2img", small(seed=100, n_iter=2)))
    assert info["all_seeds"] == [100, 101]
    assert np.array_equal(pixels(iterated[2]), pixels(alone[0]))  # [grid, 100, 101]


def test_sampler_names_map_and_change_the_output(served: Served) -> None:
    outputs = {}
    for name, scheduler in [("Euler a", None), ("DPM++ 2M", None), ("DPM++ 2M", "Karras")]:
        images, info, _ = ok(
            post(served.url, "txt2img", small(sampler_name=name, scheduler=scheduler))
        )
        outputs[(name, scheduler)] = pixels(images[0])
        assert info["sampler_name"] == name
        assert f"Sampler: {name}{' Karras' if scheduler else ''}" in info["infotexts"][0]
    values = list(outputs.values())
    assert not np.array_equal(values[0], values[1]) and not np.array_equal(values[1], values[2])
    # A1111's older combined name splits the same way
    combined, _, _ = ok(post(served.url, "txt2img", small(sampler_name="DPM++ 2M Karras")))
    assert np.array_equal(pixels(combined[0]), outputs[("DPM++ 2M", "Karras")])
    error = a1111_error(
        post(served.url, "txt2img", small(sampler_name="DPM++ 2S a")), 400, "Euler a"
    )
    assert "diffusers" in error["detail"]
    a1111_error(post(served.url, "txt2img", small(sampler_name="Restart")), 400, "DPM++ 2M")
    samplers = httpx.get(f"{served.url}/sdapi/v1/samplers").json()
    assert {"Euler a", "DPM++ 2M", "DDIM", "UniPC"} <= {s["name"] for s in samplers}
    assert set(samplers[0]) == {"name", "aliases", "options"}
    schedulers = httpx.get(f"{served.url}/sdapi/v1/schedulers").json()
    assert "karras" in {s["name"] for s in schedulers}


def test_override_settings_pick_the_model_and_clip_skip(served: Served) -> None:
    _, info, _ = ok(
        post(
            served.url,
            "txt2img",
            small(steps=None, override_settings={"sd_model_checkpoint": "tiny2"}),
        )
    )
    assert info["sd_model_name"] == "tiny2" and info["steps"] == 2
    options = httpx.get(f"{served.url}/sdapi/v1/options").json()
    assert options["sd_model_checkpoint"] == "tiny"  # restored afterwards
    one, info1, _ = ok(
        post(served.url, "txt2img", small(override_settings={"CLIP_stop_at_last_layers": 1}))
    )
    two, info2, _ = ok(
        post(served.url, "txt2img", small(override_settings={"CLIP_stop_at_last_layers": 2}))
    )
    assert info1["clip_skip"] == 1 and info2["clip_skip"] == 2
    assert "Clip skip: 2" in info2["infotexts"][0]  # A1111's count: 2 = one layer skipped
    assert not np.array_equal(pixels(one[0]), pixels(two[0]))
    a1111_error(
        post(
            served.url,
            "txt2img",
            small(clip_skip=1, override_settings={"CLIP_stop_at_last_layers": 2}),
        ),
        422,
        "disagree",
    )
    a1111_error(
        post(served.url, "txt2img", small(override_settings={"sd_vae": "kl.safetensors"})),
        422,
        "sd_vae",
    )


def test_send_images_false_and_samples_format(served: Served) -> None:
    images, info, _ = ok(post(served.url, "txt2img", small(send_images=False)))
    assert images == [] and info["all_seeds"] == [5]
    images, _, _ = ok(
        post(served.url, "txt2img", small(override_settings={"samples_format": "jpg"}))
    )
    assert decode(images[0]).format == "JPEG"


# -- img2img ---------------------------------------------------------------------------------


def _png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_img2img_and_inpaint(served: Served) -> None:
    gradient = np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (64, 1))
    source = Image.fromarray(np.stack([gradient, gradient.T, 255 - gradient], axis=-1))
    plain, info, parameters = ok(
        post(served.url, "img2img", small(init_images=[_png(source)], denoising_strength=0.6))
    )
    assert decode(plain[0]).size == (64, 64) and info["denoising_strength"] == 0.6
    assert "Denoising strength: 0.6" in info["infotexts"][0] and parameters["init_images"] is None
    stronger, _, _ = ok(
        post(served.url, "img2img", small(init_images=[_png(source)], denoising_strength=0.9))
    )
    assert not np.array_equal(pixels(plain[0]), pixels(stronger[0]))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))  # white = repaint the left half
    for fill in (0, 1):
        images, info, _ = ok(
            post(
                served.url,
                "img2img",
                small(
                    init_images=[_png(source)],
                    mask=_png(mask),
                    inpainting_fill=fill,
                    mask_blur=0,
                    inpaint_full_res=False,
                ),
            )
        )
        out = pixels(images[0])
        assert np.array_equal(out[:, 40:], np.asarray(source, dtype=np.int16)[:, 40:])  # kept
        assert not np.array_equal(out[:, :24], np.asarray(source, dtype=np.int16)[:, :24])
    a1111_error(
        post(
            served.url,
            "img2img",
            small(init_images=[_png(source)], mask=_png(mask), inpainting_fill=2),
        ),
        422,
        "inpainting_fill",
    )
    a1111_error(post(served.url, "img2img", small(init_images=[_png(source)] * 2)), 422, "one")
    a1111_error(post(served.url, "img2img", small()), 404, "init_images")


def test_png_info_reads_the_parameters_back(served: Served) -> None:
    images, info, _ = ok(post(served.url, "txt2img", small(negative_prompt="dull, grey", seed=77)))
    response = post(served.url, "png-info", {"image": images[0]})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["info"] == info["infotexts"][0]
    parsed = result["parameters"]
    assert parsed["Prompt"] == "a red fox" and parsed["Negative prompt"] == "dull, grey"
    assert parsed["Seed"] == 77 and parsed["Steps"] == 3
    assert (parsed["Size-1"], parsed["Size-2"]) == (64, 64)


# -- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("restore_faces", True),
        ("tiling", True),
        ("alwayson_scripts", {"ADetailer": {"args": [True]}}),
        ("script_name", "x/y/z plot"),
        ("styles", ["my style"]),
        ("subseed_strength", 0.5),
    ],
)
def test_features_localimg_lacks_are_refused_in_a1111_shape(
    served: Served, field: str, value: Any
) -> None:
    error = a1111_error(post(served.url, "txt2img", small(**{field: value})), 422, field)
    assert error["error"] == "A1111Error"


def test_eta_at_the_samplers_a1111_default_runs_and_another_is_refused(served: Served) -> None:
    """webuiapi sends eta 1.0 with every request: A1111's own default for ancestral samplers.
    A sampler that reads no eta ignores it (in A1111 too): it is named, not refused."""
    ancestral = post(served.url, "txt2img", small(sampler_name="Euler a", eta=1.0))
    assert ancestral.status_code == 200, ancestral.text
    assert "eta" not in ancestral.headers.get("X-Localimg-Ignored", "").split(",")
    ddim = post(served.url, "txt2img", small(sampler_name="DDIM", eta=0))
    assert ddim.status_code == 200, ddim.text
    plain = post(served.url, "txt2img", small(sampler_name="Euler", eta=1.0))
    assert plain.status_code == 200, plain.text
    assert "eta" in plain.headers["X-Localimg-Ignored"].split(",")
    error = a1111_error(
        post(served.url, "txt2img", small(sampler_name="Euler a", eta=0.5)), 422, "eta"
    )
    assert "default eta (1)" in error["detail"]


def test_bad_input_gets_fastapi_validation_shape(served: Served) -> None:
    response = post(served.url, "txt2img", small(steps="many"))
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail[0]["loc"] == ["body", "steps"] and detail[0]["msg"]
    response = httpx.post(f"{served.url}/sdapi/v1/txt2img", content=b"{not json", timeout=30)
    a1111_error(response, 422, "JSON")


# -- progress, interrupt, skip ---------------------------------------------------------------


def _progress(served: Served) -> dict[str, Any]:
    result: dict[str, Any] = httpx.get(f"{served.url}/sdapi/v1/progress", timeout=30).json()
    return result


def _start(served: Served, data: dict[str, Any]) -> Any:
    import concurrent.futures

    pool = concurrent.futures.ThreadPoolExecutor(1)
    future = pool.submit(post, served.url, "txt2img", data)
    pool.shutdown(wait=False)
    return future


def test_progress_while_running_then_interrupt(served: Served) -> None:
    future = _start(served, small(steps=80, n_iter=3, seed=9))
    wait_until(
        lambda: (p := _progress(served)["state"])["job_no"] >= 1 and p["sampling_step"] > 0,
        what="the second batch running",
    )
    progress = _progress(served)
    assert 0 < progress["progress"] < 1 and progress["state"]["job_count"] == 3
    assert progress["state"]["sampling_steps"] == 80 and progress["eta_relative"] >= 0
    assert progress["current_task"] and progress["textinfo"] is None
    if progress["current_image"] is not None:  # once the backends send previews
        assert decode(progress["current_image"]).size == (64, 64)
    assert post(served.url, "interrupt", {}).status_code == 200
    images, info, _ = ok(future.result(timeout=300))
    assert info["interrupted"] is True
    done = len(info["all_seeds"])  # the batches that finished come back
    assert 1 <= done < 3 and info["all_seeds"][0] == 9
    assert len(images) == done + (1 if done > 1 else 0)
    wait_until(lambda: _progress(served)["state"]["job_count"] == 0, what="idle")


def test_skip_ends_the_current_batch(served: Served) -> None:
    future = _start(served, small(steps=80, n_iter=2, seed=20))
    wait_until(
        lambda: (p := _progress(served)["state"])["job_no"] == 0 and p["sampling_step"] > 0,
        what="the first batch running",
    )
    assert post(served.url, "skip", {}).status_code == 200
    _, info, _ = ok(future.result(timeout=300))
    assert info["all_seeds"] == [21] and info["interrupted"] is False


# -- stable-diffusion.cpp ----------------------------------------------------------------------


def test_ggml_model_through_the_sillytavern_body(served: Served) -> None:
    st = body(
        "sillytavern_txt2img",
        sampler_name="Euler",
        scheduler="normal",
        seed=3,
        override_settings={"CLIP_stop_at_last_layers": 1, "sd_model_checkpoint": "stablediffusion"},
    )
    images, info, _ = ok(post(served.url, "txt2img", st))
    assert info["sd_model_name"] == "stablediffusion" and decode(images[0]).size == (64, 64)
    again, _, _ = ok(post(served.url, "txt2img", st))
    assert np.array_equal(pixels(images[0]), pixels(again[0]))
    karras, info, _ = ok(post(served.url, "txt2img", {**st, "scheduler": "Karras"}))
    assert "Karras" in info["infotexts"][0]
    assert not np.array_equal(pixels(images[0]), pixels(karras[0]))
    ancestral, _, _ = ok(post(served.url, "txt2img", {**st, "sampler_name": "Euler a"}))
    assert not np.array_equal(pixels(images[0]), pixels(ancestral[0]))
    error = a1111_error(
        post(served.url, "txt2img", {**st, "sampler_name": "UniPC"}), 400, "DPM++ 2S a"
    )
    assert "ggml" in error["detail"]


def test_ggml_interrupt(served: Served) -> None:
    data = small(
        steps=12, n_iter=2, seed=4, override_settings={"sd_model_checkpoint": "stablediffusion"}
    )
    future = _start(served, data)
    wait_until(
        lambda: _progress(served)["state"]["sampling_step"] > 0, what="the ggml batch running"
    )
    assert post(served.url, "interrupt", {}).status_code == 200
    _, info, _ = ok(future.result(timeout=300))
    assert info["interrupted"] is True and len(info["all_seeds"]) < 2


def test_ggml_samplers_list_follows_the_current_model(served: Served) -> None:
    post(served.url, "options", {"sd_model_checkpoint": "stablediffusion"})
    try:
        names = {s["name"] for s in httpx.get(f"{served.url}/sdapi/v1/samplers").json()}
        assert "DPM++ 2S a" in names and "UniPC" not in names
        schedules = {s["name"] for s in httpx.get(f"{served.url}/sdapi/v1/schedulers").json()}
        assert {"karras", "exponential", "align_your_steps"} <= schedules
    finally:
        post(served.url, "options", {"sd_model_checkpoint": "tiny"})


def test_empty_lists_where_localimg_has_none(served: Served) -> None:
    """(loras and embeddings are listed from the models dir: test_a1111_listings.py; upscalers
    and latent-upscale-modes list what there is: test_a1111_upscale.py)"""
    for path in ("sd-vae", "prompt-styles"):
        response = httpx.get(f"{served.url}/sdapi/v1/{path}")
        assert response.status_code == 200 and response.json() == [], path
    assert post(served.url, "refresh-checkpoints", {}).json() is None


def test_the_cache_extension_reaches_the_engine_and_is_refused_where_it_cannot_run(
    served: Served,
) -> None:
    """localimg's `cache` field on A1111 bodies is read, not ignored: a stable-diffusion.cpp step
    cache that reuses steps changes the image, and a method the model cannot use is an A1111
    error naming the cache."""
    ggml = {"override_settings": {"sd_model_checkpoint": "stablediffusion"}, "steps": 10}
    plain = post(served.url, "txt2img", small(**ggml))
    cached = post(
        served.url, "txt2img", small(**ggml, cache={"method": "ucache", "threshold": 100})
    )
    assert plain.status_code == cached.status_code == 200, cached.text
    assert "cache" not in cached.headers.get("X-Localimg-Ignored", "")
    assert not np.array_equal(
        np.asarray(decode(plain.json()["images"][0])),
        np.asarray(decode(cached.json()["images"][0])),
    )
    refused = post(served.url, "txt2img", small(**ggml, cache="nope"))
    assert refused.status_code in (400, 422), refused.text
    assert "unknown cache method 'nope'" in refused.text
