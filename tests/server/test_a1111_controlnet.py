"""sd-webui-controlnet's API through the real app: its /controlnet routes, and its units in
`alwayson_scripts` read into ControlUnits (the captured bodies of its own examples included).

Generation itself is stood in for here: `captured` answers each engine job at once with blank
images, after the engine's real ControlNet preparation, so each test sees the request a backend
would get (its control maps) and the full A1111 answer with its headers.
"""

from __future__ import annotations

import base64
import io
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from localimg.engine import Engine, Job
from localimg.requests import ImageRequest, ImageResult
from localimg.server.a1111.control_units import read_unit
from localimg.server.app import ServerSettings
from tests.server.a1111_support import body, decode
from tests.support.served import Served, ServeSpec, tiny_models
from tests.support.tiny_controlnets import tiny_sd_controlnet_path
from tests.support.tiny_depth import tiny_depth_path

KEY = "sk-controlnet"
NETS = ("control_v11p_sd15_canny.safetensors", "control_v11f1p_sd15_depth.pth", "notes.txt")


def photo(size: tuple[int, int] = (120, 80)) -> Image.Image:
    image = Image.new("RGB", size, "black")
    ImageDraw.Draw(image).rectangle((30, 20, 90, 60), fill="white")
    return image


def b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


@pytest.fixture(scope="module")
def serve_spec(tiny_sd: Path) -> ServeSpec:
    def build(folder: Path) -> Path:
        tiny_models(tiny_sd)(folder)
        nets = folder / "controlnet"
        nets.mkdir()
        for name in NETS:
            (nets / name).write_bytes(b"\0")
        (nets / "canny-sd").symlink_to(tiny_sd_controlnet_path())  # a real one, tiny
        (nets / "depth-diffusers").mkdir()
        (nets / "depth-diffusers" / "config.json").write_text("{}", encoding="utf-8")
        return folder

    return ServeSpec(
        models=build,
        in_process=True,
        api_key=KEY,
        engine={"depth_model": str(tiny_depth_path())},
    )


@pytest.fixture
def captured(served: Served, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[ImageRequest]]:
    """Each request the engine is given, prepared as a backend receives it, answered at once."""
    engine: Engine = served.engine
    seen: list[ImageRequest] = []
    ids = itertools.count(1)

    def submit(model: str | None, request: ImageRequest, progress: Any = None) -> Job:
        prepared = engine.prepare_controls(request)
        seen.append(prepared)
        job = Job(id=f"fake-{next(ids)}", model=model or "tiny", request=prepared)
        job.start()
        size = (prepared.width or 64, prepared.height or 64)
        job.future.set_result(
            ImageResult(
                images=[Image.new("RGB", size) for _ in range(prepared.n)],
                seeds=prepared.seeds,
                request=prepared.with_(width=size[0], height=size[1], steps=4, cfg_scale=7.0),
                model=job.model,
                scheduler="euler",
            )
        )
        return job

    monkeypatch.setattr(engine, "submit", submit)
    yield seen


def unit(**fields: Any) -> dict[str, Any]:
    return {"image": b64(photo()), "model": "control_v11p_sd15_canny", **fields}


def txt2img(served: Served, *units: dict[str, Any], **fields: Any) -> Any:
    data = {"prompt": "a box", "steps": 4, **fields}
    data["alwayson_scripts"] = {"controlnet": {"args": list(units)}}
    return served.post("/sdapi/v1/txt2img", data)


def ignored(response: Any) -> list[str]:
    header = response.headers.get("x-localimg-ignored", "")
    return header.split(",") if header else []


# -- the /controlnet routes ----------------------------------------------------------------------


def test_version_and_settings(served: Served) -> None:
    assert served.get("/controlnet/version").json() == {"version": 2}
    assert served.get("/controlnet/settings").json() == {"control_net_unit_count": 4}


