"""merge_request: request > YAML > backend defaults; OpenAI quality on the model's own steps."""

from __future__ import annotations

from typing import Any

import pytest

from localimg.backends.base import BackendDefaults
from localimg.config import config_from_dict
from localimg.engine import merge_request
from localimg.errors import InvalidRequest
from localimg.requests import MAX_PROMPT_CHARS, ImageRequest

GGML_DEFAULTS = BackendDefaults(width=512, height=512, steps=20, cfg_scale=7.0, size_multiple=64)


def steps_for(quality: str | None, yaml: dict[str, object] | None = None, **request: Any) -> int:
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


def merged_cache(
    yaml_options: list[str], **request: object
) -> tuple[str | None, dict[str, object], dict[str, object]]:
    config = config_from_dict({"name": "m", "options": yaml_options}, where="m.yaml")
    merged = merge_request(ImageRequest(prompt="otter", **request), config, GGML_DEFAULTS)  # type: ignore[arg-type]
    return merged.cache, dict(merged.cache_options), dict(merged.extra)


def test_the_yaml_cache_and_its_knobs_reach_the_request_not_the_pipeline_keywords() -> None:
    cache, knobs, extra = merged_cache(["cache:First_Block_Cache", "cache_threshold:0.2", "eta:1"])
    assert (cache, knobs) == ("first_block_cache", {"threshold": 0.2})
    assert extra == {"eta": 1}  # cache keys never become pipeline keywords


def test_a_requests_knobs_win_over_the_yamls_for_the_same_method() -> None:
    yaml = ["cache:mag_cache", "cache_threshold:0.2", "cache_max_skip_steps:2"]
    assert merged_cache(yaml, cache_options={"threshold": 0.5})[:2] == (
        "mag_cache",
        {"threshold": 0.5, "max_skip_steps": 2},
    )
    assert merged_cache(yaml, cache="mag_cache", cache_options={"threshold": 0.5})[1] == {
        "threshold": 0.5,
        "max_skip_steps": 2,
    }


def test_another_method_in_the_request_drops_the_yamls_knobs() -> None:
    yaml = ["cache:mag_cache", "cache_threshold:0.2"]
    assert merged_cache(yaml, cache="first_block_cache")[:2] == ("first_block_cache", {})


def test_none_turns_off_the_yamls_cache() -> None:
    assert merged_cache(["cache:mag_cache", "cache_threshold:0.2"], cache="none")[:2] == (None, {})
    assert merged_cache([], cache="off")[:2] == (None, {})


def test_knobs_without_a_method_are_refused_not_dropped() -> None:
    with pytest.raises(InvalidRequest, match="need a cache method"):
        merged_cache([], cache_options={"threshold": 0.1})
    with pytest.raises(InvalidRequest, match="turns caching off"):
        merged_cache(["cache:mag_cache"], cache="none", cache_options={"threshold": 0.1})


def test_cache_fields_are_checked_and_parsed() -> None:
    from localimg.requests import parse_cache

    assert parse_cache("TaylorSeer") == ("taylorseer", {})
    assert parse_cache({"method": "easycache", "threshold": 0.3}) == (
        "easycache",
        {"threshold": 0.3},
    )
    assert parse_cache('{"method": "ucache", "start": 0.1}') == ("ucache", {"start": 0.1})
    assert parse_cache(None) == (None, {})
    with pytest.raises(InvalidRequest, match="not a method name"):
        ImageRequest(prompt="otter", cache="first block")
    with pytest.raises(InvalidRequest, match="is not a number"):
        ImageRequest(prompt="otter", cache="x", cache_options={"threshold": {"a": 1}})
    with pytest.raises(InvalidRequest, match="not a JSON object"):
        parse_cache("{nope")
    with pytest.raises(InvalidRequest, match="a method name or an object"):
        parse_cache(5)


def merged_controls(yaml: dict[str, object], *units: Any) -> tuple[Any, ...]:
    config = config_from_dict({"name": "m", **yaml}, where="m.yaml")
    request = ImageRequest(prompt="otter", controls=tuple(units))
    return merge_request(request, config, GGML_DEFAULTS).controls


def control_image() -> Any:
    from PIL import Image

    return Image.new("RGB", (64, 64))


def test_a_control_unit_takes_the_yamls_control_net_and_strength_unless_it_names_its_own() -> None:
    from localimg.requests import ControlUnit

    yaml = {"control_net": "canny", "control_strength": 0.6}
    (unit,) = merged_controls(yaml, ControlUnit(control_image()))
    assert (unit.net, unit.strength) == ("canny", 0.6)
    (unit,) = merged_controls(yaml, ControlUnit(control_image(), net="depth", strength=0.0))
    assert (unit.net, unit.strength) == ("depth", 0.0)
    (unit,) = merged_controls({"diffusers": {"control_net": "pose"}}, ControlUnit(control_image()))
    assert (unit.net, unit.strength) == ("pose", 1.0)


