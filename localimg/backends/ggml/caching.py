"""Step caching on stable-diffusion.cpp: a method name and its knobs → generate_image keywords.

stable-diffusion-cpp-python 0.4.7 takes `cache_mode` (easycache, ucache, dbcache, taylorseer,
cachedit, spectrum) and a flat list of `cache_*` keywords. localimg gives each method short knob
names, typed and range-checked, and passes only the keywords that method reads. What was checked
against the C++ code of that version (src/sample-cache.cpp, easycache.hpp, ucache.hpp,
cache_dit.hpp, spectrum.hpp) and against real runs on the tiny checkpoints:

- Which architectures: ucache works on UNets only (SD1.x/2.x/SDXL and their variants), easycache
  and the cache-dit modes (dbcache, taylorseer, cachedit) on DiTs only (FLUX, SD3, Qwen-Image,
  Z-Image, Wan, ...), spectrum on both. On any other model the library logs a warning and runs
  uncached, so localimg refuses the request itself, naming the methods that work.
- easycache and ucache switch themselves off when start >= end (or outside [0, 1]): refused.
- dbcache, taylorseer and cachedit are one step-level cache in 0.4.7 (CacheDitConditionState):
  a step is reused while the input moved less than `threshold`, which fn_blocks and bn_blocks
  scale (x(1 + 0.02 (fn - 8)) within [0.5, 2]; x(1 - 0.03 bn) within [0.5, 1]). TaylorSeer's
  derivatives are computed but never applied, and the warmup, max cached steps and SCM mask
  checks return without effect, so those keywords are not knobs here (refused, not ignored).
- generate_video takes no spectrum keyword (its C struct would hold zeros, not the defaults), so
  spectrum is refused on video models.
- The binding replaces an easycache reuse_threshold of exactly 1.0 with 0.2; 1.0 is passed as
  the next double above it, which the C float rounds back to 1.0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from localimg.backends import cache_knobs as shared
from localimg.backends.ggml.families import Family
from localimg.config import ModelConfig
from localimg.config.options import cache_from_options
from localimg.errors import ConfigError, InvalidRequest
from localimg.requests import CACHE_OFF

METHODS = ("easycache", "ucache", "dbcache", "taylorseer", "cachedit", "spectrum")
UNET_METHODS = ("ucache", "spectrum")
DIT_METHODS = ("easycache", "dbcache", "taylorseer", "cachedit", "spectrum")
# Families stable-diffusion.cpp counts as UNets for caching (sd_version_is_unet); SVD is neither.
UNET_NAMES = ("SD 1.x", "SD 2.x", "SDXS", "SDXL", "Instruct-Pix2Pix")
# Keywords the binding takes that 0.4.7 reads but never applies (see the module docstring).
INERT = {
    "warmup": "max_warmup_steps",
    "max_warmup_steps": "max_warmup_steps",
    "max_cached_steps": "max_cached_steps",
    "max_continuous_cached_steps": "max_continuous_cached_steps",
    "scm_mask": "scm_mask",
    "scm_policy": "scm_policy",
    "n_derivatives": "taylorseer_n_derivatives",
    "skip_interval": "taylorseer_skip_interval",
}


class Knobs(BaseModel):
    """Strict: a knob's value must already have its type (1 for an int, not "1")."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    def keywords(self) -> dict[str, Any]:
        """The generate_image keywords of these knobs (the field's alias is the keyword)."""
        return {
            field.alias or name: getattr(self, name) for name, field in self.model_fields.items()
        }


def _knob(default: Any, keyword: str, **limits: Any) -> Any:
    return Field(default, alias=keyword, **limits)


class _Window(Knobs):
    model_config = ConfigDict(populate_by_name=True)

    start: float = _knob(0.15, "cache_start_percent", ge=0, lt=1)  # fraction of the steps
    end: float = _knob(0.95, "cache_end_percent", gt=0, le=1)

    @model_validator(mode="after")
    def _start_before_end(self) -> _Window:
        if not self.start < self.end:
            raise ValueError(
                f"start ({self.start}) must be below end ({self.end}): stable-diffusion.cpp "
                "would turn the cache off"
            )
        return self


class EasyCacheKnobs(_Window):
    # A step is reused while the accumulated relative change of the output stays below this.
    threshold: float = _knob(0.2, "cache_reuse_threshold", ge=0, le=1000)


class UCacheKnobs(_Window):
    threshold: float = _knob(1.0, "cache_reuse_threshold", ge=0, le=1000)
    decay: float = _knob(1.0, "cache_error_decay_rate", ge=0, le=1)  # error kept per step
    relative: bool = _knob(True, "cache_use_relative_threshold")  # threshold relative to change
    reset: bool = _knob(True, "cache_reset_error_on_compute")  # error back to 0 on a full step


class CacheDitKnobs(Knobs):
    model_config = ConfigDict(populate_by_name=True)

    # A step is reused while the model's input moved less than this (relative L1).
    threshold: float = _knob(0.08, "cache_residual_diff_threshold", ge=0, le=1000)
    fn_blocks: int = _knob(8, "cache_Fn_compute_blocks", ge=0, le=100)  # scales the threshold up
    bn_blocks: int = _knob(0, "cache_Bn_compute_blocks", ge=0, le=100)  # scales it down


