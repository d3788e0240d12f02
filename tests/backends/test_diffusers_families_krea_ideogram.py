"""Krea 2 and Ideogram 4 on the real diffusers backend, through the engine, on tiny random
pipelines (tests/support/tiny_families_krea_ideogram.py): each is recognised from its folder,
is deterministic, every parameter changes the image or is refused naming what is allowed, and
the image equals the bare pipeline call with the same arguments."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from localimg.backends.base import RuntimeSettings
from localimg.backends.diffusers.families import krea_ideogram
from localimg.backends.diffusers.sampling import flow
from localimg.config import load_config_file
from localimg.engine import Engine, EngineSettings, memory
from localimg.requests import ImageRequest, ImageResult
from tests.support.engine_checks import backend_of, noise, refused

tiny = pytest.importorskip("tests.support.tiny_families_krea_ideogram")

PROMPT = "an otter holding a sign"
SIDE = 32
# Ideogram 4 pads the prompt to max_sequence_length (2048 by default) and runs its 36-layer text
# encoder over all of it: 64 keeps the tiny model fast, and every bare call below passes it too.
IDEOGRAM_TOKENS = 64
IDEOGRAM_OPTIONS = f'options: ["max_sequence_length:{IDEOGRAM_TOKENS}"]\n'
MODELS = {
    "krea2": ("tiny_krea2_path", ""),
    "krea2-turbo": ("tiny_krea2_turbo_path", ""),
    "ideogram4": ("tiny_ideogram4_path", IDEOGRAM_OPTIONS),
    "ideogram4-headless": ("tiny_ideogram4_headless_path", IDEOGRAM_OPTIONS),
    "ideogram4-cfg": ("tiny_ideogram4_path", IDEOGRAM_OPTIONS + "cfg_scale: 4.0\n"),
    "ideogram4-enhanced": (
        "tiny_ideogram4_path",
        f'options: ["max_sequence_length:{IDEOGRAM_TOKENS}", "prompt_enhance:true"]\n',
    ),
}


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    folder = tmp_path_factory.mktemp("krea-ideogram-models")
    for name, (builder, yaml) in MODELS.items():
        path = getattr(tiny, builder)()
        (folder / f"{name}.yaml").write_text(
            f"name: {name}\nbackend: diffusers\nparameters:\n  model: {path}\nstep: 2\n{yaml}",
            encoding="utf-8",
        )
    with tiny.short_caption_instructions():
        engine = Engine(EngineSettings(models_path=folder))
        yield engine
        engine.close()


def run(engine: Engine, name: str, **fields: Any) -> ImageResult:
    fields.setdefault("seed", 3)
    fields.setdefault("width", SIDE)
    fields.setdefault("height", SIDE)
    return engine.generate(name, ImageRequest(fields.pop("prompt", PROMPT), **fields))


def pixels(result: ImageResult) -> np.ndarray:
    return np.asarray(result.images[0].convert("RGB"), dtype=np.int16)


def differ(a: ImageResult, b: ImageResult) -> bool:
    return bool(np.abs(pixels(a) - pixels(b)).max() > 0)


def bare(pipeline: str, builder: str, seed: int, **kwargs: Any) -> np.ndarray:
    """The same model called directly: diffusers' own pipeline, our kwargs."""
    import diffusers
    import torch

    pipe = getattr(diffusers, pipeline).from_pretrained(getattr(tiny, builder)())
    pipe.set_progress_bar_config(disable=True)
    kwargs.setdefault("prompt", PROMPT)
    kwargs.setdefault("height", SIDE)
    kwargs.setdefault("width", SIDE)
    with torch.inference_mode():
        out = pipe(generator=torch.Generator("cpu").manual_seed(seed), output_type="pil", **kwargs)
    return np.asarray(out.images[0].convert("RGB"), dtype=np.int16)


# -- Krea 2 ------------------------------------------------------------------------------------


