"""merge_request: request > YAML > backend defaults; OpenAI quality on the model's own steps."""

from __future__ import annotations

import pytest

from localimg.backends.base import BackendDefaults
from localimg.config import config_from_dict
from localimg.engine import merge_request
from localimg.errors import InvalidRequest
from localimg.requests import MAX_PROMPT_CHARS, ImageRequest

GGML_DEFAULTS = BackendDefaults(width=512, height=512, steps=20, cfg_scale=7.0, size_multiple=64)


def steps_for(quality: str | None, yaml: dict[str, object] | None = None, **request: int) -> int:
    config = config_from_dict({"name": "m", **(yaml or {})}, where="m.yaml")
    merged = merge_request(
        ImageRequest(prompt="otter", quality=quality, **request), config, GGML_DEFAULTS
    )
    assert merged.steps is not None
    return merged.steps


def test_quality_scales_the_backends_own_default_steps() -> None:
    """A ggml model (20 steps by default): medium must not give more steps than standard."""
    assert steps_for("low") == 10
    assert steps_for("medium") == 15
    assert steps_for("standard") == steps_for("auto") == steps_for("high") == steps_for(None) == 20
    assert steps_for("hd") == 30


def test_quality_scales_the_yaml_steps_and_an_explicit_step_count_wins() -> None:
    assert steps_for("medium", {"step": 8}) == 6
    assert steps_for("low", {"options": ["steps:12"]}) == 6
    assert steps_for("low", {"step": 8}, steps=3) == 3


def test_unknown_quality_is_refused_naming_the_allowed_values() -> None:
    with pytest.raises(InvalidRequest, match="quality 'ultra' is not one of low, medium"):
        ImageRequest(prompt="otter", quality="ultra")


@pytest.mark.parametrize("field", ["prompt", "negative_prompt"])
def test_prompts_over_the_limit_are_refused(field: str) -> None:
    long = "a" * (MAX_PROMPT_CHARS + 1)
    kwargs = {"prompt": "otter", field: long}
    with pytest.raises(
        InvalidRequest, match=f"{field} is {MAX_PROMPT_CHARS + 1} characters"
    ) as info:
        ImageRequest(**kwargs)  # type: ignore[arg-type]
    assert info.value.param == field
    ImageRequest(prompt="a" * MAX_PROMPT_CHARS)  # exactly the limit is fine
