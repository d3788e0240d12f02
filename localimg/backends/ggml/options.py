"""The `options:` of a ggml model YAML (LocalAI's keys), typed and checked before any load."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from localimg._util.validation import first_problem
from localimg.backends.ggml import samplers
from localimg.config import ModelConfig
from localimg.config.options import OPTION_ALIASES
from localimg.errors import ConfigError, InvalidRequest

# Weight types stable-diffusion.cpp can convert to on load (`wtype`).
# Weight types stable-diffusion.cpp can convert to on load (`wtype`).
WTYPES = (
    "f32", "f16", "bf16", "q8_0", "q5_0", "q5_1", "q4_0", "q4_1",
    "q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "q8_k",
)  # fmt: skip
# Request modes this backend serves (video and depth models are other backends' work).


class GgmlOptions(BaseModel):
    """`options:` of a ggml model YAML (LocalAI's keys), typed."""

    model_config = ConfigDict(extra="forbid")

    diffusion_model: bool = False  # parameters.model is a standalone diffusion model (FLUX, SD3.5)
    clip_l_path: str | None = None
    clip_g_path: str | None = None
    t5xxl_path: str | None = None
    vae_path: str | None = None
    taesd_path: str | None = None
    lora_dir: str | None = None  # where <lora:name:weight> looks (default: the models dir)
    sampler: str | None = None
    scheduler: str | None = None  # the sigma schedule (discrete, karras, ...)
    clip_skip: int | None = Field(default=None, ge=0, le=24)
    strength: float | None = Field(default=None, gt=0, le=1)
    threads: int | None = Field(default=None, ge=1, le=1024)
    wtype: str | None = None
    vae_tiling: bool = False
    keep_clip_on_cpu: bool = False
    keep_vae_on_cpu: bool = False
    diffusion_flash_attn: bool = False
    flash_attn: bool = False
    offload_params_to_cpu: bool = False
    guidance: float | None = Field(default=None, ge=0, le=100)  # FLUX distilled guidance
    eta: float | None = Field(default=None, ge=0, le=10)

    @field_validator("sampler")
    @classmethod
    def _known_sampler(cls, value: str | None) -> str | None:
        if value is not None:
            sampling = samplers.resolve(value, param="sampler")
            if sampling.method is None:
                raise ValueError(f"{value!r} is a schedule, not a sampler: use scheduler:{value}")
        return value

    @field_validator("scheduler")
    @classmethod
    def _known_schedule(cls, value: str | None) -> str | None:
        return samplers.resolve_schedule(value) if value is not None else None

    @field_validator("wtype")
    @classmethod
    def _known_wtype(cls, value: str | None) -> str | None:
        if value is not None and value.lower() not in WTYPES:
            raise ValueError(f"unknown weight type; use one of {', '.join(WTYPES)}")
        return value.lower() if value else None


OPTION_KEYS = frozenset(GgmlOptions.model_fields)
FILE_OPTIONS = ("clip_l_path", "clip_g_path", "t5xxl_path", "vae_path", "taesd_path")


def parse_options(config: ModelConfig) -> GgmlOptions:
    """The YAML's options as GgmlOptions; an unknown key or bad value names the file and key."""
    raw = config.parsed_options()
    unknown = sorted(k for k in raw if k not in OPTION_KEYS and k not in OPTION_ALIASES)
    if unknown:
        raise ConfigError(
            f"{config.where}: options: unknown key {unknown[0]!r} for the stablediffusion-ggml "
            f"backend; known keys: {', '.join(sorted(OPTION_KEYS))} (and the generation settings "
            f"{', '.join(sorted(OPTION_ALIASES))})"
        )
    try:
        return GgmlOptions.model_validate({k: v for k, v in raw.items() if k in OPTION_KEYS})
    except ValidationError as exc:
        problem = first_problem(exc)
        raise ConfigError(f"{config.where}: options: {problem.describe()}") from None
    except InvalidRequest as exc:
        raise ConfigError(f"{config.where}: options: {exc.message}") from None