def test_krea2_is_recognised_with_its_own_defaults(engine: Engine) -> None:
    first = run(engine, "krea2")
    backend = backend_of(engine, "krea2")
    assert backend.describe()["pipeline"] == "Krea2Pipeline"
    assert backend.describe()["family"] == "Krea 2"
    defaults = backend.defaults
    assert (defaults.width, defaults.height, defaults.cfg_scale) == (1024, 1024, 4.5)
    assert defaults.size_multiple == 16
    assert first.images[0].size == (SIDE, SIDE)
    assert not differ(first, run(engine, "krea2"))
    run(engine, "krea2-turbo")
    assert backend_of(engine, "krea2-turbo").defaults.cfg_scale == 0.0  # distilled: no guidance


def test_krea2_every_parameter_changes_the_image(engine: Engine) -> None:
    base = run(engine, "krea2")
    assert differ(base, run(engine, "krea2", seed=4))
    assert differ(base, run(engine, "krea2", steps=3))
    assert differ(base, run(engine, "krea2", prompt="a heron in the reeds"))
    assert differ(base, run(engine, "krea2", cfg_scale=0.0))  # Krea's 0: no guidance
    assert differ(base, run(engine, "krea2", cfg_scale=1.0))  # 1 still guides (g above 0)
    assert differ(base, run(engine, "krea2", negative_prompt="blurry"))
    assert differ(base, run(engine, "krea2", extra={"max_sequence_length": 8}))
    assert differ(base, run(engine, "krea2", extra={"shift": 6.0}))
    assert run(engine, "krea2", width=48, height=SIDE).images[0].size == (48, SIDE)


def test_krea2_refuses_what_it_would_round_or_ignore(engine: Engine) -> None:
    refused(lambda: run(engine, "krea2", width=40), "multiples of 16")
    refused(lambda: run(engine, "krea2", cfg_scale=0.0, negative_prompt="x"), "above 0")
    refused(lambda: run(engine, "krea2", extra={"guidance": 3.0}), "no separate distilled")
    refused(lambda: run(engine, "krea2", extra={"prompt_enhance": True}), "no prompt enhancer")
    refused(lambda: run(engine, "krea2", init_image=noise(0, SIDE)), "img2img")
    refused(
        lambda: run(engine, "krea2", init_image=noise(0, SIDE), reference_images=(noise(1, SIDE),)),
        "takes no reference images",
    )


def test_krea2_turbo_runs_without_guidance(engine: Engine) -> None:
    base = run(engine, "krea2-turbo")
    assert not differ(base, run(engine, "krea2-turbo", cfg_scale=0.0))
    assert differ(base, run(engine, "krea2-turbo", seed=4))
    refused(lambda: run(engine, "krea2-turbo", cfg_scale=1.0), "step-distilled", "at most 0")
    refused(lambda: run(engine, "krea2-turbo", negative_prompt="x"), "only with guidance")


def test_krea2_flow_samplers(engine: Engine) -> None:
    base = run(engine, "krea2", steps=3)
    for sampler in flow.names():
        result = run(engine, "krea2", scheduler=sampler, steps=3)
        assert result.scheduler == flow.FLOW_SCHEDULERS[sampler].label
        assert differ(base, result) == (sampler != "euler"), sampler  # euler: its own sampler
        # LCM re-noises at each step: from the seed too (pipeline/run.py)
        assert not differ(result, run(engine, "krea2", scheduler=sampler, steps=3)), sampler


def test_krea2_equals_the_bare_pipeline_call(engine: Engine) -> None:
    ours = run(engine, "krea2", seed=8, negative_prompt="blurry")
    theirs = bare(
        "Krea2Pipeline",
        "tiny_krea2_path",
        8,
        negative_prompt="blurry",
        num_inference_steps=2,
        guidance_scale=4.5,
    )
    assert np.abs(pixels(ours) - theirs).max() <= 1
    turbo = run(engine, "krea2-turbo", seed=8)
    theirs = bare(
        "Krea2Pipeline", "tiny_krea2_turbo_path", 8, num_inference_steps=2, guidance_scale=0.0
    )
    assert np.abs(pixels(turbo) - theirs).max() <= 1


# -- Ideogram 4 --------------------------------------------------------------------------------


