"""Step caching on stable-diffusion.cpp: which loaded models can use which method, and a
request's (or the YAML's) method and knobs (cache_knobs.py) → generate_image keywords.

What was checked against the C++ code of stable-diffusion.cpp 0.4.7 and against real runs on the
tiny checkpoints:

- Which architectures: ucache works on UNets only (SD1.x/2.x/SDXL and their variants), easycache
  and the cache-dit modes (dbcache, taylorseer, cachedit) on DiTs only (FLUX, SD3, Qwen-Image,
  Z-Image, Wan, ...), spectrum on both. On any other model the library logs a warning and runs
  uncached, so localimg refuses the request itself, naming the methods that work.
- generate_video takes no spectrum keyword (its C struct would hold zeros, not the defaults), so
  spectrum is refused on video models.
- The binding replaces an easycache reuse_threshold of exactly 1.0 with 0.2; 1.0 is passed as
  the next double above it, which the C float rounds back to 1.0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from localimg.backends.ggml.cache_knobs import METHODS, parse_knobs
from localimg.backends.ggml.families import Family
from localimg.config import ModelConfig
from localimg.config.options import cache_from_options
from localimg.errors import ConfigError, InvalidRequest
from localimg.requests import CACHE_OFF

UNET_METHODS = ("ucache", "spectrum")
DIT_METHODS = ("easycache", "dbcache", "taylorseer", "cachedit", "spectrum")
# Families stable-diffusion.cpp counts as UNets for caching (sd_version_is_unet); SVD is neither.
UNET_NAMES = ("SD 1.x", "SD 2.x", "SDXS", "SDXL", "Instruct-Pix2Pix")


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
