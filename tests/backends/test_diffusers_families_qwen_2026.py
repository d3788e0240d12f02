"""Qwen-Image 2.x (QwenImage21Pipeline) and Qwen-Image-Layered on the real diffusers backend,
through the engine, on tiny random pipelines (tests/support/tiny_families_qwen_2026.py): each is
recognised from its folder, deterministic, every parameter changes the result or is refused, the
result equals the bare pipeline call; Layered's RGBA layers come back as images, as PNG with
alpha, and one item per layer from the OpenAI route."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from localimg.backends.diffusers.families import qwen_image_2026
from localimg.engine import Engine, EngineSettings
from localimg.errors import InvalidRequest
from localimg.media import output
from localimg.requests import ImageRequest, ImageResult
from tests.support.engine_checks import backend_of, noise, refused
from tests.support.served import ServeSpec, serve_in_process

tiny = pytest.importorskip("tests.support.tiny_families_qwen_2026")

STEPS = 2
SIDE = 64  # Qwen-Image 2.x: multiples of 32
BUILDERS = {
    "q21": ("tiny_qwen_image21_path", ""),
    "q21-sigmas": ("tiny_qwen_image21_sigmas_path", ""),
    # one layer unless asked: each layer is a 640x640 picture through the VAE on the CPU
    "layered": ("tiny_qwen_image_layered_path", 'options: ["layers:1"]\n'),
    "layered-2": ("tiny_qwen_image_layered_path", 'options: ["layers:2"]\n'),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("qwen-2026-models")
    for name, (builder, yaml) in BUILDERS.items():
        path = getattr(tiny, builder)()
        (folder / f"{name}.yaml").write_text(
            f"name: {name}\nbackend: diffusers\nparameters:\n  model: {path}\n"
            f"step: {STEPS}\n{yaml}",
            encoding="utf-8",
        )
    return folder


@pytest.fixture(scope="module")
def engine(models: Path) -> Iterator[Engine]:
    engine = Engine(EngineSettings(models_path=models))
    yield engine
    engine.close()


def run(engine: Engine, name: str = "q21", **fields: Any) -> ImageResult:
    fields.setdefault("seed", 5)
    if name != "layered":
        fields.setdefault("width", SIDE)
        fields.setdefault("height", SIDE)
    return engine.generate(name, ImageRequest(fields.pop("prompt", "an otter"), **fields))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def differ(a: ImageResult, b: ImageResult) -> bool:
    return bool(np.abs(pixels(a.images[0]) - pixels(b.images[0])).max() > 0)


def bare_pipe(builder: str) -> Any:
    import diffusers

    from localimg.backends.diffusers.load.processors import replacement_components

    folder = str(getattr(tiny, builder)())
    class_name = "QwenImageLayeredPipeline" if "layered" in builder else "QwenImage21Pipeline"
    extra = replacement_components(class_name, folder, {})  # no torchvision: localimg's way
    pipe = getattr(diffusers, class_name).from_pretrained(folder, **extra)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def bare_call(builder: str, seed: int, **kwargs: Any) -> Any:
    import torch

    pipe = bare_pipe(builder)
    with torch.inference_mode():
        return pipe(generator=torch.Generator("cpu").manual_seed(seed), **kwargs).images


# -- Qwen-Image 2.x --------------------------------------------------------------------------


def test_qwen_image_2_is_recognised_from_its_folder_and_deterministic(engine: Engine) -> None:
    first = run(engine)
    info = backend_of(engine, "q21").describe()
    assert info["pipeline"] == "QwenImage21Pipeline"  # no pipeline_type in the YAML
    assert info["family"] == "Qwen-Image 2.x"
    assert first.images[0].size == (SIDE, SIDE)
    assert first.images[0].mode == "RGBA"  # its VAE decodes four channels
    assert not differ(first, run(engine))
    assert differ(first, run(engine, seed=6))
    defaults = backend_of(engine, "q21").defaults
    assert (defaults.width, defaults.height, defaults.size_multiple) == (1024, 1024, 32)
    assert defaults.cfg_scale == 1.0  # meant to sample without guidance
    assert defaults.reference_edits


def test_qwen_image_2_steps_size_prompt_cfg_and_negative_take_effect(engine: Engine) -> None:
    base = run(engine)
    assert differ(base, run(engine, steps=STEPS + 1))
    assert differ(base, run(engine, prompt="a red house"))
    assert run(engine, width=SIDE * 2).images[0].size == (SIDE * 2, SIDE)
    guided = run(engine, cfg_scale=4.0)  # true CFG against the blank negative " "
    assert differ(base, guided)
    assert differ(guided, run(engine, cfg_scale=4.0, negative_prompt="blurry"))
    refused(lambda: run(engine, width=SIDE + 16), "multiples of 32")


def test_qwen_image_2_refuses_what_it_would_ignore(engine: Engine) -> None:
    refused(lambda: run(engine, negative_prompt="blurry"), "only with guidance", "cfg_scale")
    refused(lambda: run(engine, extra={"guidance": 3.0}), "no separate distilled guidance")
    refused(lambda: run(engine, extra={"max_sequence_length": 8}), "no max_sequence_length")
    refused(lambda: run(engine, extra={"prompt_enhance": True}), "no prompt enhancer")
    refused(lambda: run(engine, previews=1), "no previews")
    refused(lambda: run(engine, extra={"layers": 2}), "does not accept 'layers'")
    image = noise(0, SIDE)
    mask = Image.new("L", (SIDE, SIDE), 255)
    refused(lambda: run(engine, init_image=image, mask=mask), "does not inpaint")
    refused(lambda: run(engine, init_image=image, strength=0.5), "does not support strength")
    four = (noise(1, SIDE), noise(2, SIDE), noise(3, SIDE))
    refused(lambda: run(engine, init_image=image, reference_images=four), "takes 3 input images")


def test_qwen_image_2_edits_with_references_and_output_resolution(engine: Engine) -> None:
    small = {"output_resolution": 64}  # inputs read at 64x64, not the default 1024x1024
    plain = run(engine)
    one = run(engine, init_image=noise(0, SIDE), extra=small)
    assert one.images[0].size == (SIDE, SIDE)
    assert differ(plain, one)
    two = run(engine, init_image=noise(0, SIDE), reference_images=(noise(1, SIDE),), extra=small)
    assert differ(one, two)
    assert differ(one, run(engine, init_image=noise(0, SIDE), extra={"output_resolution": 96}))


def test_qwen_image_2_equals_the_bare_pipeline_call(engine: Engine) -> None:
    ours = run(engine, cfg_scale=3.0, seed=9, extra={"use_kv_cache": False})
    bare = bare_call(
        "tiny_qwen_image21_path",
        9,
        prompt="an otter",
        negative_prompt=" ",
        true_cfg_scale=3.0,
        width=SIDE,
        height=SIDE,
        num_inference_steps=STEPS,
        use_kv_cache=False,
    )
    assert np.abs(pixels(ours.images[0]) - pixels(bare[0])).max() <= 1
    image = noise(4, SIDE)
    edit = run(engine, init_image=image, seed=3, extra={"output_resolution": 64})
    bare = bare_call(
        "tiny_qwen_image21_path",
        3,
        prompt="an otter",
        image=[image],
        width=SIDE,
        height=SIDE,
        num_inference_steps=STEPS,
        output_resolution=64,
    )
    assert np.abs(pixels(edit.images[0]) - pixels(bare[0])).max() <= 1


def test_the_models_own_schedule_is_used_at_its_length_and_resampled_otherwise(
    engine: Engine,
) -> None:
    schedule = tiny.SAMPLE_SIGMAS
    assert qwen_image_2026.resampled(schedule, len(schedule)) == schedule
    two = qwen_image_2026.resampled(schedule, 2)
    assert two == [schedule[0], schedule[-1]]
    own = run(engine, "q21-sigmas", steps=len(schedule), seed=2)
    bare = bare_call(  # no sigmas: the pipeline takes sample_sigmas from its config
        "tiny_qwen_image21_sigmas_path",
        2,
        prompt="an otter",
        width=SIDE,
        height=SIDE,
        num_inference_steps=len(schedule),
    )
    assert np.abs(pixels(own.images[0]) - pixels(bare[0])).max() <= 1
    short = run(engine, "q21-sigmas", steps=2, seed=2)
    assert differ(own, short)  # steps take effect (the pipeline alone would ignore them)
    bare = bare_call(
        "tiny_qwen_image21_sigmas_path",
        2,
        prompt="an otter",
        width=SIDE,
        height=SIDE,
        sigmas=two,
    )
    assert np.abs(pixels(short.images[0]) - pixels(bare[0])).max() <= 1


def test_use_kv_cache_is_refused_where_the_transformer_caches_nothing() -> None:
    from types import SimpleNamespace

    adjust = qwen_image_2026.QWEN_IMAGE_21.adjust
    assert adjust is not None
    config = SimpleNamespace(causal_condition=False)
    pipe = SimpleNamespace(config={}, transformer=SimpleNamespace(config=config))
    request = ImageRequest("an otter", steps=2, extra={"use_kv_cache": True})
    refused(lambda: adjust(request, pipe, {}, {}, {}), "causal_condition")
    config.causal_condition = True
    adjust(request, pipe, {}, {}, {})


def test_flow_samplers_run_and_the_ones_without_custom_sigmas_are_refused(
    engine: Engine,
) -> None:
    base = run(engine)
    assert differ(base, run(engine, scheduler="dpmpp_2m"))
    assert run(engine, scheduler="unipc").scheduler == "UniPC"
    refused(lambda: run(engine, scheduler="k_dpmpp_2m"), "flow-matching")
    # the model's own schedule is custom sigmas: Heun and DPM++ make only their own
    refused(lambda: run(engine, "q21-sigmas", steps=2, scheduler="heun"), "no custom sigmas")


# -- Qwen-Image-Layered ----------------------------------------------------------------------


def picture(side: int = 64) -> Image.Image:
    return noise(7, side)


def test_layered_is_recognised_and_gives_rgba_layers_deterministically(engine: Engine) -> None:
    first = run(engine, "layered", init_image=picture())
    info = backend_of(engine, "layered").describe()
    assert info["pipeline"] == "QwenImageLayeredPipeline"
    assert info["family"] == "Qwen-Image-Layered"
    assert len(first.images) == 1  # the YAML's layers:1
    assert first.images[0].mode == "RGBA"
    assert first.images[0].size == (64, 64)  # the input's own size: layers stack over it
    assert first.seeds == [5]
    assert not differ(first, run(engine, "layered", init_image=picture()))
    two = run(engine, "layered", init_image=picture(), extra={"layers": 2}, seed=6)
    assert [image.mode for image in two.images] == ["RGBA", "RGBA"]
    assert two.seeds == [6, 6]  # each layer carries its seed
    assert differ(first, two)


def test_layered_n_makes_a_set_of_layers_per_seed(engine: Engine) -> None:
    result = run(engine, "layered", init_image=picture(), n=2, width=32, height=32)
    assert result.seeds == [5, 6]
    assert [image.size for image in result.images] == [(32, 32), (32, 32)]
    assert differ(result, ImageResult(images=result.images[1:], seeds=[6]))


def test_layered_refuses_what_it_cannot_do(engine: Engine) -> None:
    image = picture()
    refused(lambda: run(engine, "layered"), "needs an input image")
    mask = Image.new("L", (64, 64), 255)
    refused(lambda: run(engine, "layered", init_image=image, mask=mask), "does not inpaint")
    for layers in (0, 17, True, "2"):
        asked: dict[str, Any] = {"layers": layers}
        refused(
            lambda: run(engine, "layered", init_image=image, extra=asked),  # noqa: B023
            "layers must be a whole number from 1 to 16",
        )
    refused(
        lambda: run(engine, "layered", init_image=image, extra={"resolution": 800}),
        "640 or 1024",
    )
    refused(
        lambda: run(
            engine, "layered", init_image=image, cfg_scale=1.0, extra={"cfg_normalize": True}
        ),
        "cfg_normalize",
        "above 1",
    )
    refused(
        lambda: run(engine, "layered", init_image=image, cfg_scale=1.0, negative_prompt="x"),
        "only with guidance",
    )
    refused(lambda: run(engine, "layered", init_image=image, previews=1), "no previews")
    refused(
        lambda: run(engine, "layered", init_image=image, extra={"max_sequence_length": 2048}),
        "at most 1024",
    )


def test_layered_equals_the_bare_pipeline_call(engine: Engine) -> None:
    image = picture()
    # 640x640 asked: the bucket the pipeline works at for a square input, so nothing is resized
    ours = run(
        engine,
        "layered",
        init_image=image,
        width=640,
        height=640,
        seed=4,
        extra={"layers": 2, "cfg_normalize": True},
    )
    bare = bare_call(
        "tiny_qwen_image_layered_path",
        4,
        image=image.convert("RGBA"),
        prompt="an otter",
        negative_prompt=" ",
        true_cfg_scale=4.0,
        layers=2,
        num_inference_steps=STEPS,
        cfg_normalize=True,
    )[0]
    assert len(ours.images) == len(bare) == 2
    for mine, theirs in zip(ours.images, bare, strict=True):
        assert mine.mode == theirs.mode == "RGBA"
        assert np.abs(pixels(mine) - pixels(theirs)).max() <= 1


def test_layers_are_png_with_alpha_and_never_jpeg(engine: Engine, tmp_path: Path) -> None:
    result = run(engine, "layered", init_image=picture(), extra={"layers": 2})
    # a layer with see-through pixels, as real layers have (tiny random weights give noise)
    result.images[1].putalpha(Image.new("L", result.images[1].size, 0))
    items = output.encode_items(result, "png", None, "b64_json", tmp_path, "/files")
    assert len(items) == 2
    for item, image in zip(items, result.images, strict=True):
        decoded = Image.open(io.BytesIO(base64.b64decode(item["b64_json"])))
        assert decoded.mode == "RGBA"
        assert np.array_equal(pixels(decoded), pixels(image))
    paths = output.write_result(result, tmp_path / "layers.png", None)
    assert [p.name for p in paths] == ["layers-1.png", "layers-2.png"]
    assert Image.open(paths[1]).getchannel("A").getextrema() == (0, 0)
    with pytest.raises(InvalidRequest) as err:
        output.encode_items(result, "jpeg", None, "b64_json", tmp_path, "/files")
    assert "png or webp" in err.value.message
    webp = output.encode_items(result, "webp", None, "b64_json", tmp_path, "/files")
    assert Image.open(io.BytesIO(base64.b64decode(webp[1]["b64_json"]))).mode == "RGBA"


def test_the_openai_route_answers_one_item_per_layer(models: Path, tmp_path: Path) -> None:
    buffer = io.BytesIO()
    picture(32).save(buffer, format="PNG")
    body = {
        "model": "layered-2",
        "prompt": "an otter",
        "file": base64.b64encode(buffer.getvalue()).decode("ascii"),
        "response_format": "b64_json",
    }
    spec = ServeSpec(models=models, in_process=True, model="layered-2")
    with serve_in_process(spec, tmp_path) as served:
        response = served.post("/v1/images/generations", body)
        one = served.post("/v1/images/generations", {**body, "layers": 1})
        refused = served.post("/v1/images/generations", {**body, "layers": 17})
    assert one.status_code == 200 and len(one.json()["data"]) == 1  # the request's layers
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "layers"
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert len(data) == 2  # the YAML's layers:2
    for item in data:
        layer = Image.open(io.BytesIO(base64.b64decode(item["b64_json"])))
        assert (layer.mode, layer.size) == ("RGBA", (32, 32))
    first, second = response.headers["X-Localimg-Seeds"].split(",")
    assert first == second  # one seed, two layers