def test_model_list_is_the_controlnet_folder(served: Served) -> None:
    response = served.get("/controlnet/model_list")
    assert response.status_code == 200
    assert response.json() == {
        "model_list": [
            "canny-sd",
            "control_v11f1p_sd15_depth",
            "control_v11p_sd15_canny",
            "depth-diffusers",
        ]
    }


def test_module_list_by_name_and_by_label(served: Served) -> None:
    names = served.get("/controlnet/module_list").json()
    assert names["module_list"] == ["none", "canny", "depth", "depth_anything_v2"]
    canny = names["module_detail"]["canny"]
    assert canny["model_free"] is True
    assert [s["name"] for s in canny["sliders"]] == [
        "Resolution",
        "Low Threshold",
        "High Threshold",
    ]
    assert canny["sliders"][1] == {
        "name": "Low Threshold",
        "value": 100,
        "min": 1,
        "max": 255,
        "step": 1,
    }
    labels = served.get("/controlnet/module_list", params={"alias_names": "true"}).json()
    assert labels["module_list"] == ["none", "canny", "depth_midas", "depth_anything_v2"]
    assert set(labels["module_detail"]) == set(labels["module_list"])


def test_every_listed_module_is_one_the_engine_runs(served: Served) -> None:
    for alias in ("false", "true"):
        listed = served.get("/controlnet/module_list", params={"alias_names": alias}).json()
        for module in listed["module_list"]:
            served.engine.preprocessor_name(module)  # raises for a name it does not know


def test_control_types_pair_modules_with_models(served: Served) -> None:
    types = served.get("/controlnet/control_types").json()["control_types"]
    assert set(types) == {"All", "Canny", "Depth"}
    assert types["Canny"] == {
        "module_list": ["none", "canny"],
        "model_list": ["None", "canny-sd", "control_v11p_sd15_canny"],
        "default_option": "canny",
        "default_model": "control_v11p_sd15_canny",  # a v1.1 model first, as the extension
    }
    assert types["Depth"]["model_list"] == ["None", "control_v11f1p_sd15_depth", "depth-diffusers"]
    assert types["Depth"]["default_model"] == "control_v11f1p_sd15_depth"
    assert types["All"]["default_model"] == "None"


def test_detect_returns_each_map_as_base64_png(served: Served) -> None:
    image = photo()
    response = served.post(
        "/controlnet/detect",
        {
            "controlnet_module": "canny",
            "controlnet_input_images": [
                b64(image),
                "data:image/png;base64," + b64(photo((60, 90))),
            ],
            "controlnet_processor_res": 256,
            "controlnet_threshold_a": 50,
            "controlnet_threshold_b": 150,
        },
    )
    assert response.status_code == 200, response.text
    payload = response.json()
    assert payload["info"] == "Success" and len(payload["images"]) == 2
    first, second = (decode(text) for text in payload["images"])
    assert first.format == "PNG" and first.size == (120, 80) and second.size == (60, 90)
    edges = np.asarray(first.convert("L"))
    assert edges.max() == 255 and edges[30:50, 40:80].max() == 0


def test_detect_with_defaults_and_the_none_module(served: Served) -> None:
    image = photo()
    plain = served.post("/controlnet/detect", {"controlnet_input_images": [b64(image)]})
    assert plain.status_code == 200
    assert decode(plain.json()["images"][0]).convert("RGB").tobytes() == image.tobytes()
    depth = served.post(
        "/controlnet/detect",
        {"controlnet_module": "depth_anything_v2", "controlnet_input_images": [b64(image)]},
    )
    assert depth.status_code == 200, depth.text
    assert decode(depth.json()["images"][0]).size == image.size


