"""The knobs of diffusers' step caches, typed and range-checked (issue 16).

A knob is the field of the diffusers config class under its own name (`threshold`,
`cache_interval`, ...), set per request or in the YAML as `cache_<knob>:value`. What the
pipeline must set itself is not a knob: MagCache's `num_inference_steps` is the request's steps,
FasterCache's `current_timestep_callback` reads the running pipeline and its `is_guidance_distilled`
and `tensor_format` follow the call. Config fields left out on purpose, so that nothing is
accepted and then ignored: MagCache's `calibrate` (it only logs ratios through diffusers' own
logger, which localimg does not show), TaylorSeer's module-name regex lists, FasterCache's callables
and its temporal-attention fields (none of the families here has temporal attention blocks).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from localimg.backends import cache_knobs as shared

METHODS = ("first_block_cache", "taylorseer_cache", "mag_cache", "faster_cache")


class Knobs(BaseModel):
    """Strict: a knob's value must already have its type (1 for an int, not 1.0 or "1")."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class FirstBlockCacheKnobs(Knobs):
    # The rest of the blocks is skipped while the first block's output moves less than this
    # (relative mean absolute change); 0 never skips.
    threshold: float = Field(0.05, ge=0)


class TaylorSeerCacheKnobs(Knobs):
    cache_interval: int = Field(5, ge=1, le=1000)  # steps predicted between full computations
    disable_cache_before_step: int = Field(3, ge=0, le=10000)  # full steps first
    disable_cache_after_step: int | None = Field(None, ge=0, le=10000)  # full steps from here
    max_order: int = Field(1, ge=1, le=4)  # order of the Taylor expansion
    taylor_factors_dtype: str = Field("bfloat16", pattern="^(bfloat16|float16|float32)$")
    use_lite_mode: bool = False  # skip whole blocks, predict only the output projection


class MagCacheKnobs(Knobs):
    threshold: float = Field(0.06, ge=0)  # accumulated error allowed before computing again
    max_skip_steps: int = Field(3, ge=1, le=1000)  # consecutive steps skipped at most
    retention_ratio: float = Field(0.2, ge=0, le=1)  # first fraction of the steps never skipped
    # The model's magnitude ratios, one per step of a calibration run (interpolated to the
    # request's steps). Required: they belong to a checkpoint (FLUX.1's are built in).
    mag_ratios: list[float] | None = Field(None, min_length=2, max_length=10000)

    @model_validator(mode="after")
    def _positive_ratios(self) -> MagCacheKnobs:
        if self.mag_ratios is not None and not all(r > 0 for r in self.mag_ratios):
            raise ValueError("mag_ratios must all be above 0")
        return self


def _range(default: tuple[float, float]) -> Any:
    return Field(list(default), min_length=2, max_length=2)


class FasterCacheKnobs(Knobs):
    # Attention is computed every N-th step inside the timestep range, extrapolated between.
    spatial_attention_block_skip_range: int = Field(2, ge=2, le=1000)
    spatial_attention_timestep_skip_range: list[float] = _range((-1, 681))
    # The unconditional half of the batch is computed every N-th step inside its range and
    # approximated from the conditional half's frequencies between (weights alpha_*).
    unconditional_batch_skip_range: int = Field(5, ge=2, le=1000)
    unconditional_batch_timestep_skip_range: list[float] = _range((-1, 641))
    low_frequency_weight_update_timestep_range: list[float] = _range((99, 901))
    high_frequency_weight_update_timestep_range: list[float] = _range((-1, 301))
    alpha_low_frequency: float = Field(1.1, gt=0, le=10)
    alpha_high_frequency: float = Field(1.1, gt=0, le=10)

    @model_validator(mode="after")
    def _ordered_ranges(self) -> FasterCacheKnobs:
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, list) and not value[0] < value[1]:
                raise ValueError(f"{name} must be [low, high] with low < high, got {value}")
        return self


KNOBS: dict[str, type[Knobs]] = {
    "first_block_cache": FirstBlockCacheKnobs,
    "taylorseer_cache": TaylorSeerCacheKnobs,
    "mag_cache": MagCacheKnobs,
    "faster_cache": FasterCacheKnobs,
}


def check_method(method: str) -> type[Knobs]:
    """The knob model of a method this backend knows, else an error naming them all."""
    return shared.knob_model(KNOBS, method, "diffusers")


def knob_list(method: str) -> str:
    """`threshold (0.05)`: each knob of the method with its default, for messages and docs."""
    return shared.knob_list(KNOBS[method])


def parse_knobs(method: str, knobs: Mapping[str, Any]) -> Knobs:
    """The method's knobs typed and checked; a bad one is refused naming what the method takes."""
    return shared.parse_knobs(KNOBS, method, knobs, "diffusers")
