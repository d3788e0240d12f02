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


def test_edit_references_keep_their_own_size_while_img2img_input_is_fitted() -> None:
    """img2img denoises the input at the output size; a reference edit reads it as it is."""
    from PIL import Image

    config = config_from_dict({"name": "m"}, where="m.yaml")
    first, second = Image.new("RGB", (300, 200), "red"), Image.new("RGB", (100, 100), "blue")
    fitted = merge_request(
        ImageRequest(prompt="x", init_image=first, width=512, height=512), config, GGML_DEFAULTS
    )
    assert fitted.init_image is not None and fitted.init_image.size == (512, 512)
    edit = merge_request(
        ImageRequest(
            prompt="x", init_image=first, reference_images=(second,), width=512, height=512
        ),
        config,
        GGML_DEFAULTS,
    )
    assert [image.size for image in edit.input_images] == [(300, 200), (100, 100)]
    one = merge_request(
        ImageRequest(prompt="x", init_image=first, mode="edit"), config, GGML_DEFAULTS
    )
    assert one.init_image is not None and one.init_image.size == (300, 200)
    assert (one.width, one.height) == (320, 192)  # the size still follows the input's own


def test_a_reference_edit_model_keeps_a_lone_input_image_as_it_is() -> None:
    """On a model that reads images as references, one image with mode unset is not stretched."""
    from dataclasses import replace

    from PIL import Image

    config = config_from_dict({"name": "m"}, where="m.yaml")
    image = Image.new("RGB", (300, 200), "red")
    request = ImageRequest(prompt="x", init_image=image, width=512, height=512)
    edits = replace(GGML_DEFAULTS, reference_edits=True)
    kept = merge_request(request, config, edits)
    assert kept.init_image is not None and kept.init_image.size == (300, 200)
    img2img = merge_request(request.with_(mode="img2img"), config, edits)
    assert img2img.init_image is not None and img2img.init_image.size == (512, 512)