@pytest.mark.parametrize(
    ("data", "status", "words"),
    [
        ({"controlnet_module": "openpose", "controlnet_input_images": ["x"]}, 422, "available"),
        ({"controlnet_module": "canny"}, 422, "No image selected"),
        (
            {
                "controlnet_module": "canny",
                "controlnet_input_images": [b64(photo())],
                "controlnet_threshold_a": 300,
            },
            422,
            "threshold_a must be between 1 and 255",
        ),
        (
            {"controlnet_module": "canny", "controlnet_input_images": ["not an image"]},
            422,
            "controlnet_input_images[0]",
        ),
    ],
)
def test_detect_refusals_in_a1111s_shape(
    served: Served, data: dict[str, Any], status: int, words: str
) -> None:
    response = served.post("/controlnet/detect", data)
    assert response.status_code == status, response.text
    payload = response.json()
    assert set(payload) == {"error", "detail", "body", "errors"}
    assert words in payload["detail"]


def test_the_routes_are_in_openapi(served: Served) -> None:
    spec = served.get("/openapi.json").json()
    for path in ("version", "model_list", "module_list", "control_types", "settings", "detect"):
        assert f"/controlnet/{path}" in spec["paths"]
    detect = spec["paths"]["/controlnet/detect"]["post"]
    assert detect["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/DetectBody"
    )
    assert "controlnet_input_images" in spec["components"]["schemas"]["DetectBody"]["properties"]


def test_the_routes_need_the_key_answering_a1111s_401(served: Served) -> None:
    response = served.get("/controlnet/model_list", headers={})
    assert response.status_code == 401
    assert response.json()["detail"] == "Incorrect username or password"


# -- units in alwayson_scripts -------------------------------------------------------------------


def test_the_extensions_own_txt2img_example(served: Served, captured: list[ImageRequest]) -> None:
    data = body("controlnet_txt2img")
    data["alwayson_scripts"]["controlnet"]["args"][0]["image"] = b64(photo())
    data["steps"] = 4
    response = served.post("/sdapi/v1/txt2img", data)
    assert response.status_code == 200, response.text
    (request,) = captured
    (got,) = request.controls
    assert (got.net, got.strength, got.start, got.end, got.preprocess) == (
        "canny",
        1.0,
        0,
        1,
        "none",
    )
    assert got.image.tobytes() == photo().tobytes()  # module none: the image is the map
    # No width and height in the body: crop-to-fit has no output shape to fit to.
    assert "controlnet[0].resize_mode" in ignored(response)


def test_a_canny_unit_reaches_the_backend_as_its_map(
    served: Served, captured: list[ImageRequest]
) -> None:
    response = txt2img(
        served, unit(module="canny", processor_res=128, threshold_a=50, threshold_b=100)
    )
    assert response.status_code == 200, response.text
    (got,) = captured[0].controls
    assert got.preprocess == "none" and got.processor_res is None
    grey = np.asarray(got.image.convert("L"))
    assert set(np.unique(grey)) == {0, 255} and got.image.size == (120, 80)
    assert served.engine.side.entries[("preprocessor", "canny")].state == "loaded"


@pytest.mark.parametrize(
    ("mode", "size"),
    [
        ("Crop and Resize", (120, 60)),
        (1, (120, 60)),
        ("Resize and Fill", (160, 80)),
        ("Just Resize", (120, 80)),
        (0, (120, 80)),
    ],
)
def test_resize_mode_fits_the_control_image_to_the_output_shape(
    served: Served, captured: list[ImageRequest], mode: Any, size: tuple[int, int]
) -> None:
    response = txt2img(served, unit(resize_mode=mode), width=64, height=32)
    assert response.status_code == 200, response.text
    assert captured[0].controls[0].image.size == size
    assert not [name for name in ignored(response) if name.startswith("controlnet")]


def test_resize_and_fill_pads_with_the_border_colour(
    served: Served, captured: list[ImageRequest]
) -> None:
    txt2img(served, unit(resize_mode="Resize and Fill"), width=64, height=32)
    image = captured[0].controls[0].image
    assert image.getpixel((2, 40)) == (0, 0, 0) and image.getpixel((80, 40)) == (255, 255, 255)