def test_ideogram4_fitted_schedule() -> None:
    default = [7.0] * 45 + [3.0] * 3
    assert krea_ideogram.fitted_schedule(default, 48) == default
    assert krea_ideogram.fitted_schedule(default, 8) == [7.0] * 7 + [3.0]
    assert krea_ideogram.fitted_schedule(default, 2) == [7.0, 7.0]
    assert krea_ideogram.fitted_schedule(default, 96) == [7.0] * 90 + [3.0] * 6


def test_ideogram4_is_recognised_and_guides_by_its_schedule(engine: Engine) -> None:
    first = run(engine, "ideogram4", steps=8)
    backend = backend_of(engine, "ideogram4")
    assert backend.describe()["pipeline"] == "Ideogram4Pipeline"
    defaults = backend.defaults
    assert (defaults.width, defaults.height, defaults.cfg_scale) == (2048, 2048, None)
    assert defaults.size_multiple == 16
    assert first.request is not None and first.request.cfg_scale is None
    assert not differ(first, run(engine, "ideogram4", steps=8))
    # the schedule at 8 steps is 7.0 then 3.0 for the last: not a constant 7
    assert differ(first, run(engine, "ideogram4", steps=8, cfg_scale=7.0))
    # at 2 steps it is 7.0 throughout: the same as the constant
    assert not differ(run(engine, "ideogram4"), run(engine, "ideogram4", cfg_scale=7.0))
    # the YAML's cfg_scale is a constant scale too; the request's wins over it
    assert not differ(run(engine, "ideogram4-cfg"), run(engine, "ideogram4", cfg_scale=4.0))
    assert not differ(
        run(engine, "ideogram4-cfg", cfg_scale=7.0), run(engine, "ideogram4", cfg_scale=7.0)
    )


def test_ideogram4_every_parameter_changes_the_image(engine: Engine) -> None:
    base = run(engine, "ideogram4")
    assert differ(base, run(engine, "ideogram4", seed=4))
    assert differ(base, run(engine, "ideogram4", steps=3))
    assert differ(base, run(engine, "ideogram4", prompt="a heron in the reeds"))
    assert differ(base, run(engine, "ideogram4", cfg_scale=2.0))
    assert differ(base, run(engine, "ideogram4", extra={"shift": 3.0}))
    assert differ(base, run(engine, "ideogram4", extra={"mu": 1.0}))
    # std spreads the logit-normal sigmas around mu: 2 steps sit at its 0 and infinities
    three = run(engine, "ideogram4", steps=3)
    assert differ(three, run(engine, "ideogram4", steps=3, extra={"std": 1.0}))
    schedule = run(engine, "ideogram4", extra={"guidance_schedule": [5.0, 2.0]})
    assert differ(base, schedule)
    assert run(engine, "ideogram4", width=48, height=SIDE).images[0].size == (48, SIDE)
    for sampler in ("unipc", "lcm"):
        assert differ(base, run(engine, "ideogram4", scheduler=sampler))


def test_ideogram4_refuses_what_it_cannot_do(engine: Engine) -> None:
    refused(lambda: run(engine, "ideogram4", negative_prompt="x"), "no negative prompt")
    refused(lambda: run(engine, "ideogram4", prompt="an otter|blurry"), "no negative prompt")
    refused(lambda: run(engine, "ideogram4", width=40), "multiples of 16")
    refused(lambda: run(engine, "ideogram4", extra={"guidance": 3.0}), "no separate distilled")
    refused(lambda: run(engine, "ideogram4", scheduler="heun"), "own sigmas", "euler")
    refused(lambda: run(engine, "ideogram4", scheduler="dpmpp_2m"), "own sigmas")
    refused(
        lambda: run(engine, "ideogram4", cfg_scale=3.0, extra={"guidance_schedule": [5.0, 2.0]}),
        "exclude each other",
    )
    refused(
        lambda: run(engine, "ideogram4-cfg", extra={"guidance_schedule": [5.0, 2.0]}),
        "exclude each other",
    )
    refused(
        lambda: run(engine, "ideogram4", extra={"guidance_schedule": [5.0]}), "one guidance scale"
    )
    refused(lambda: run(engine, "ideogram4", extra={"guidance_scale": 3.0}), "as cfg_scale")
    refused(
        lambda: run(engine, "ideogram4", extra={"prompt_upsampling_temperature": 0.5}),
        "prompt_enhance",
    )
    refused(lambda: run(engine, "ideogram4", prompt="otter " * 20), "max_sequence_length")
    refused(lambda: run(engine, "ideogram4", init_image=noise(0, SIDE)), "img2img")