class SpectrumKnobs(Knobs):
    model_config = ConfigDict(populate_by_name=True)

    w: float = _knob(0.4, "cache_spectrum_w", ge=0, le=1)  # Chebyshev share (rest: Taylor)
    m: int = _knob(3, "cache_spectrum_m", ge=1, le=10)  # Chebyshev degree
    lam: float = _knob(1.0, "cache_spectrum_lam", ge=0, le=1000)  # ridge regularisation
    window: int = _knob(2, "cache_spectrum_window_size", ge=1, le=1000)  # steps per full step
    flex: float = _knob(0.5, "cache_spectrum_flex_window", ge=0, le=100)  # window growth a step
    warmup: int = _knob(4, "cache_spectrum_warmup_steps", ge=0, le=10000)  # full steps first
    stop: float = _knob(0.9, "cache_spectrum_stop_percent", ge=0, le=1)  # full steps from here


KNOBS: dict[str, type[Knobs]] = {
    "easycache": EasyCacheKnobs,
    "ucache": UCacheKnobs,
    "dbcache": CacheDitKnobs,
    "taylorseer": CacheDitKnobs,
    "cachedit": CacheDitKnobs,
    "spectrum": SpectrumKnobs,
}


def check_method(method: str) -> type[Knobs]:
    """The knob model of a method this backend knows, else an error naming them all."""
    return shared.knob_model(KNOBS, method, "stablediffusion-ggml")


def knob_list(method: str) -> str:
    """`threshold (0.2), start (0.15), ...`: the method's knobs with their defaults."""
    return shared.knob_list(KNOBS[method])


def parse_knobs(method: str, knobs: Mapping[str, Any]) -> Knobs:
    """The method's knobs typed and checked; a bad one is refused naming what the method takes."""
    inert = {
        key: f"stable-diffusion.cpp 0.4.7 accepts {value} but never applies it"
        for key, value in INERT.items()
    }
    return shared.parse_knobs(KNOBS, method, knobs, "stablediffusion-ggml", inert)


def methods_for(family: Family) -> tuple[str, ...]:
    """The methods stable-diffusion.cpp 0.4.7 applies to this loaded family."""
    if not family.name or family.name.startswith("SVD"):
        return ()
    if family.name.startswith(UNET_NAMES):
        return UNET_METHODS
    if family.video:
        return tuple(m for m in DIT_METHODS if m != "spectrum")
    return DIT_METHODS


def _applies(method: str, family: Family) -> None:
    usable = methods_for(family)
    if method in usable:
        return
    if method == "spectrum" and family.video:
        why = (
            "stable-diffusion-cpp-python 0.4.7's generate_video passes none of spectrum's "
            "settings (it would run with all of them 0)"
        )
    elif method == "ucache":
        why = "ucache is for UNet models (SD1.x, SD2.x, SDXL)"
    elif method in UNET_METHODS + DIT_METHODS and usable:
        why = f"{method} is for DiT models (FLUX, SD3, Qwen-Image, Z-Image, Wan, ...)"
    else:
        why = "stable-diffusion.cpp caches no step of this model type"
    works = f"; this model takes {', '.join(usable)}" if usable else "; it takes no cache method"
    raise InvalidRequest(
        f"cache {method} does not apply to {family.label}: {why}{works}", param="cache"
    )


def call_keywords(method: str | None, knobs: Mapping[str, Any], family: Family) -> dict[str, Any]:
    """generate_image / generate_video keywords for a merged request's cache (none: {})."""
    if method is None or method in CACHE_OFF:
        return {}
    parsed = parse_knobs(method, knobs)
    _applies(method, family)
    call: dict[str, Any] = {"cache_mode": method, **parsed.keywords()}
    if method == "easycache" and call["cache_reuse_threshold"] == 1.0:
        # The binding turns exactly 1.0 into its easycache default (0.2); the next double
        # above 1.0 is not 1.0 in Python and is 1.0f again in C.
        call["cache_reuse_threshold"] = math.nextafter(1.0, 2.0)
    return call


def check_request_cache(method: str | None, knobs: Mapping[str, Any], config: ModelConfig) -> None:
    """Before queueing: the method (the request's, else the YAML's) is known and its knobs fit.
    Whether the loaded model's architecture can use it is checked at generation."""
    yaml_method, yaml_knobs = _yaml_cache(config)
    if yaml_method is not None and yaml_method not in CACHE_OFF and method in (None, yaml_method):
        try:
            parse_knobs(yaml_method, yaml_knobs)
        except InvalidRequest as exc:
            raise ConfigError(f"{config.where}: options: {exc.message}") from None
    chosen = method if method is not None else yaml_method
    if chosen is None or chosen in CACHE_OFF:
        return
    merged = {**yaml_knobs, **knobs} if chosen == yaml_method else dict(knobs)
    parse_knobs(chosen, merged)


def check_config_cache(config: ModelConfig, family: Family) -> None:
    """At load: a YAML `cache:` the loaded family cannot use, or bad knobs, is a ConfigError."""
    method, knobs = _yaml_cache(config)
    if method in CACHE_OFF:
        if knobs:
            raise ConfigError(
                f"{config.where}: options: cache_* knobs ({', '.join(sorted(knobs))}) need a "
                f"cache method; cache:{method} turns caching off"
            )
        return
    if method is None:
        if knobs:
            raise ConfigError(
                f"{config.where}: options: cache_* knobs ({', '.join(sorted(knobs))}) need "
                f"cache:<method> (one of {', '.join(METHODS)})"
            )
        return
    try:
        call_keywords(method, knobs, family)
    except InvalidRequest as exc:
        raise ConfigError(f"{config.where}: options: {exc.message}") from None


def _yaml_cache(config: ModelConfig) -> tuple[str | None, dict[str, Any]]:
    try:
        return cache_from_options(config.parsed_options())
    except ValueError as exc:
        raise ConfigError(f"{config.where}: options: {exc}") from None