def test_pixel_perfect_picks_processor_res_from_the_output_size() -> None:
    settings = ServerSettings()
    raw = unit(module="canny", pixel_perfect=True, resize_mode="Crop and Resize")
    made, skipped = read_unit(raw, 0, settings, None, (256, 128))
    assert made is not None and made.processor_res == 128 and skipped == []
    made, _ = read_unit({**raw, "resize_mode": "Resize and Fill"}, 0, settings, None, (256, 256))
    # Padded to 120x120 first, then detected at the output's 256: the picture itself at 171
    # (80 * 256/120), the extension's pixel-perfect resolution for it.
    assert made is not None and made.processor_res == 256 and made.image.size == (120, 120)
    made, skipped = read_unit(raw, 0, settings, None, None)
    assert made is not None and made.processor_res is None
    assert skipped == ["controlnet[0].resize_mode", "controlnet[0].pixel_perfect"]


def test_the_maps_are_made_once_for_every_batch(
    served: Served, captured: list[ImageRequest]
) -> None:
    response = txt2img(served, unit(module="canny"), n_iter=3)
    assert response.status_code == 200, response.text
    first, *rest = (request.controls[0] for request in captured)
    assert len(rest) == 2 and all(other is first for other in rest)
    assert first.preprocess == "none"


def test_disabled_units_are_skipped(served: Served, captured: list[ImageRequest]) -> None:
    response = txt2img(served, unit(enabled=False, image="not even an image"), unit(weight=0.5))
    assert response.status_code == 200, response.text
    assert [u.strength for u in captured[0].controls] == [0.5]
    response = txt2img(served, unit(enabled=False))
    assert captured[1].controls == ()


def test_a1111_spellings_of_model_image_and_guidance(
    served: Served, captured: list[ImageRequest]
) -> None:
    legacy = {
        "input_image": "data:image/png;base64," + b64(photo()),
        "model": "control_v11p_sd15_canny [d14c016b]",
        "guidance_start": 0.2,
        "guidance": 0.7,
    }
    pair = {"image": {"image": b64(photo()), "mask": None}, "model": "None"}
    response = txt2img(served, legacy, pair)
    assert response.status_code == 200, response.text
    first, second = captured[0].controls
    assert (first.net, first.start, first.end) == ("control_v11p_sd15_canny", 0.2, 0.7)
    assert second.net is None  # "None": the model's YAML control_net decides
    assert first.image.size == second.image.size == (120, 80)


def test_what_is_not_done_is_named_in_the_ignored_header(
    served: Served, captured: list[ImageRequest]
) -> None:
    response = txt2img(
        served,
        unit(
            control_mode="ControlNet is more important",
            low_vram=True,
            image={"image": b64(photo()), "mask": b64(photo())},
            hr_option="High res only",
            save_detected_map=False,
        ),
    )
    assert response.status_code == 200, response.text
    names = ignored(response)
    for key in ("control_mode", "low_vram", "mask", "hr_option"):
        assert f"controlnet[0].{key}" in names
    assert "controlnet[0].save_detected_map" not in names  # off: nothing asked for
    whole = unit(
        hr_option="Both", save_detected_map=True, union_control_type="Unknown", is_ui=False
    )
    assert not [n for n in ignored(txt2img(served, whole)) if n.startswith("controlnet")]
    assert len(captured[0].controls) == 1


def test_img2img_units_without_an_image_read_the_input_picture(
    served: Served, captured: list[ImageRequest]
) -> None:
    data = {
        "prompt": "a box",
        "steps": 4,
        "init_images": [b64(photo((64, 64)))],
        "alwayson_scripts": {"ControlNet": {"args": [{"module": "canny", "model": "c"}]}},
    }
    response = served.post("/sdapi/v1/img2img", data)
    assert response.status_code == 200, response.text
    (got,) = captured[0].controls
    assert got.image.size == (64, 64) and got.net == "c"


