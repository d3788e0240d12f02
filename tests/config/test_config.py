"""Model YAML parsing, model references and the models directory (no torch needed)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from localimg.config import (
    DEFAULT_HUB_MODEL,
    default_model_ref,
    load_config_file,
    model_source,
    resolve_model,
    save_config,
    scan_models,
)
from localimg.config.options import parse_options
from localimg.errors import ConfigError, ModelNotFound, ModelUnavailable

SEED_DIR = Path(__file__).parent.parent / "data" / "seed"


@pytest.mark.parametrize("path", sorted(SEED_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_seed_example_parses(path: Path) -> None:
    config = load_config_file(path)
    assert config.name
    assert config.backend in {"diffusers", "stablediffusion-ggml"}


def test_seed_keys_are_read(caplog: pytest.LogCaptureFixture) -> None:
    local = load_config_file(SEED_DIR / "stablediffusion-2.yaml")
    assert local.model == "toonyou_beta6.safetensors"
    assert local.step == 30 and local.cfg_scale == 8 and local.f16 and local.cuda
    assert local.diffusers.pipeline_type == "StableDiffusionPipeline"
    assert local.diffusers.scheduler_type == "k_dpmpp_sde"
    assert local.diffusers.clip_skip == 11
    assert local.enabled_parameters == {"negative_prompt", "num_inference_steps", "clip_skip"}
    ggml = load_config_file(SEED_DIR / "stablediffusion.yaml")
    assert ggml.backend == "stablediffusion-ggml" and ggml.cfg_scale == 4.5
    assert ggml.parsed_options() == {
        "clip_l_path": "clip_l.safetensors",
        "clip_g_path": "clip_g.safetensors",
        "t5xxl_path": "t5xxl-Q5_0.gguf",
        "sampler": "euler",
    }
    cpu = load_config_file(SEED_DIR / "animagine-xl.yaml")
    assert cpu.use_cuda is False and cpu.f16 is False
    gpu = load_config_file(SEED_DIR / "txt2vid.yaml")
    assert gpu.use_cuda is True


def test_options_are_typed_and_values_keep_colons() -> None:
    parsed = parse_options(
        [
            "cfg_scale:6",
            "eta:0.5",
            "flag",
            "on:true",
            "off:no",
            "url:http://host:8080/x",
            "sizes:[1, 2]",
            "quoted:'007'",
            "empty:",
            "neg:-3",
            "sci:1e-3",
        ]
    )
    assert parsed == {
        "cfg_scale": 6,
        "eta": 0.5,
        "flag": True,
        "on": True,
        "off": False,
        "url": "http://host:8080/x",
        "sizes": [1, 2],
        "quoted": "007",
        "empty": "",
        "neg": -3,
        "sci": 0.001,
    }
    assert type(parsed["cfg_scale"]) is int and type(parsed["eta"]) is float


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_bad_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.yaml", "name: x\nparameters: [unclosed\n")
    with pytest.raises(ConfigError) as err:
        load_config_file(path)
    assert str(path) in err.value.message and "line" in err.value.message


@pytest.mark.parametrize(
    "body,key",
    [
        ("step: many", "step"),
        ("cfg_scale: [1]", "cfg_scale"),
        ("f16: maybe", "f16"),
        ("diffusers:\n  clip_skip: lots", "diffusers.clip_skip"),
        ("options: cfg_scale:6", "options"),
        ("size: big", "size"),
        ("diffusers:\n  enable_parameters: negative_prompt,bogus", "diffusers.enable_parameters"),
    ],
)
def test_wrong_types_name_file_and_key(tmp_path: Path, body: str, key: str) -> None:
    path = write(tmp_path, "m.yaml", f"name: m\nparameters:\n  model: a/b\n{body}\n")
    with pytest.raises(ConfigError) as err:
        load_config_file(path)
    assert str(path) in err.value.message and f"'{key}'" in err.value.message


def test_unknown_and_localai_only_keys_warn(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(
        tmp_path,
        "m.yaml",
        "name: m\nparameters:\n  model: a/b\n  temperature: 0.2\ncontext_size: 4096\nwhatever: 1\n",
    )
    with caplog.at_level(logging.WARNING, logger="localimg"):
        config = load_config_file(path)
    assert config.name == "m"
    text = caplog.text
    assert "context_size" in text and "LocalAI key" in text
    assert "whatever" in text and "unknown key" in text
    assert "parameters.temperature" in text


def test_name_defaults_to_file_stem(tmp_path: Path) -> None:
    path = write(tmp_path, "otter.yaml", "parameters:\n  model: a/b\n")
    assert load_config_file(path).name == "otter"


def test_resolution_order_and_errors(tmp_path: Path, tiny_sd: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    write(models, "sd.yaml", "name: my-sd\nparameters:\n  model: owner/repo\n")
    assert resolve_model("my-sd", models).model == "owner/repo"  # by YAML name
    assert resolve_model("sd", models).name == "my-sd"  # by file stem
    assert resolve_model(str(models / "sd.yaml"), models).name == "my-sd"  # by YAML path
    folder = resolve_model(str(tiny_sd), models)  # local folder
    assert model_source(folder).kind == "folder"
    (models / "w.safetensors").write_bytes(b"x")
    single = resolve_model("w.safetensors", models)  # a file in the models dir
    assert model_source(single).kind == "file"
    hub = resolve_model("stabilityai/sd-turbo", models)  # hub id, with its preset
    assert model_source(hub).kind == "hub" and hub.step == 2 and hub.cfg_scale == 0
    with pytest.raises(ModelNotFound) as err:
        resolve_model("my-sdd", models)
    assert "Did you mean my-sd" in err.value.message and "Known models: my-sd" in err.value.message
    with pytest.raises(ModelNotFound):
        resolve_model("missing.yaml", models)


def test_relative_paths_cannot_leave_models_dir(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (tmp_path / "secret.safetensors").write_bytes(b"x")
    path = write(models, "m.yaml", "name: m\nparameters:\n  model: ../secret.safetensors\n")
    with pytest.raises(ConfigError, match="outside the models directory"):
        model_source(load_config_file(path, models))
    with pytest.raises(ModelNotFound):
        resolve_model("../secret.safetensors", models)


def test_missing_model_file_is_a_clear_error(tmp_path: Path) -> None:
    path = write(tmp_path, "m.yaml", "name: m\nparameters:\n  model: nope.safetensors\n")
    with pytest.raises(ModelUnavailable, match=r"nope\.safetensors"):
        model_source(load_config_file(path))


def test_default_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOCALIMG_MODEL", raising=False)
    assert default_model_ref(tmp_path) == DEFAULT_HUB_MODEL
    write(tmp_path, "a.yaml", "name: a\nparameters:\n  model: x/a\n")
    assert default_model_ref(tmp_path) == "a"
    write(tmp_path, "b.yaml", "name: b\nparameters:\n  model: x/b\n")
    with pytest.raises(Exception, match="several models"):
        default_model_ref(tmp_path)
    monkeypatch.setenv("LOCALIMG_MODEL", "b")
    assert default_model_ref(tmp_path) == "b"


def test_save_config_round_trips(tmp_path: Path) -> None:
    config = load_config_file(SEED_DIR / "stablediffusion-2.yaml")
    target = tmp_path / "out" / "copy.yaml"
    save_config(config, target)
    again = load_config_file(target)
    assert again.model_dump() == config.model_dump()
    assert [p.name for p in target.parent.iterdir()] == ["copy.yaml"]


def test_scan_keeps_going_past_a_broken_file(tmp_path: Path) -> None:
    write(tmp_path, "good.yaml", "name: good\nparameters:\n  model: a/b\n")
    write(tmp_path, "bad.yaml", "name: [\n")
    entries = {e.name: e for e in scan_models(tmp_path)}
    assert entries["good"].config is not None and entries["bad"].error is not None


def test_lora_lists(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "m.yaml",
        "name: m\nparameters:\n  model: a/b\nlora_adapters: [a.safetensors, b.safetensors]\n"
        "lora_scales: [0.5]\nlora_adapter: c.safetensors\nlora_scale: 0.25\n",
    )
    assert load_config_file(path).loras() == [
        ("a.safetensors", 0.5),
        ("b.safetensors", 1.0),
        ("c.safetensors", 0.25),
    ]


@pytest.mark.parametrize(
    ("yaml_text", "named"),
    [
        ('cfg_scale: 5\noptions: ["cfg_scale:6"]', 'cfg_scale: 5.0 and options "cfg_scale:6"'),
        ('step: 4\noptions: ["steps:8"]', 'step: 4 and options "steps:8"'),
        ('seed: 1\noptions: ["seed:2"]', 'seed: 1 and options "seed:2"'),
        ('options: ["cfg_scale:5", "guidance_scale:6"]', 'options "cfg_scale:5" and options'),
        ('diffusers:\n  scheduler_type: euler\noptions: ["scheduler:k_dpmpp_2m"]', "scheduler"),
        ('size: 256x256\noptions: ["width:512"]', 'size: 256x256 and options "width:512"'),
    ],
)
def test_a_setting_given_twice_with_different_values_is_refused(
    tmp_path: Path, yaml_text: str, named: str
) -> None:
    """Before, the YAML key won and the option was accepted and silently ignored."""
    path = tmp_path / "twice.yaml"
    path.write_text(f"name: twice\nparameters:\n  model: x\n{yaml_text}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="is set twice with different values") as info:
        load_config_file(path)
    assert str(path) in info.value.message
    assert named in info.value.message


def test_a_setting_given_twice_with_the_same_value_loads(tmp_path: Path) -> None:
    path = tmp_path / "same.yaml"
    path.write_text(
        'name: same\nparameters:\n  model: x\ncfg_scale: 6\noptions: ["cfg_scale:6", "step:4"]\n'
        "step: 4\n",
        encoding="utf-8",
    )
    assert load_config_file(path).cfg_scale == 6


def test_the_models_dir_parses_each_yaml_once_per_change(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, every request parsed every YAML (three times) and repeated each file's warnings."""
    import logging
    import os

    from localimg.config import models_dir, resolve_model

    folder = tmp_path / "models"
    folder.mkdir()
    yaml_file = folder / "a.yaml"
    yaml_file.write_text("name: a\nparameters:\n  model: x\ntemplate: chat\n", encoding="utf-8")
    (folder / "b.yaml").write_text("name: b\nparameters:\n  model: y\n", encoding="utf-8")
    owner = models_dir(folder)
    with caplog.at_level(logging.WARNING, logger="localimg"):
        for _ in range(3):
            assert [e.name for e in scan_models(folder)] == ["a", "b"]
            resolve_model("a", folder)
    assert owner.parses == 2
    warnings = [r for r in caplog.records if "template" in r.getMessage()]
    assert len(warnings) == 1

    yaml_file.write_text("name: a\nparameters:\n  model: x2\n", encoding="utf-8")
    stat = yaml_file.stat()
    os.utime(yaml_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert resolve_model("a", folder).model == "x2"
    assert owner.parses == 3
    (folder / "b.yaml").unlink()
    assert [e.name for e in scan_models(folder)] == ["a"]
