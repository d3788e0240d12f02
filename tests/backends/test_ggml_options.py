"""localimg/backends/ggml/options.py and lora.py: the YAML's options and prompt LoRA tags, checked
without the native library."""

from __future__ import annotations

from pathlib import Path

import pytest

from localimg.backends.ggml.lora import lora_tags
from localimg.backends.ggml.options import parse_options
from localimg.config import ModelConfig, config_from_dict
from localimg.errors import ConfigError, InvalidRequest


def ggml_config(tmp_path: Path, options: list[str]) -> ModelConfig:
    data = {
        "name": "g",
        "backend": "stablediffusion-ggml",
        "parameters": {"model": "m.gguf"},
        "options": options,
    }
    return config_from_dict(data, where="g.yaml", models_path=tmp_path)


def test_bad_option_value_names_file_key_message_and_value(tmp_path: Path) -> None:
    config = ggml_config(tmp_path, ["clip_skip:99"])
    with pytest.raises(ConfigError) as err:
        parse_options(config)
    assert err.value.message == (
        f"{config.where}: options: clip_skip: Input should be less than or equal to 24 (got 99)"
    )


def test_validator_message_has_no_value_error_prefix(tmp_path: Path) -> None:
    config = ggml_config(tmp_path, ["wtype:q9"])
    with pytest.raises(ConfigError) as err:
        parse_options(config)
    expected = f"{config.where}: options: wtype: unknown weight type; use one of"
    assert err.value.message.startswith(expected)
    assert "Value error" not in err.value.message and "(got 'q9')" in err.value.message


def test_lora_tags_resolve_files_and_refuse_escapes(tmp_path: Path) -> None:
    (tmp_path / "style.safetensors").write_bytes(b"")
    prompt, found = lora_tags("an otter <lora:style:0.5>", tmp_path)
    assert prompt == "an otter" and found == [((tmp_path / "style.safetensors").resolve(), 0.5)]
    with pytest.raises(InvalidRequest, match="outside the LoRA folder"):
        lora_tags("<lora:../x:1>", tmp_path)
    with pytest.raises(InvalidRequest, match="the weight must be a number"):
        lora_tags("<lora:style:big>", tmp_path)