@pytest.mark.parametrize(
    ("units", "words"),
    [
        ([{"model": "c"}], "no input image is given"),
        ([unit(module="openpose_full")], "no ControlNet preprocessor 'openpose_full'"),
        ([unit(weight=3)], "alwayson_scripts.controlnet[0].weight"),
        ([unit(guidance_start=0.5, guidance_end=0.5)], "control_start and control_end"),
        ([unit(resize_mode="Stretch")], "resize_mode 'Stretch' is not one of"),
        ([unit(processor_res=16, module="canny")], "processor_res must be between 64"),
        ([unit(module="canny", threshold_a=300)], "threshold_a must be between 1 and 255"),
        ([unit()] * 5, "at most 4"),
        (["not a unit"], "must be a JSON object"),
        ([unit(image=[b64(photo())] * 3)], "holds 3 images"),
    ],
)
def test_bad_units_are_refused_with_a1111s_422(
    served: Served, captured: list[ImageRequest], units: list[Any], words: str
) -> None:
    response = txt2img(served, *units)
    assert response.status_code == 422, response.text
    assert words in response.json()["detail"]
    assert captured == []  # nothing reached the engine


def test_the_extensions_inpaint_example_is_refused_naming_the_modules(
    served: Served, captured: list[ImageRequest]
) -> None:
    data = body("controlnet_inpaint_txt2img", width=64, height=96, steps=4)
    pair = data["alwayson_scripts"]["ControlNet"]["args"][0]["image"]
    pair["image"], pair["mask"] = b64(photo()), b64(photo())
    response = served.post("/sdapi/v1/txt2img", data)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert "'inpaint_only'" in detail and "available: none, canny, depth" in detail
    assert captured == []


def test_other_scripts_are_still_refused(served: Served, captured: list[ImageRequest]) -> None:
    data = {
        "prompt": "x",
        "alwayson_scripts": {"ADetailer": {"args": []}, "controlnet": {"args": []}},
    }
    response = served.post("/sdapi/v1/txt2img", data)
    assert response.status_code == 422
    assert (
        "scripts other than controlnet are not available (ADetailer)" in response.json()["detail"]
    )
    bad = served.post("/sdapi/v1/txt2img", {"prompt": "x", "alwayson_scripts": {"controlnet": []}})
    assert bad.status_code == 422 and '{"args": [unit, ...]}' in bad.json()["detail"]


# -- end to end: the tiny SD with the tiny ControlNet ---------------------------------------------


def generated(served: Served, *units: dict[str, Any]) -> tuple[np.ndarray, Any]:
    response = txt2img(served, *units, width=64, height=64, seed=5, steps=2)
    assert response.status_code == 200, response.text
    image = decode(response.json()["images"][0])
    return np.asarray(image.convert("RGB"), dtype=np.int16), response


def test_txt2img_with_a_canny_unit_runs_the_controlnet(served: Served) -> None:
    plain, _ = generated(served)
    photo_unit = unit(module="canny", model="canny-sd", image=b64(photo((96, 96))))
    steered, response = generated(served, photo_unit)
    again, _ = generated(served, photo_unit)
    other, _ = generated(served, {**photo_unit, "image": b64(photo((96, 48)))})
    assert steered.shape == (64, 64, 3)
    assert not np.array_equal(plain, steered)  # the unit changed the image
    assert np.array_equal(steered, again)  # the same unit, the same image
    assert not np.array_equal(steered, other)  # another map, another image
    parameters = decode(response.json()["images"][0]).info["parameters"]
    assert 'ControlNet 0: "Module: canny, Model: canny-sd, Weight: 1,' in parameters
    assert not [name for name in ignored(response) if name.startswith("controlnet")]


def test_txt2img_with_a_depth_unit_loads_the_depth_model_as_a_side_model(served: Served) -> None:
    plain, _ = generated(served)
    depth_unit = unit(module="depth_midas", model="canny-sd", image=b64(photo((96, 96))))
    steered, _ = generated(served, depth_unit)
    assert not np.array_equal(plain, steered)
    entry = served.engine.side.entries[("preprocessor", "depth")]
    weights = (tiny_depth_path() / "model.safetensors").stat().st_size
    assert entry.state == "loaded" and entry.memory_bytes == weights  # in the memory budget