def test_ideogram4_equals_the_bare_pipeline_call(engine: Engine) -> None:
    common = {"max_sequence_length": IDEOGRAM_TOKENS}
    constant = run(engine, "ideogram4", seed=8, cfg_scale=4.0)
    theirs = bare(
        "Ideogram4Pipeline",
        "tiny_ideogram4_path",
        8,
        num_inference_steps=2,
        guidance_scale=4.0,
        guidance_schedule=None,
        **common,
    )
    assert np.abs(pixels(constant) - theirs).max() <= 1
    scheduled = run(engine, "ideogram4", seed=8, steps=8)
    theirs = bare(
        "Ideogram4Pipeline",
        "tiny_ideogram4_path",
        8,
        num_inference_steps=8,
        guidance_schedule=[7.0] * 7 + [3.0],
        **common,
    )
    assert np.abs(pixels(scheduled) - theirs).max() <= 1
    # at its own 48 steps, no guidance keyword at all: the pipeline's defaults
    own = run(engine, "ideogram4", seed=8, steps=48)
    theirs = bare("Ideogram4Pipeline", "tiny_ideogram4_path", 8, num_inference_steps=48, **common)
    assert np.abs(pixels(own) - theirs).max() <= 1


def test_ideogram4_prompt_enhance(engine: Engine) -> None:
    plain = run(engine, "ideogram4", seed=8)
    enhanced = run(engine, "ideogram4", seed=8, extra={"prompt_enhance": True})
    assert differ(plain, enhanced)
    assert not differ(enhanced, run(engine, "ideogram4-enhanced", seed=8))
    assert not differ(
        plain, run(engine, "ideogram4-enhanced", seed=8, extra={"prompt_enhance": False})
    )
    assert differ(
        enhanced,
        run(
            engine,
            "ideogram4",
            seed=8,
            extra={"prompt_enhance": True, "prompt_upsampling_temperature": 0.5},
        ),
    )
    theirs = bare(
        "Ideogram4Pipeline",
        "tiny_ideogram4_path",
        8,
        num_inference_steps=2,
        max_sequence_length=IDEOGRAM_TOKENS,
        guidance_schedule=[7.0, 7.0],
        prompt_upsampling=True,
    )
    assert np.abs(pixels(enhanced) - theirs).max() <= 1
    # without the enhancer head: off works, on is refused naming the component
    assert run(engine, "ideogram4-headless").images
    refused(
        lambda: run(engine, "ideogram4-headless", extra={"prompt_enhance": True}),
        "prompt_enhancer_head",
    )
    refused(
        lambda: run(engine, "ideogram4-headless", extra={"prompt_upsampling": True}),
        "prompt_enhancer_head",
    )


def test_ideogram4_memory_estimate_counts_the_unconditional_transformer(tmp_path: Path) -> None:
    full = Path(tiny.tiny_ideogram4_headless_path())
    alone = tmp_path / "no-unconditional"
    shutil.copytree(full, alone, ignore=shutil.ignore_patterns("unconditional_transformer"))
    for name, path in (("full", full), ("alone", alone)):
        (tmp_path / f"{name}.yaml").write_text(
            f"name: {name}\nbackend: diffusers\nparameters:\n  model: {path}\n", encoding="utf-8"
        )
    runtime = RuntimeSettings(device="cpu")
    with_it = memory.estimate(load_config_file(tmp_path / "full.yaml", tmp_path), runtime)
    without = memory.estimate(load_config_file(tmp_path / "alone.yaml", tmp_path), runtime)
    assert with_it is not None and without is not None
    itemsize = memory.load_itemsize(load_config_file(tmp_path / "full.yaml", tmp_path), "ram")
    weights = sum(
        memory.safetensors_bytes(file, itemsize)
        for file in (full / "unconditional_transformer").glob("*.safetensors")
    )
    assert weights > 0
    assert abs(with_it.bytes - without.bytes - weights * (1 + memory.ACTIVATION_MARGIN)) <= 1