def test_a_control_image_without_any_control_net_is_refused_naming_both_places() -> None:
    from localimg.requests import ControlUnit

    with pytest.raises(InvalidRequest, match=r"control_net: in the model's YAML") as caught:
        merged_controls({}, ControlUnit(control_image()))
    assert caught.value.param == "control_net"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"strength": 2.5}, "control_strength"),
        ({"strength": -0.1}, "control_strength"),
        ({"start": 0.5, "end": 0.5}, "control_start"),
        ({"end": 1.2}, "control_start"),
        ({"processor_res": 8}, "processor_res"),
        ({"net": " "}, "control_net"),
    ],
)
def test_a_control_unit_out_of_range_is_refused_naming_its_field(
    fields: dict[str, Any], param: str
) -> None:
    from localimg.requests import ControlUnit

    with pytest.raises(InvalidRequest) as caught:
        ControlUnit(control_image(), **fields)
    assert caught.value.param == param


def test_two_different_control_nets_in_one_yaml_are_refused() -> None:
    from localimg.errors import ConfigError

    with pytest.raises((ConfigError, ValueError), match="disagree"):
        config_from_dict(
            {"name": "m", "control_net": "a", "diffusers": {"control_net": "b"}}, where="m.yaml"
        )


def merged_hires(yaml: dict[str, Any], hires: Any = None, **request: Any) -> Any:
    config = config_from_dict({"name": "m", **yaml}, where="m.yaml")
    fields = {"width": 64, "height": 96, "steps": 6, **request}
    asked = ImageRequest(prompt="otter", hires=hires, **fields)
    return merge_request(asked, config, GGML_DEFAULTS).hires


def test_hires_takes_the_request_then_the_yaml_then_a1111s_defaults() -> None:
    from localimg.requests import HiresFix

    assert merged_hires({}) is None
    plain = merged_hires({}, HiresFix())
    assert (plain.width, plain.height, plain.scale) == (128, 192, 2.0)
    assert (plain.upscaler, plain.steps, plain.denoise) == ("latent", 6, 0.7)
    yaml = {"hires": {"scale": 1.5, "upscaler": "Lanczos", "steps": 3, "denoise": 0.4}}
    on = merged_hires(yaml)  # the block turns it on for every request
    assert (on.width, on.height, on.upscaler, on.steps, on.denoise) == (64, 128, "lanczos", 3, 0.4)
    mine = merged_hires(yaml, HiresFix(scale=2, denoise=0.5))
    assert (mine.width, mine.height, mine.steps, mine.denoise) == (128, 192, 3, 0.5)
    assert merged_hires(yaml, HiresFix(enabled=False)) is None
    assert merged_hires({"hires": {"enabled": False, "scale": 2}}) is None


def test_a_hires_size_wins_over_scale_and_one_side_keeps_the_aspect() -> None:
    from localimg.requests import HiresFix

    both = merged_hires({}, HiresFix(scale=3, width=256, height=200))
    assert (both.width, both.height, both.scale) == (256, 192, None)  # multiples of 64
    wide = merged_hires({}, HiresFix(width=128))
    assert (wide.width, wide.height) == (128, 192)
    yaml_size = merged_hires({"hires": {"size": "256x384"}})
    assert (yaml_size.width, yaml_size.height) == (256, 384)


def test_hires_values_out_of_range_are_refused_naming_the_field() -> None:
    from localimg.requests import HiresFix

    for fields, param in (
        ({"scale": 9}, "hires_scale"),
        ({"scale": 0.5}, "hires_scale"),
        ({"denoise": 0}, "hires_denoise"),
        ({"steps": -1}, "hires_steps"),
        ({"width": 5000}, "hires_size"),
        ({"upscaler": " "}, "hires_upscaler"),
    ):
        with pytest.raises(InvalidRequest) as caught:
            HiresFix(**fields)
        assert caught.value.param == param
    with pytest.raises(InvalidRequest, match="at most 4096") as caught:
        merged_hires({}, HiresFix(scale=8), width=1024, height=1024)
    assert caught.value.param == "hires_scale"


def test_hires_upscaler_names_keep_a_models_case_and_fold_the_built_in_ones() -> None:
    from localimg.backends.side import default_registry
    from localimg.requests import HiresFix

    assert merged_hires({}, HiresFix(upscaler="4x-UltraSharp")).upscaler == "4x-UltraSharp"
    assert merged_hires({}, HiresFix(upscaler="Lanczos")).upscaler == "lanczos"
    assert merged_hires({}, HiresFix(upscaler="Latent (Bicubic)")).upscaler == "latent (bicubic)"
    registry = default_registry()
    assert registry.resolve("upscaler", "LANCZOS") == "lanczos"
    assert registry.resolve("upscaler", "unknown") == "unknown"