# -- the webuiapi client (mix1009/sdwebuiapi): ControlNetUnit.to_dict and controlnet_detect -------


def webuiapi_unit(image: str, **changes: Any) -> dict[str, Any]:
    """What webuiapi's ControlNetUnit(...).to_dict() sends, at its defaults."""
    return {
        "image": image,
        "mask": None,
        "module": "none",
        "model": "None",
        "weight": 1.0,
        "resize_mode": "Resize and Fill",
        "low_vram": False,
        "processor_res": 512,
        "threshold_a": 64,
        "threshold_b": 64,
        "guidance_start": 0.0,
        "guidance_end": 1.0,
        "control_mode": "Balanced",
        "pixel_perfect": False,
        "hr_option": "Both",
        "enabled": True,
        **changes,
    }


def test_webuiapi_units(served: Served, captured: list[ImageRequest]) -> None:
    canny = webuiapi_unit(b64(photo()), module="canny", model="control_v11p_sd15_canny [d14c016b]")
    response = txt2img(served, canny, width=64, height=32)
    assert response.status_code == 200, response.text
    (got,) = captured[0].controls
    assert got.net == "control_v11p_sd15_canny" and got.image.size == (160, 80)  # filled to 2:1
    assert not [name for name in ignored(response) if name.startswith("controlnet")]
    # img2img with a unit without its own image ("" in webuiapi): the input picture is used.
    data = {
        "prompt": "x",
        "steps": 4,
        "init_images": [b64(photo((64, 64)))],
        "alwayson_scripts": {"ControlNet": {"args": [webuiapi_unit("", model="c")]}},
    }
    response = served.post("/sdapi/v1/img2img", data)
    assert response.status_code == 200, response.text
    assert captured[1].controls[0].image.size == (64, 64)
    # No units: webuiapi still sends the script with empty args.
    response = txt2img(served)
    assert response.status_code == 200 and captured[2].controls == ()


def test_webuiapi_detect_sends_controlnet_images(served: Served) -> None:
    payload = {
        "controlnet_module": "canny",
        "controlnet_images": ["data:image/png;base64," + b64(photo())],
        "controlnet_processor_res": 512,
        "controlnet_threshold_a": 64,
        "controlnet_threshold_b": 64,
    }
    response = served.post("/controlnet/detect", payload)
    assert response.status_code == 200, response.text
    assert decode(response.json()["images"][0]).size == (120, 80)


def test_the_scripts_list_names_controlnet(served: Served) -> None:
    response = served.get("/sdapi/v1/scripts")
    assert response.json() == {"txt2img": ["controlnet"], "img2img": ["controlnet"]}


@pytest.mark.parametrize(
    ("value", "mode"), [("Depth", 1), ("Hard Edge", 3), ("canny", 3), (6, 6), ("Unknown", None)]
)
def test_union_control_type_is_the_control_mode_parameter(
    served: Served, captured: list[ImageRequest], value: Any, mode: int | None
) -> None:
    response = txt2img(served, unit(union_control_type=value))
    assert response.status_code == 200, response.text
    assert captured[0].extra.get("control_mode") == mode
    assert "controlnet[0].union_control_type" not in ignored(response)


def test_union_control_types_that_disagree_or_are_unknown_are_refused(
    served: Served, captured: list[ImageRequest]
) -> None:
    response = txt2img(served, unit(union_control_type="Depth"), unit(union_control_type="Tile"))
    assert response.status_code == 422 and "different union control types" in response.text
    response = txt2img(served, unit(union_control_type="Pose"))
    assert response.status_code == 422 and "'Pose' is not one of OpenPose" in response.text
    assert captured == []
