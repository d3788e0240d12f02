"""The model families of issue 13 on the real diffusers backend, through the engine, on tiny random
pipelines (tests/support/tiny_families.py): each family is recognised from its folder, is
deterministic, and every parameter changes the image or is refused with a message naming what is
allowed; the image equals the bare pipeline call with the same arguments."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from localimg.backends.diffusers import families
from localimg.backends.diffusers.sampling import flow
from localimg.engine import Engine, EngineSettings
from localimg.errors import InvalidRequest
from localimg.requests import ImageRequest, ImageResult
from tests.support.engine_checks import backend_of, noise, refused

tiny_families = pytest.importorskip("tests.support.tiny_families")

STEPS = 2
# Long enough to be cut by max_sequence_length:8, short enough for the tiny Z-Image's RoPE table.
LONG_PROMPT = "a small otter floating on its back in a calm blue river at dawn, " * 2


@dataclass(frozen=True)
class Case:
    """What the test expects of one family (from its pipeline's code, see families.py)."""

    pipeline: str  # the class recognised from model_index.json
    builder: str  # tests/support/tiny_families.py function
    side: int = 32  # a tiny size the family makes
    cfg: tuple[float, float] | None = (1.0, 4.0)  # two cfg values that give different images
    negative: bool = True  # takes a negative prompt (with guidance on)
    guidance: bool = False  # the `guidance` option acts (distilled guidance besides true CFG)
    references: int = 0  # input images a reference edit takes
    edit_side: int = 32  # an output size for edits (FLUX.2 refuses inputs under 64 px)
    img2img: str | None = None  # the sibling class an input image goes to (no references)
    inpaint: str | None = None
    yaml: str = ""


CASES: dict[str, Case] = {
    "z-image": Case(
        "ZImagePipeline",
        "tiny_z_image_path",
        cfg=(0.0, 3.0),
        img2img="ZImageImg2ImgPipeline",
        inpaint="ZImageInpaintPipeline",
    ),
    "klein": Case(
        "Flux2KleinPipeline",
        "tiny_flux2_klein_path",
        cfg=None,
        negative=False,
        references=4,
        edit_side=64,
    ),
    "klein-base": Case(
        "Flux2KleinPipeline",
        "tiny_flux2_klein_base_path",
        negative=False,
        references=4,
        edit_side=64,
    ),
    "flux2": Case(
        "Flux2Pipeline",
        "tiny_flux2_path",
        cfg=(2.0, 5.0),
        negative=False,
        references=10,
        edit_side=64,
    ),
    "chroma": Case("ChromaPipeline", "tiny_chroma_path", img2img="ChromaImg2ImgPipeline"),
    "kontext": Case("FluxKontextPipeline", "tiny_flux_kontext_path", guidance=True, references=1),
    "qwen-image": Case(
        "QwenImagePipeline",
        "tiny_qwen_image_path",
        img2img="QwenImageImg2ImgPipeline",
        inpaint="QwenImageInpaintPipeline",
    ),
    "qwen-edit-plus": Case(
        "QwenImageEditPlusPipeline", "tiny_qwen_image_edit_plus_path", references=3
    ),
}
PRESENT = {k: c for k, c in CASES.items() if hasattr(tiny_families, c.builder)}
WITH_CFG = [k for k, c in PRESENT.items() if c.cfg is not None]
WITH_NEGATIVE = [k for k, c in PRESENT.items() if c.negative]
NO_NEGATIVE = [k for k, c in PRESENT.items() if not c.negative]
EDITS = [k for k, c in PRESENT.items() if c.references]
MULTI_EDITS = [k for k, c in PRESENT.items() if c.references > 1]
PLAIN = [k for k, c in PRESENT.items() if not c.references]
TEXT_TO_IMAGE = [k for k, c in PRESENT.items() if c.pipeline != "QwenImageEditPlusPipeline"]


@pytest.fixture(scope="module", autouse=True)
def small_references() -> Iterator[None]:
    """Qwen-Image-Edit-Plus references encoded at 128 px, not 1 MP (see the helper)."""
    with tiny_families.small_edit_plus_references():
        yield


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("family-models")
    for name, case in PRESENT.items():
        path = getattr(tiny_families, case.builder)()
        (folder / f"{name}.yaml").write_text(
            f"name: {name}\nbackend: diffusers\nparameters:\n  model: {path}\nstep: {STEPS}\n"
            f"{case.yaml}",
            encoding="utf-8",
        )
    return folder


@pytest.fixture(scope="module")
def engine(models: Path) -> Iterator[Engine]:
    engine = Engine(EngineSettings(models_path=models))
    yield engine
    engine.close()


def reference(index: int, side: int) -> Image.Image:
    colors = ["red", "navy", "green", "orange", "purple"]
    image = Image.new("RGB", (side, side), colors[index % len(colors)])
    image.paste("white", (side // 4, side // 4, side // 2, side // 2))
    return image


def run(engine: Engine, name: str, **fields: Any) -> ImageResult:
    case = PRESENT[name]
    side = case.edit_side if "image" in fields else case.side
    fields.setdefault("seed", 5)
    fields.setdefault("width", side)
    fields.setdefault("height", side)
    if "image" in fields:
        images = fields.pop("image")
        fields["init_image"] = images[0]
        fields["reference_images"] = tuple(images[1:])
    elif case.pipeline == "QwenImageEditPlusPipeline":
        fields["init_image"] = reference(0, side)
    return engine.generate(name, ImageRequest(fields.pop("prompt", "an otter"), **fields))


def pixels(result: ImageResult) -> np.ndarray:
    return np.asarray(result.images[0].convert("RGB"), dtype=np.int16)


def differ(a: ImageResult, b: ImageResult) -> bool:
    return bool(np.abs(pixels(a) - pixels(b)).max() > 0)


# -- recognised, deterministic -------------------------------------------------------------


@pytest.mark.parametrize("name", list(PRESENT))
def test_family_is_recognised_from_its_folder_and_deterministic(engine: Engine, name: str) -> None:
    case = PRESENT[name]
    first = run(engine, name)
    info = backend_of(engine, name).describe()
    assert info["pipeline"] == case.pipeline  # no pipeline_type in the YAML
    assert info["family"] == families.FAMILIES[case.pipeline].name
    assert first.images[0].size == (case.side, case.side)
    assert not differ(first, run(engine, name))
    assert differ(first, run(engine, name, seed=6))


@pytest.mark.parametrize("name", list(PRESENT))
def test_steps_size_and_prompt_change_the_image(engine: Engine, name: str) -> None:
    case = PRESENT[name]
    base = run(engine, name)
    assert differ(base, run(engine, name, steps=STEPS + 1))
    assert differ(base, run(engine, name, prompt="a red house"))
    big = run(engine, name, width=case.side * 2)
    assert big.images[0].size == (case.side * 2, case.side)


@pytest.mark.parametrize("name", list(PRESENT))
def test_a_size_the_family_cannot_make_is_refused_naming_the_multiple(
    engine: Engine, name: str
) -> None:
    backend = backend_of(engine, name) if name in engine.slots else None
    if backend is None:
        run(engine, name)
        backend = backend_of(engine, name)
    multiple = backend.defaults.size_multiple
    assert multiple == backend.pipe.vae_scale_factor * 2
    if multiple % 8 == 0 and multiple > 8:
        bad = PRESENT[name].side + 8
        refused(lambda: run(engine, name, width=bad), f"multiples of {multiple}")


# -- guidance, negative prompt -------------------------------------------------------------


@pytest.mark.parametrize("name", WITH_CFG)
def test_cfg_scale_reaches_the_guidance_that_acts(engine: Engine, name: str) -> None:
    low, high = PRESENT[name].cfg or (1.0, 4.0)
    assert differ(run(engine, name, cfg_scale=low), run(engine, name, cfg_scale=high))


def test_distilled_klein_refuses_guidance_it_would_ignore(engine: Engine) -> None:
    if "klein" not in PRESENT:
        pytest.skip("no tiny klein")
    refused(lambda: run(engine, "klein", cfg_scale=4.0), "step-distilled", "at most 1")
    assert backend_of(engine, "klein").defaults.cfg_scale == 1.0


@pytest.mark.parametrize("name", WITH_NEGATIVE)
def test_negative_prompt_changes_the_image_with_guidance_on(engine: Engine, name: str) -> None:
    low, high = PRESENT[name].cfg or (1.0, 4.0)
    plain = run(engine, name, cfg_scale=high)
    assert differ(plain, run(engine, name, cfg_scale=high, negative_prompt="blurry, dark"))
    refused(
        lambda: run(engine, name, cfg_scale=low, negative_prompt="blurry"),
        "only with guidance",
        f"above {low:g}",
    )


@pytest.mark.parametrize("name", NO_NEGATIVE)
def test_negative_prompt_is_refused_where_the_family_has_none(engine: Engine, name: str) -> None:
    refused(lambda: run(engine, name, negative_prompt="blurry"), "takes no negative prompt")
    refused(lambda: run(engine, name, prompt="an otter|blurry"), "takes no negative prompt")


@pytest.mark.parametrize("name", list(PRESENT))
def test_guidance_option_acts_or_is_refused(engine: Engine, name: str) -> None:
    if PRESENT[name].guidance:
        a = run(engine, name, extra={"guidance": 1.5})
        assert differ(a, run(engine, name, extra={"guidance": 6.0}))
    else:
        refused(lambda: run(engine, name, extra={"guidance": 3.5}), "guidance")


# -- text length, flow shift, samplers -----------------------------------------------------


@pytest.mark.parametrize("name", [k for k in PRESENT if k != "qwen-edit-plus"])
def test_max_sequence_length_changes_a_long_prompt(engine: Engine, name: str) -> None:
    full = run(engine, name, prompt=LONG_PROMPT)
    short = run(engine, name, prompt=LONG_PROMPT, extra={"max_sequence_length": 8})
    assert differ(full, short)


def test_max_sequence_length_is_refused_where_the_pipeline_ignores_it(engine: Engine) -> None:
    """QwenImageEditPlusPipeline takes the keyword but reads the whole prompt anyway."""
    with pytest.raises(InvalidRequest, match="max_sequence_length"):
        run(engine, "qwen-edit-plus", prompt=LONG_PROMPT, extra={"max_sequence_length": 8})


def test_max_sequence_length_over_the_family_limit_is_refused(engine: Engine) -> None:
    for name, limit in (("kontext", 512), ("chroma", 512), ("qwen-image", 1024)):
        if name in PRESENT:
            refused(
                functools.partial(run, engine, name, extra={"max_sequence_length": limit + 1}),
                f"at most {limit} tokens",
            )


@pytest.mark.parametrize("name", list(PRESENT))
def test_shift_changes_the_schedule(engine: Engine, name: str) -> None:
    # 4 steps: Qwen-Image's shift_terminal pins a 2-step schedule to [1, 0.02] whatever the shift
    base = run(engine, name, steps=4)
    shifted = run(engine, name, steps=4, extra={"shift": 6.0})
    assert differ(base, shifted)
    assert not differ(base, run(engine, name, steps=4))  # the model's own scheduler is back


@pytest.mark.parametrize("sampler", flow.names())
@pytest.mark.parametrize("name", list(PRESENT))
def test_each_flow_sampler_runs_and_changes_the_image(
    engine: Engine, name: str, sampler: str
) -> None:
    base = run(engine, name)
    result = run(engine, name, scheduler=sampler, steps=3)
    spec = flow.FLOW_SCHEDULERS[sampler]
    assert result.scheduler == spec.label
    assert type(backend_of(engine, name).pipe.scheduler).__name__ == spec.class_name
    default_class = type(backend_of(engine, name)._sampling.default).__name__
    at_default_steps = run(engine, name, scheduler=sampler)
    if spec.class_name == default_class:  # the model's own sampler: the same image
        assert not differ(base, at_default_steps)
    else:
        assert differ(base, at_default_steps)
    four = run(engine, name, scheduler=sampler, steps=4)
    assert differ(four, run(engine, name, scheduler=sampler, steps=4, extra={"shift": 8.0}))
    if sampler == "lcm":  # it re-noises at each step: from the seed too (pipeline/run.py)
        assert not differ(four, run(engine, name, scheduler=sampler, steps=4))


@pytest.mark.parametrize("sampler", ["euler_a", "ddim", "k_dpmpp_2m", "pndm"])
def test_noise_samplers_are_refused_on_flow_models_with_the_working_names(
    engine: Engine, sampler: str
) -> None:
    name = next(iter(PRESENT))
    message = refused(
        lambda: run(engine, name, scheduler=sampler), "flow-matching", "use one of: euler"
    )
    for working in flow.names():
        assert working in message


# -- input images --------------------------------------------------------------------------


@pytest.mark.parametrize("name", MULTI_EDITS)
def test_reference_edit_with_two_images(engine: Engine, name: str) -> None:
    side = PRESENT[name].edit_side
    one = run(engine, name, image=[reference(0, side)])
    two = run(engine, name, image=[reference(0, side), reference(1, side)])
    assert one.images[0].size == (side, side)
    assert differ(one, two)
    assert not differ(two, run(engine, name, image=[reference(0, side), reference(1, side)]))
    assert differ(two, run(engine, name, image=[reference(1, side), reference(0, side)]))


@pytest.mark.parametrize("name", EDITS)
def test_references_beyond_the_family_limit_are_refused(engine: Engine, name: str) -> None:
    case = PRESENT[name]
    images = [reference(i, case.edit_side) for i in range(case.references + 1)]
    refused(
        lambda: run(engine, name, image=images),
        f"takes {case.references} input image",
        f"got {case.references + 1}",
    )


@pytest.mark.parametrize("name", EDITS)
def test_edit_families_refuse_masks_and_img2img(engine: Engine, name: str) -> None:
    side = PRESENT[name].edit_side
    image = reference(0, side)
    mask = Image.new("L", (side, side), 255)
    refused(lambda: run(engine, name, image=[image], mask=mask), "does not inpaint")
    refused(lambda: run(engine, name, image=[image], mode="img2img"), "reference edits")


@pytest.mark.parametrize("name", EDITS)
def test_an_input_image_is_a_reference_edit(engine: Engine, name: str) -> None:
    side = PRESENT[name].edit_side
    edited = run(engine, name, image=[reference(0, side)])
    assert differ(edited, run(engine, name, image=[reference(1, side)]))
    assert not differ(edited, run(engine, name, image=[reference(0, side)], mode="edit"))


@pytest.mark.parametrize("name", PLAIN)
def test_plain_families_refuse_references_and_do_img2img_and_inpaint(
    engine: Engine, name: str
) -> None:
    case = PRESENT[name]
    side = case.side
    refused(
        lambda: run(engine, name, image=[reference(0, side), reference(1, side)]),
        "takes no reference images",
    )
    refused(lambda: run(engine, name, image=[reference(0, side)], mode="edit"), "reference")
    if case.img2img:
        a = run(engine, name, image=[noise(0, side)], strength=0.5, steps=4)
        assert differ(a, run(engine, name, image=[noise(1, side)], strength=0.5, steps=4))
        assert differ(a, run(engine, name, image=[noise(0, side)], strength=0.75, steps=4))
        siblings = backend_of(engine, name)._siblings
        assert case.img2img in {type(p).__name__ for p in siblings.values()}
    if case.inpaint:
        mask = Image.new("L", (side, side), 0)
        mask.paste(255, (0, 0, side // 2, side))
        inpainted = run(engine, name, image=[noise(0, side)], mask=mask, steps=4)
        siblings = backend_of(engine, name)._siblings
        assert case.inpaint in {type(p).__name__ for p in siblings.values()}
        kept = np.asarray(inpainted.images[0])[:, side // 2 :]
        assert np.array_equal(kept, np.asarray(noise(0, side))[:, side // 2 :])
    else:
        mask = Image.new("L", (side, side), 255)
        refused(lambda: run(engine, name, image=[noise(0, side)], mask=mask), "no inpaint")


# -- parity with the bare pipeline ---------------------------------------------------------


def bare_call(case: Case, **kwargs: Any) -> np.ndarray:
    import diffusers
    import torch

    from localimg.backends.diffusers.load.processors import replacement_components

    folder = str(getattr(tiny_families, case.builder)())
    # Without torchvision, Qwen-Image-Edit's processor is built as localimg builds it.
    extra = replacement_components(case.pipeline, folder, {})
    pipe = getattr(diffusers, case.pipeline).from_pretrained(folder, **extra)
    pipe.set_progress_bar_config(disable=True)
    seed = kwargs.pop("seed")
    with torch.inference_mode():
        out = pipe(generator=torch.Generator("cpu").manual_seed(seed), **kwargs)
    return np.asarray(out.images[0].convert("RGB"), dtype=np.int16)


@pytest.mark.parametrize("name", TEXT_TO_IMAGE)
def test_the_image_equals_the_bare_pipeline_call(engine: Engine, name: str) -> None:
    case = PRESENT[name]
    cfg = case.cfg[1] if case.cfg else 1.0
    ours = run(engine, name, cfg_scale=cfg, seed=9)
    kwargs: dict[str, Any] = {
        "prompt": "an otter",
        "num_inference_steps": STEPS,
        "width": case.side,
        "height": case.side,
        "seed": 9,
    }
    kwarg = "true_cfg_scale" if name in ("kontext", "qwen-image", "qwen-edit-plus") else None
    kwargs[kwarg or "guidance_scale"] = cfg
    if kwarg and cfg > 1:
        kwargs["negative_prompt"] = " "
    if name == "kontext":
        kwargs.update(max_area=case.side * case.side, _auto_resize=False)
    bare = bare_call(case, **kwargs)
    assert np.abs(pixels(ours) - bare).max() <= 1


@pytest.mark.parametrize("name", EDITS)
def test_a_reference_edit_equals_the_bare_pipeline_call(engine: Engine, name: str) -> None:
    case = PRESENT[name]
    side = case.edit_side
    images = [reference(i, side) for i in range(min(2, case.references))]
    ours = run(engine, name, image=images, seed=3)
    cfg = backend_of(engine, name).defaults.cfg_scale
    kwargs: dict[str, Any] = {"image": images}
    if name in ("qwen-edit-plus", "kontext"):
        kwargs["true_cfg_scale"] = cfg
        if cfg > 1:
            kwargs["negative_prompt"] = " "
    else:
        kwargs["guidance_scale"] = cfg
    if name == "kontext":  # one image, the output size exactly, the image as given
        kwargs.update(image=images[0], max_area=side * side, _auto_resize=False)
    bare = bare_call(
        case,
        prompt="an otter",
        num_inference_steps=STEPS,
        width=side,
        height=side,
        seed=3,
        **kwargs,
    )
    assert np.abs(pixels(ours) - bare).max() <= 1


# -- batches, progress, other pipelines ----------------------------------------------------


@pytest.mark.parametrize("name", TEXT_TO_IMAGE)
def test_a_batch_gives_each_image_what_it_gets_alone(engine: Engine, name: str) -> None:
    import threading

    run(engine, name)  # loaded
    backend = backend_of(engine, name)
    side = PRESENT[name].side
    first = ImageRequest(
        "an otter",
        width=side,
        height=side,
        steps=STEPS,
        seed=1,
        cfg_scale=backend.defaults.cfg_scale,
    )
    # Prompts of different lengths (padded to the longest in the batch by some families), three
    # images (an odd batch), the second request with two seeds.
    requests = [
        first,
        first.with_(prompt="a red boat on a wide river at dusk, painted in oils", seed=2, n=2),
    ]
    quiet = [lambda _event: None] * 2
    batched = backend.generate_batch(requests, quiet, threading.Event())
    for request, result in zip(requests, batched, strict=True):
        alone = backend.generate(request, quiet[0], threading.Event())
        assert len(alone.images) == len(result.images) == request.n
        for lone, together in zip(alone.images, result.images, strict=True):
            assert np.array_equal(np.asarray(lone), np.asarray(together))


def test_progress_counts_steps_with_a_second_order_sampler(engine: Engine) -> None:
    name = next(iter(PRESENT))
    events: list[Any] = []
    request = ImageRequest(
        "an otter", width=PRESENT[name].side, height=PRESENT[name].side, steps=3, seed=1,
        scheduler="heun",
    )  # fmt: skip
    engine.submit(name, request, events.append).result(120)
    steps = [e.step for e in events if e.phase == "step"]
    assert steps and steps[-1] == 3 and max(steps) <= 3 and steps == sorted(steps)
    assert {e.total for e in events if e.phase == "step"} == {3}


def test_stable_diffusion_refuses_reference_edits(tmp_path: Path, tiny_sd: Path) -> None:
    (tmp_path / "sd.yaml").write_text(
        f"name: sd\nbackend: diffusers\nparameters:\n  model: {tiny_sd}\nstep: 2\n",
        encoding="utf-8",
    )
    engine = Engine(EngineSettings(models_path=tmp_path))
    try:
        image = reference(0, 64)
        two = ImageRequest("x", seed=1, init_image=image, reference_images=(reference(1, 64),))
        with pytest.raises(InvalidRequest, match="takes no reference images"):
            engine.generate("sd", two)
        with pytest.raises(InvalidRequest, match="reference edits need"):
            engine.generate("sd", ImageRequest("x", seed=1, init_image=image, mode="edit"))
        with pytest.raises(InvalidRequest, match="applies to the model families"):
            engine.generate("sd", ImageRequest("x", seed=1, extra={"guidance": 3.0}))
        with pytest.raises(InvalidRequest, match="shift applies to flow-matching models"):
            engine.generate("sd", ImageRequest("x", seed=1, extra={"shift": 3.0}))
    finally:
        engine.close()


# -- over HTTP ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(models: Path) -> Iterator[str]:
    from localimg.server.app import ServerSettings, create_app
    from tests.support.server_support import serve_in_thread

    app = create_app(ServerSettings(), Engine(EngineSettings(models_path=models)))
    with serve_in_thread(app) as url:
        yield url


def edit_files(*images: Image.Image) -> list[tuple[str, tuple[str, bytes, str]]]:
    import io

    files = []
    for index, image in enumerate(images):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        files.append(("image[]", (f"in{index}.png", buffer.getvalue(), "image/png")))
    return files


@pytest.mark.parametrize("name", MULTI_EDITS)
def test_reference_edit_over_http_with_two_image_files(server: str, name: str) -> None:
    import httpx

    from tests.support.server_support import b64_image

    side = PRESENT[name].edit_side
    data = {"prompt": "an otter", "model": name, "size": f"{side}x{side}", "seed": "4"}

    def edit(*images: Image.Image) -> np.ndarray:
        response = httpx.post(
            server + "/v1/images/edits", files=edit_files(*images), data=data, timeout=120
        )
        assert response.status_code == 200, response.text
        image = b64_image(response.json()["data"][0]["b64_json"])
        assert image.size == (side, side)
        return np.asarray(image.convert("RGB"), dtype=np.int16)

    two = edit(reference(0, side), reference(1, side))
    assert np.abs(two - edit(reference(0, side))).max() > 0
    assert np.array_equal(two, edit(reference(0, side), reference(1, side)))


def test_too_many_images_over_http_is_a_400_naming_the_limit(server: str) -> None:
    import httpx

    from tests.support.server_support import assert_openai_error

    for name, words in (
        ("kontext", "FLUX.1 Kontext takes 1 input image; got 2"),
        ("z-image", "Z-Image takes no reference images"),
        ("klein", "FLUX.2-klein takes 4 input images; got 5"),
    ):
        if name not in PRESENT:
            continue
        side = PRESENT[name].edit_side
        count = 5 if name == "klein" else 2
        response = httpx.post(
            server + "/v1/images/edits",
            files=edit_files(*(reference(i, side) for i in range(count))),
            data={"prompt": "x", "model": name, "size": f"{side}x{side}"},
            timeout=120,
        )
        error = assert_openai_error(response, 400, param="image")
        assert words in error["message"]


def test_yaml_scheduler_type_on_a_flow_model(tmp_path: Path) -> None:
    path = tiny_families.tiny_z_image_path()
    for name, sampler in (("heun", "heun"), ("ancestral", "euler_a")):
        (tmp_path / f"{name}.yaml").write_text(
            f"name: {name}\nbackend: diffusers\nparameters:\n  model: {path}\nstep: 2\n"
            f"diffusers:\n  scheduler_type: {sampler}\noptions: ['shift:2.5']\n",
            encoding="utf-8",
        )
    engine = Engine(EngineSettings(models_path=tmp_path))
    try:
        request = ImageRequest("an otter", width=32, height=32, seed=1)
        heun = engine.generate("heun", request)
        assert heun.scheduler == "Heun"
        scheduler = backend_of(engine, "heun").pipe.scheduler
        assert type(scheduler).__name__ == "FlowMatchHeunDiscreteScheduler"
        assert scheduler.config.shift == 2.5  # the YAML's shift option
        assert differ(heun, engine.generate("heun", request.with_(extra={"shift": 5.0})))
        message = refused(lambda: engine.generate("ancestral", request), "scheduler_type")
        assert "ancestral.yaml" in message and "use one of: euler" in message
    finally:
        engine.close()


def test_flow_schedulers_take_the_pipelines_sigmas_and_mu() -> None:
    """Heun and DPM++ take no custom sigmas, Heun no mu: the adapter gives them the same schedule
    (exponential dynamic shifting at mu is a fixed shift of e^mu)."""
    import math

    import diffusers

    scheduler: Any = diffusers.FlowMatchEulerDiscreteScheduler  # ConfigMixin hides its attributes
    dynamic = scheduler(shift=3.0, use_dynamic_shifting=True).config
    default_sigmas = np.linspace(1.0, 1 / 6, 6)
    euler = flow.build(flow.FLOW_SCHEDULERS["euler"], dynamic)
    euler.set_timesteps(sigmas=default_sigmas, mu=0.7)
    fixed = scheduler(shift=math.exp(0.7))
    fixed.set_timesteps(sigmas=default_sigmas)
    assert np.allclose(euler.sigmas.numpy(), fixed.sigmas.numpy(), atol=1e-6)
    heun = flow.build(flow.FLOW_SCHEDULERS["heun"], dynamic)
    heun.set_timesteps(sigmas=list(default_sigmas), mu=0.7)
    assert math.isclose(heun.config.shift, math.exp(0.7))
    dpm = flow.build(flow.FLOW_SCHEDULERS["dpmpp_2m"], dynamic)
    dpm.set_timesteps(sigmas=default_sigmas, mu=0.7)
    assert len(dpm.timesteps) == 6 and dpm.sigmas[0] > 0.9
    with pytest.raises(InvalidRequest, match="takes no custom sigmas"):
        dpm.set_timesteps(sigmas=[1.0, 0.3, 0.1], mu=0.7)
    fixed_shift = flow.build(flow.FLOW_SCHEDULERS["unipc"], dynamic, shift=5.0)
    assert fixed_shift.config.flow_shift == 5.0 and not fixed_shift.config.use_dynamic_shifting
    fixed_shift.set_timesteps(sigmas=list(default_sigmas), mu=0.7)  # mu ignored: a fixed shift


def test_one_step_is_refused_where_the_scheduler_stretches_to_a_terminal_shift(
    engine: Engine,
) -> None:
    """Qwen-Image's scheduler (shift_terminal) divides by zero at one step: a NaN image."""
    if "qwen-image" not in PRESENT:
        pytest.skip("no tiny Qwen-Image pipeline")
    assert backend_of(engine, "qwen-image").pipe.scheduler.config.get("shift_terminal")
    refused(lambda: run(engine, "qwen-image", steps=1), "at least 2 steps", "NaN")
    assert run(engine, "qwen-image", steps=2).images[0].size == (32, 32)
