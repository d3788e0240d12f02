"""localimg/backends/diffusers/options.py: the options the diffusers backend consumes, checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from localimg.backends.diffusers.options import parse_options
from localimg.config import ModelConfig, config_from_dict
from localimg.errors import ConfigError


def with_options(tmp_path: Path, options: list[str]) -> ModelConfig:
    data = {"name": "m", "backend": "diffusers", "parameters": {"model": "x"}, "options": options}
    return config_from_dict(data, where="m.yaml", models_path=tmp_path)


def test_bad_option_value_names_where_key_message_and_value(tmp_path: Path) -> None:
    config = with_options(tmp_path, ["dtype:fp8"])
    with pytest.raises(ConfigError) as err:
        parse_options(config)
    message = err.value.message
    assert message.startswith(f"{config.where}: options: dtype: Input should be ")
    assert message.endswith("(got 'fp8')")
    assert parse_options(with_options(tmp_path, ["dtype:bf16", "vae_tiling:true"])).vae_tiling
