"""The one place where a request, the model's YAML and the backend's defaults meet.

request > YAML keys > YAML `options` > backend defaults, field by field; OpenAI's `quality`
scales the model's own step count here because only here is the backend's default known.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from localimg.backends.base import BackendDefaults
from localimg.config import ModelConfig
from localimg.config.options import OPTION_ALIASES, cache_from_options, is_cache_key
from localimg.errors import InvalidRequest
from localimg.media import conditioning
from localimg.request_parts import (
    HIRES_DEFAULT_DENOISE,
    HIRES_DEFAULT_SCALE,
    HIRES_LATENT,
    MAX_SIDE,
    HiresFix,
    is_latent_upscaler,
)
from localimg.requests import (
    CACHE_OFF,
    QUALITY_STEP_FACTORS,
    ControlUnit,
    ImageRequest,
    parse_size,
    random_seed,
    split_prompt,
)


def merge_request(
    request: ImageRequest,
    config: ModelConfig,
    defaults: BackendDefaults,
    option_keys: frozenset[str] = frozenset(),
) -> ImageRequest:
    """Fill every unset field: request > YAML (keys, then `options`) > backend defaults.

    The result has prompt and negative prompt split (`positive|negative`), a concrete size, steps,
    cfg scale and seed, and `extra` holding the pipeline keywords from `options` and the request.
    """
    options = config.parsed_options()
    layers = Layers(request, *split_options(options, option_keys))
    layers.extra.update(request.extra)
    pick = layers.pick
    prompt, negative = split_prompt(request.prompt, request.negative_prompt)
    width, height = merged_size(layers, config, defaults)
    steps = merged_steps(layers, config, defaults)
    cfg_scale = pick("cfg_scale", config.default_cfg_scale)
    seed = pick("seed", config.default_seed)
    try:
        cache, cache_options = merge_cache(request, options)
        return request.with_(
            prompt=prompt,
            negative_prompt=negative
            if negative is not None
            else layers.from_options.get("negative_prompt"),
            width=int(width),
            height=int(height),
            steps=int(steps),
            cfg_scale=merged_cfg(cfg_scale, defaults),
            seed=int(seed) if seed is not None else random_seed(),
            scheduler=pick("scheduler", config.diffusers.scheduler_type),
            clip_skip=pick("clip_skip", config.diffusers.clip_skip),
            strength=pick("strength"),
            num_frames=pick("num_frames"),
            fps=pick("fps"),
            extra=layers.extra,
            cache=cache,
            cache_options=cache_options,
            controls=merged_controls(request, config),
            hires=merged_hires(request, config, (int(width), int(height), int(steps)), defaults),
            **fitted_inputs(request, defaults, int(width), int(height)),
        )
    except (TypeError, ValueError) as exc:
        from localimg.errors import ConfigError

        raise ConfigError(f"{config.where}: options: {exc}") from None


def merged_cfg(cfg_scale: Any, defaults: BackendDefaults) -> float | None:
    """The request's or YAML's scale, else the backend's; None where the backend has none (the
    model's own guidance schedule runs)."""
    value = cfg_scale if cfg_scale is not None else defaults.cfg_scale
    return float(value) if value is not None else None


