"""A1111 prompt weights, BREAK and long prompts on the diffusers engine (compel), end to end on
the tiny random pipelines: SD through the engine and the CLI, SDXL (a tiny one built here), and a
family whose text encoder cannot weight (the syntax is stripped and reported)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from localimg.backends.diffusers.pipeline import prompt_weights
from localimg.engine import Engine, EngineSettings
from localimg.requests import ImageRequest, ImageResult

LONG = ", ".join(f"word{i} thing" for i in range(60))  # far past 77 tokens


@pytest.fixture(scope="module")
def tiny_sd3() -> Path:
    from tests.support.tiny_sdxl_sd3 import tiny_sd3_path

    return tiny_sd3_path()


@pytest.fixture(scope="module")
def tiny_sdxl() -> Path:
    from tests.support.tiny_sdxl_sd3 import tiny_sdxl_path

    return tiny_sdxl_path()


@pytest.fixture(scope="module")
def engine(
    tmp_path_factory: pytest.TempPathFactory, tiny_sd: Path, tiny_sdxl: Path, tiny_sd3: Path
) -> Iterator[Engine]:
    from tests.support.tiny_families import TINY_FAMILIES
    from tests.support.tiny_families_flux import tiny_flux1_path

    folder = tmp_path_factory.mktemp("models")
    for name, path in (
        ("sd", tiny_sd),
        ("sdxl", tiny_sdxl),
        ("sd3", tiny_sd3),
        ("flux", tiny_flux1_path()),
        ("zimage", TINY_FAMILIES["z_image"]()),
    ):
        (folder / f"{name}.yaml").write_text(
            f"name: {name}\nbackend: diffusers\nparameters:\n  model: {path}\nstep: 2\n",
            encoding="utf-8",
        )
    engine = Engine(EngineSettings(models_path=folder))
    yield engine
    engine.close()


def run(engine: Engine, model: str, prompt: str, **fields: Any) -> ImageResult:
    fields.setdefault("seed", 7)
    return engine.generate(model, ImageRequest(prompt, width=64, height=64, **fields))


def pixels(result: ImageResult) -> np.ndarray:
    return np.asarray(result.images[0].convert("RGB"), dtype=np.int16)


def gap(a: ImageResult, b: ImageResult) -> int:
    return int(np.abs(pixels(a) - pixels(b)).max())


@pytest.mark.parametrize("model", ["sd", "sdxl", "sd3", "flux"])
def test_weight_one_draws_the_plain_prompt_and_weights_change_it(
    engine: Engine, model: str
) -> None:
    plain = run(engine, model, "an otter")
    same = gap(run(engine, model, "an (otter:1.0)"), plain)
    assert same <= 2
    assert gap(run(engine, model, "an (otter:3)"), plain) > same
    assert gap(run(engine, model, "an [[[otter]]]", negative_prompt="(blur:2)"), plain) > same


@pytest.mark.parametrize("model", ["sd", "sdxl", "sd3"])
def test_long_prompts_and_break_are_encoded_past_77_tokens(engine: Engine, model: str) -> None:
    long = run(engine, model, LONG)
    tail = run(engine, model, LONG + ", a purple elephant")  # past 77 tokens: still seen
    assert gap(long, tail) > 0
    broken = run(engine, model, "an otter BREAK a river", negative_prompt=LONG)
    assert broken.images and gap(broken, run(engine, model, "an otter a river")) > 0


def test_flux_weights_both_encoders_and_reads_break_as_a_separator(engine: Engine) -> None:
    """FLUX.1: a weight moves T5's states, CLIP's pooled vector reads the plain words (as in
    A1111 and ComfyUI); BREAK only separates words
    (T5 reads one 512-token window); no syntax is reported as ignored."""
    from diffusers import FluxPipeline

    from localimg.backends.diffusers.pipeline import tasks
    from tests.support.tiny_families_flux import tiny_flux1_path

    pipe = FluxPipeline.from_pretrained(str(tiny_flux1_path()))
    params = tasks.call_params(pipe)
    plain = pipe.encode_prompt("an otter", "an otter", max_sequence_length=512)
    same, ignored = prompt_weights.prompt_kwargs(pipe, params, "an (otter:1.0)", None, 0)
    assert ignored == [] and set(same) == {"prompt_embeds", "pooled_prompt_embeds"}
    assert (same["prompt_embeds"] - plain[0]).abs().max() < 1e-4
    assert (same["pooled_prompt_embeds"] - plain[1]).abs().max() < 1e-4
    heavy, _ = prompt_weights.prompt_kwargs(pipe, params, "an (otter:2)", "(blur:1.5)", 0)
    assert (heavy["prompt_embeds"] - plain[0]).abs().max() > 1e-3
    assert (heavy["pooled_prompt_embeds"] - plain[1]).abs().max() < 1e-4
    assert heavy["negative_prompt_embeds"].shape == plain[0].shape
    short, _ = prompt_weights.prompt_kwargs(pipe, params, "(otter)", None, 0, 64)
    assert short["prompt_embeds"].shape[1] == 64
    broken = run(engine, "flux", "an otter BREAK a river")
    assert broken.ignored == [] and gap(broken, run(engine, "flux", "an otter a river")) <= 2


@pytest.mark.parametrize("text", ["(unbalanced", "word)", "(word:abc)", "\\(x\\)", "((((", "]]"])
def test_odd_syntax_never_fails(engine: Engine, text: str) -> None:
    assert run(engine, "sd", f"an otter {text}", negative_prompt=text).images


def test_plain_prompts_take_the_unweighted_path(tiny_sd: Path) -> None:
    """No syntax and within 77 tokens: the call gets the strings, as before this feature."""
    from diffusers import StableDiffusionPipeline

    from localimg.backends.diffusers.pipeline import tasks

    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_sd))
    params = tasks.call_params(pipe)
    plain, ignored = prompt_weights.prompt_kwargs(pipe, params, "an otter", "blur", clip_skip=0)
    assert plain == {"prompt": "an otter", "negative_prompt": "blur"} and ignored == []
    plain, _ = prompt_weights.prompt_kwargs(pipe, params, "an otter", None, clip_skip=0)
    assert plain == {"prompt": "an otter"}
    weighted, _ = prompt_weights.prompt_kwargs(pipe, params, "(otter)", None, clip_skip=0)
    assert set(weighted) == {"prompt_embeds", "negative_prompt_embeds"}
    long, _ = prompt_weights.prompt_kwargs(pipe, params, LONG, "x", clip_skip=0)
    assert long["prompt_embeds"].shape == long["negative_prompt_embeds"].shape
    assert long["prompt_embeds"].shape[1] > 77 and long["prompt_embeds"].shape[1] % 77 == 0


def test_an_llm_family_strips_the_syntax_and_says_so(engine: Engine) -> None:
    weighted = run(engine, "zimage", "(red:1.3) cat")
    plain = run(engine, "zimage", "red cat")
    assert gap(weighted, plain) == 0
    assert weighted.ignored == [prompt_weights.NOTE]
    assert plain.ignored == []


def test_strip_keeps_the_words() -> None:
    assert prompt_weights.strip_syntax("(red:1.3) cat BREAK [dog]") == "red cat dog"
    assert prompt_weights.strip_syntax("a cat") == "a cat"
    assert prompt_weights.strip_syntax(None) is None


def test_the_cli_draws_a_weighted_long_prompt(models_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from localimg.cli import app

    out = tmp_path / "out.png"
    result = CliRunner().invoke(
        app,
        [
            "generate",
            f"an (otter:1.4), {LONG} BREAK a river",
            "-m",
            "tiny",
            "-o",
            str(out),
            "--steps",
            "2",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert out.is_file()
    assert json.loads(result.stdout[result.stdout.index("{") :])["model"] == "tiny"


def test_the_cli_warns_when_a_model_cannot_weight(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from localimg.cli import app
    from tests.support.tiny_families import TINY_FAMILIES

    models = tmp_path / "models"
    models.mkdir()
    (models / "zimage.yaml").write_text(
        f"name: zimage\nbackend: diffusers\nparameters:\n  model: {TINY_FAMILIES['z_image']()}\n"
        "step: 2\n",
        encoding="utf-8",
    )
    out = tmp_path / "out.png"
    args = ["generate", "(red:1.3) cat", "-m", "zimage", "-o", str(out), "-s", "64x64"]
    result = CliRunner().invoke(app, [*args, "--models-path", str(models)])
    assert result.exit_code == 0, result.output
    assert "warning: ignored prompt-weights" in result.output


def test_the_server_names_stripped_weights_in_its_header(tmp_path: Path, tiny_sd: Path) -> None:
    from tests.support.served import ServeSpec, serve_in_process
    from tests.support.tiny_families import TINY_FAMILIES

    def models(folder: Path) -> Path:
        folder.mkdir(parents=True)
        for name, path in (("tiny", tiny_sd), ("zimage", TINY_FAMILIES["z_image"]())):
            (folder / f"{name}.yaml").write_text(
                f"name: {name}\nbackend: diffusers\nparameters:\n  model: {path}\nstep: 2\n",
                encoding="utf-8",
            )
        return folder

    body = {"prompt": "(red:1.3) cat", "size": "64x64", "response_format": "b64_json"}
    a1111 = {"prompt": "(red:1.3) cat", "width": 64, "height": 64, "steps": 2}
    with serve_in_process(ServeSpec(models=models, in_process=True), tmp_path) as served:
        stripped = served.post("/v1/images/generations", {**body, "model": "zimage"})
        weighted = served.post("/v1/images/generations", {**body, "model": "tiny"})
        settings = {"override_settings": {"sd_model_checkpoint": "zimage"}}
        a1111_stripped = served.post("/sdapi/v1/txt2img", {**a1111, **settings})
    assert stripped.status_code == 200, stripped.text
    assert stripped.headers["X-Localimg-Ignored"] == prompt_weights.NOTE
    assert weighted.status_code == 200, weighted.text
    assert "X-Localimg-Ignored" not in weighted.headers
    assert a1111_stripped.status_code == 200, a1111_stripped.text
    assert a1111_stripped.headers["X-Localimg-Ignored"] == prompt_weights.NOTE


def test_weighted_prompts_run_alone_in_a_batch() -> None:
    from localimg.engine.batching import batch_key

    assert batch_key(ImageRequest("an otter")) is not None
    assert batch_key(ImageRequest("an (otter:1.2)")) is None
    assert batch_key(ImageRequest("an otter", negative_prompt="[blur]")) is None


def test_a_batch_call_gets_plain_strings_back() -> None:
    from localimg.backends.diffusers.pipeline import call_args

    kwargs = {"prompt_embeds": 1, "negative_prompt_embeds": 2, "num_inference_steps": 3}
    call_args.set_batch_prompts(kwargs, ["a", "b"])
    assert kwargs == {"prompt": ["a", "b"], "num_inference_steps": 3}


def test_textual_inversions_spread_to_their_vectors(tiny_sd: Path) -> None:
    """A multi-vector embedding's token reads as diffusers' own encoding reads it."""
    import torch
    from diffusers import StableDiffusionPipeline

    from localimg.backends.diffusers.pipeline import tasks

    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_sd))
    torch.manual_seed(0)
    pipe.load_textual_inversion({"<style>": torch.randn(3, 32)})
    params = tasks.call_params(pipe)
    found, _ = prompt_weights.prompt_kwargs(pipe, params, "an (<style> otter:1.0)", None, 0)
    expected, _ = pipe.encode_prompt("an <style> otter", "cpu", 1, False)
    assert torch.allclose(found["prompt_embeds"], expected, atol=1e-5)
