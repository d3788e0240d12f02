"""Step-cache knobs of stable-diffusion.cpp: each method's short knob names, typed and
range-checked, and the `cache_*` keyword each one becomes.

stable-diffusion-cpp-python 0.4.7 takes `cache_mode` and a flat list of `cache_*` keywords;
localimg passes only the keywords the method reads. What was checked against the C++ code of that
version (src/sample-cache.cpp, easycache.hpp, ucache.hpp, cache_dit.hpp, spectrum.hpp):

- easycache and ucache switch themselves off when start >= end (or outside [0, 1]): refused.
- dbcache, taylorseer and cachedit are one step-level cache in 0.4.7 (CacheDitConditionState):
  a step is reused while the input moved less than `threshold`, which fn_blocks and bn_blocks
  scale (x(1 + 0.02 (fn - 8)) within [0.5, 2]; x(1 - 0.03 bn) within [0.5, 1]). TaylorSeer's
  derivatives are computed but never applied, and the warmup, max cached steps and SCM mask
  checks return without effect, so those keywords are not knobs here (refused, not ignored).

Which loaded models can use which method is caching.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from localimg.backends import cache_knobs as shared

METHODS = ("easycache", "ucache", "dbcache", "taylorseer", "cachedit", "spectrum")
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
            field.alias or name: getattr(self, name)
            for name, field in type(self).model_fields.items()
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
