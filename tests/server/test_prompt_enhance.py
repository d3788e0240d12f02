"""`prompt_enhance`, the switch of a model's own prompt enhancer, from each way in: the OpenAI
field and the CLI flag reach the engine as the request's setting (or leave the YAML's in force
when not given), the YAML option and its pipeline-named aliases agree or are refused, and a model
without an enhancer refuses it by name on both engines. The families that have one (Ideogram 4,
ERNIE-Image, LTX-2) test that it acts in their own modules."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from localimg.backends.diffusers.options import parse_options
from localimg.cli import app
from localimg.config import config_from_dict
from localimg.engine import Engine, EngineSettings
from localimg.errors import ConfigError, InvalidRequest
from localimg.requests import ImageRequest
from tests.support.served import Served, ServeSpec, captured, tiny_models


@pytest.fixture(scope="module")
def serve_spec(tiny_sd: Path) -> ServeSpec:
    return ServeSpec(models=tiny_models(tiny_sd), in_process=True)


@pytest.mark.parametrize("value", [True, False])
def test_the_openai_field_reaches_the_engine(
    served: Served, received: list[ImageRequest], value: bool
) -> None:
    body = {"model": "tiny", "prompt": "an otter", "prompt_enhance": value}
    assert captured(served.post("/v1/images/generations", body), received).extra == {
        "prompt_enhance": value
    }


def test_left_out_it_leaves_the_yaml_in_force(served: Served, received: list[ImageRequest]) -> None:
    body = {"model": "tiny", "prompt": "an otter"}
    assert (
        "prompt_enhance"
        not in captured(served.post("/v1/images/generations", body), received).extra
    )


def test_a_model_without_an_enhancer_refuses_it_over_http(served: Served) -> None:
    body = {"model": "tiny", "prompt": "an otter", "prompt_enhance": True, "size": "64x64"}
    response = served.post("/v1/images/generations", body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "prompt_enhance"
    assert "Ideogram 4, ERNIE-Image, LTX-2" in error["message"]


def test_the_cli_flag_is_refused_in_one_line_on_a_model_without_one(tiny_sd: Path) -> None:
    args = ["generate", "an otter", "-m", str(tiny_sd), "--steps", "1", "--prompt-enhance"]
    result = CliRunner().invoke(app, [*args, "-o", "unused.png"])
    assert result.exit_code != 0
    assert "prompt_enhance" in result.output and "Traceback" not in result.output


def test_a_family_without_an_enhancer_names_itself(tmp_path: Path) -> None:
    from tests.support.tiny_families import tiny_z_image_path

    (tmp_path / "z.yaml").write_text(
        f"name: z\nbackend: diffusers\nparameters:\n  model: {tiny_z_image_path()}\nstep: 1\n"
        "options:\n- prompt_enhance:false\n",
        encoding="utf-8",
    )
    engine = Engine(EngineSettings(models_path=tmp_path))
    try:
        request = ImageRequest(prompt="an otter", width=32, height=32, seed=1)
        with pytest.raises(InvalidRequest, match="Z-Image has no prompt enhancer of its own"):
            engine.generate("z", request)
    finally:
        engine.close()


def test_the_ggml_engine_refuses_it_as_a_request_setting() -> None:
    from localimg.backends.ggml.backend import GgmlBackend

    with pytest.raises(InvalidRequest, match="does not take 'prompt_enhance'"):
        GgmlBackend._check_extra({"prompt_enhance": True})


@pytest.mark.parametrize("alias", ["prompt_upsampling", "use_pe", "enable_prompt_enhancement"])
def test_the_pipelines_own_names_are_aliases_that_must_agree(tmp_path: Path, alias: str) -> None:
    def options(*pairs: str) -> object:
        data = {"name": "m", "backend": "diffusers", "parameters": {"model": "x"}}
        config = config_from_dict(
            {**data, "options": list(pairs)}, where="m.yaml", models_path=tmp_path
        )
        return parse_options(config)

    assert options(f"{alias}:true").prompt_enhance is True  # type: ignore[attr-defined]
    assert options(f"{alias}:true", "prompt_enhance:true").prompt_enhance is True  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=f"{alias}:false disagrees with prompt_enhance:true"):
        options(f"{alias}:false", "prompt_enhance:true")