def split_options(
    options: dict[str, Any], option_keys: frozenset[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The YAML `options` as (request fields they set, under their request names; pipeline
    keywords for `extra`); the backend's own option keys and the cache keys are neither."""
    from_options: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in options.items():
        if key in OPTION_ALIASES:
            from_options[OPTION_ALIASES[key]] = value
        elif key not in option_keys and not is_cache_key(key):
            extra[key] = value
    return from_options, extra


@dataclass
class Layers:
    """The request and what the YAML's `options` set, for picking each field in order."""

    request: ImageRequest
    from_options: dict[str, Any]
    extra: dict[str, Any]

    def pick(self, field_name: str, *yaml_values: Any) -> Any:
        """The request's value, else the first YAML key given, else the YAML option; or None."""
        value = getattr(self.request, field_name)
        if value is not None:
            return value
        for candidate in (*yaml_values, self.from_options.get(field_name)):
            if candidate is not None:
                return candidate
        return None


def merged_size(layers: Layers, config: ModelConfig, defaults: BackendDefaults) -> tuple[Any, Any]:
    """Width and height: request > YAML `size` > YAML options > the input image's own size
    (conditioning.py) > the backend's default."""
    request = layers.request
    size = config.default_size
    own: tuple[int | None, int | None] = (None, None)
    if request.init_image is not None:
        own = conditioning.size_for(request.init_image, defaults.size_multiple)
    width = layers.pick("width", size[0] if size else None) or own[0] or defaults.width
    height = layers.pick("height", size[1] if size else None) or own[1] or defaults.height
    return width, height


def merged_steps(layers: Layers, config: ModelConfig, defaults: BackendDefaults) -> Any:
    """The step count; OpenAI's quality scales the model's own count: its YAML's, else the
    backend's default (a request's own steps win over quality)."""
    request = layers.request
    steps = layers.pick("steps", config.step)
    if steps is None or (request.steps is None and request.quality is not None):
        base_steps = steps or defaults.steps
        factor = QUALITY_STEP_FACTORS[request.quality] if request.quality else 1.0
        steps = max(1, round(base_steps * factor))
    return steps


def fitted_inputs(
    request: ImageRequest, defaults: BackendDefaults, width: int, height: int
) -> dict[str, Any]:
    """The input image and mask fitted to the output size (conditioning.fitted), or nothing.

    References of an edit keep their own size and aspect: the model reads them, it does not
    denoise them, so stretching one to the output size would distort it.
    """
    if (
        request.mode == "edit"
        or request.reference_images
        or (defaults.reference_edits and request.mode is None and request.mask is None)
    ):
        return {}
    return conditioning.fitted(request, width, height)


def merged_controls(request: ImageRequest, config: ModelConfig) -> tuple[ControlUnit, ...]:
    """Each ControlNet unit with its net and strength: the request's, else the YAML's
    `control_net` / `control_strength`, else strength 1.0. A unit with no ControlNet anywhere is
    refused here, before anything loads."""
    units = []
    for index, unit in enumerate(request.controls):
        net = unit.net or config.default_control_net
        if net is None:
            which = f"control image {index + 1}" if len(request.controls) > 1 else "a control image"
            raise InvalidRequest(
                f"{which} needs a ControlNet: name one in the request (--control-net, the "
                "control_net field) or set control_net: in the model's YAML",
                param="control_net",
            )
        strength = unit.strength
        if strength is None:
            strength = config.control_strength if config.control_strength is not None else 1.0
        units.append(replace(unit, net=net, strength=float(strength)))
    return tuple(units)


def merged_hires(
    request: ImageRequest,
    config: ModelConfig,
    first_pass: tuple[int, int, int],
    defaults: BackendDefaults,
) -> HiresFix | None:
    """The hires fix a request runs with, every field set (None: none): the request's, else the
    YAML's `hires:` block (when enabled), field by field, else A1111's defaults. The second
    pass's size is `size`/width x height when given (one side: the other keeps the aspect),
    else the first pass's times `scale`, rounded down to the model's size multiple. `scale`
    stays set only when it decided the size (A1111 then writes "Hires upscale", else "Hires
    resize"); `steps` 0 becomes the first pass's count."""
    width, height, steps = first_pass
    asked, yaml = request.hires, config.hires
    if asked is None:
        if yaml is None or not yaml.enabled or not text_to_image(request):
            return None
        asked = HiresFix()
    if not asked.enabled:
        return None
    yaml_size = parse_size(yaml.size) if yaml is not None and yaml.size else (None, None)

    def pick(name: str, yaml_value: Any, default: Any) -> Any:
        value = getattr(asked, name)
        return value if value is not None else yaml_value if yaml_value is not None else default

    scale = float(pick("scale", yaml.scale if yaml else None, HIRES_DEFAULT_SCALE))
    size = (asked.width, asked.height) if asked.width or asked.height else yaml_size
    final_width, final_height = hires_size(size, scale, width, height, defaults.size_multiple)
    return HiresFix(
        scale=None if any(size) else scale,
        width=final_width,
        height=final_height,
        upscaler=upscaler_name(
            str(pick("upscaler", yaml.upscaler if yaml else None, HIRES_LATENT))
        ),
        steps=int(pick("steps", yaml.steps if yaml else None, 0)) or steps,
        denoise=float(pick("denoise", yaml.denoise if yaml else None, HIRES_DEFAULT_DENOISE)),
        prompt=asked.prompt,
        negative_prompt=asked.negative_prompt,
    )


def text_to_image(request: ImageRequest) -> bool:
    """Whether a request is a text-to-image one, which the YAML's hires fix applies to (img2img,
    inpainting, edits and videos run as asked; a request's own hires fix on them is refused)."""
    return (
        request.init_image is None
        and request.mask is None
        and not request.num_frames
        and request.mode in (None, "txt2img")
    )


def upscaler_name(name: object) -> str:
    """A hires upscaler as the backends and the PNG parameters read it: the latent modes and the
    resampling filters lowercased, a model's name (upscale_models/) as written."""
    from localimg.backends.side.resize import FILTERS

    name = str(name).strip()
    if is_latent_upscaler(name) or name.lower() in FILTERS:
        return name.lower()
    return name


def hires_size(
    size: tuple[int | None, int | None], scale: float, width: int, height: int, multiple: int
) -> tuple[int, int]:
    """The second pass's size: `size` (one side given: the other keeps the first pass's
    aspect), else the first pass's times `scale`; rounded down to the size multiple."""
    asked_width, asked_height = size
    if asked_width is None and asked_height is None:
        found = (width * scale, height * scale)
    elif asked_width is None:
        assert asked_height is not None
        found = (asked_height * width / height, asked_height)
    elif asked_height is None:
        found = (asked_width, asked_width * height / width)
    else:
        found = (asked_width, asked_height)
    step = max(1, multiple)
    final = tuple(max(step, round(side) // step * step) for side in found)
    if max(final) > MAX_SIDE:
        raise InvalidRequest(
            f"the hires fix would make {final[0]}x{final[1]}; each side must be at most "
            f"{MAX_SIDE} pixels (lower hires_scale or hires_size)",
            param="hires_scale",
        )
    return final[0], final[1]


def merge_cache(
    request: ImageRequest, options: dict[str, Any]
) -> tuple[str | None, dict[str, Any]]:
    """The step cache a request runs with: its own method, else the YAML's `cache:`.

    The YAML's `cache_<knob>` options apply when the request keeps the YAML's method (names none,
    or the same one); the request's knobs win over them. A request's "none" turns the cache off,
    and knobs without any method to apply to are refused rather than dropped.
    """
    yaml_method, yaml_knobs = cache_from_options(options)
    if request.cache is None or request.cache == yaml_method:
        method, knobs = yaml_method, {**yaml_knobs, **request.cache_options}
    else:
        method, knobs = request.cache, dict(request.cache_options)
    if method in CACHE_OFF:
        method = None
        if request.cache_options:
            raise InvalidRequest(
                f"cache options ({', '.join(sorted(request.cache_options))}) need a cache "
                "method; the request turns caching off",
                param="cache",
            )
        knobs = {}
    if method is None and knobs:
        raise InvalidRequest(
            f"cache options ({', '.join(sorted(knobs))}) need a cache method: name one with "
            "cache (request) or cache:<method> (YAML options)",
            param="cache",
        )
    return method, knobs
