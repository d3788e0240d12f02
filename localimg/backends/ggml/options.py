"""The `options:` of a ggml model YAML (LocalAI's keys), typed and checked before any load."""

from __future__ import annotations

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from localimg._util.validation import first_problem
from localimg.backends.ggml import schedulers
from localimg.config import ModelConfig
from localimg.config.options import OPTION_ALIASES, PROMPT_ENHANCE_KEYS, is_cache_key
from localimg.errors import ConfigError, InvalidRequest

# Weight types stable-diffusion.cpp can convert to on load (`wtype`).
WTYPES = (
    "f32", "f16", "bf16", "q8_0", "q5_0", "q5_1", "q4_0", "q4_1",
    "q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "q8_k",
)  # fmt: skip


class GgmlOptions(BaseModel):
    """`options:` of a ggml model YAML (LocalAI's keys), typed."""

    model_config = ConfigDict(extra="forbid")

    diffusion_model: bool = False  # parameters.model is a standalone diffusion model (FLUX, SD3.5)
    clip_l_path: str | None = None
    clip_g_path: str | None = None
    t5xxl_path: str | None = None
    clip_vision_path: str | None = None  # Wan 2.1 I2V / FLF2V: the CLIP ViT-H image encoder
    llm_path: str | None = None  # Qwen3 (Z-Image, FLUX.2 klein), Qwen2.5-VL (Qwen-Image), Mistral
    llm_vision_path: str | None = None  # the LLM's vision tower (Qwen-Image-Edit with a GGUF LLM)
    high_noise_diffusion_model_path: str | None = None  # Wan 2.2 A14B: the high-noise expert
    vae_path: str | None = None
    taesd_path: str | None = None
    # Which autoencoder decodes: taesd (the tiny one of taesd_path: fast, rougher) or full (the
    # model's VAE or vae_path; a taesd_path then only makes previews). Unset: LocalAI's meaning,
    # the TAESD decodes whenever taesd_path is given.
    vae: str | None = None
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
    keep_control_net_on_cpu: bool = False  # GPU builds: the ControlNet runs on the CPU
    diffusion_flash_attn: bool = False
    flash_attn: bool = False
    offload_params_to_cpu: bool = False
    guidance: float | None = Field(default=None, ge=0, le=100)  # FLUX distilled guidance
    eta: float | None = Field(default=None, ge=0, le=10)
    # The flow-matching shift (SD3, FLUX, Qwen-Image, Z-Image, Wan); unset: the model's own.
    flow_shift: float | None = Field(default=None, gt=0, le=100)
    # This file is a reference-edit model: FLUX.1 Kontext or Qwen-Image-Edit, which load as the
    # same networks as FLUX.1-dev and Qwen-Image (FLUX.2 always is one).
    reference_edit: bool = False
    increase_ref_index: bool = False  # give each reference image its own position index
    qwen_image_zero_cond_t: bool = False  # Qwen-Image-Edit-2511 needs it
    # Wan 2.2 A14B: how the high-noise expert samples (unset: like the low-noise one).
    high_noise_cfg_scale: float | None = Field(default=None, ge=0, le=100)
    high_noise_steps: int | None = Field(default=None, ge=1, le=500)
    high_noise_sampler: str | None = None
    high_noise_scheduler: str | None = None
    moe_boundary: float | None = Field(default=None, gt=0, lt=1)

    @field_validator("sampler", "high_noise_sampler")
    @classmethod
    def _known_sampler(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            key = info.field_name or "sampler"
            sampling = schedulers.resolve(value, param=key)
            if sampling.method is None:
                other = key.replace("sampler", "scheduler")
                raise ValueError(f"{value!r} is a schedule, not a sampler: use {other}:{value}")
        return value

    @field_validator("scheduler", "high_noise_scheduler")
    @classmethod
    def _known_schedule(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        return schedulers.resolve_schedule(value, param=info.field_name or "scheduler")

    @field_validator("wtype")
    @classmethod
    def _known_wtype(cls, value: str | None) -> str | None:
        if value is not None and value.lower() not in WTYPES:
            raise ValueError(f"unknown weight type; use one of {', '.join(WTYPES)}")
        return value.lower() if value else None

    @field_validator("vae")
    @classmethod
    def _known_vae(cls, value: str | None) -> str | None:
        if value is not None and value.lower() not in VAE_CHOICES:
            raise ValueError(
                "vae takes taesd (decode with the tiny autoencoder of taesd_path) or full (decode "
                "with the model's VAE or vae_path; taesd_path then only makes previews)"
            )
        return value.lower() if value else None

    @model_validator(mode="after")
    def _taesd_needs_its_file(self) -> GgmlOptions:
        if self.vae == "taesd" and not self.taesd_path:
            raise ValueError(
                "vae:taesd decodes with a tiny autoencoder: name its file with "
                "taesd_path:<file> (taesd.safetensors for SD1/SD2, taesdxl for SDXL, taef1 for "
                "FLUX.1, taef2 for FLUX.2, taew2_1 for Wan/Qwen-Image)"
            )
        if self.vae_path and self.taesd_path and self.vae is None:
            raise ValueError(
                "vae_path and taesd_path: say which one decodes, vae:full (vae_path decodes, "
                "the TAESD only makes previews) or vae:taesd without vae_path "
                "(stable-diffusion.cpp would not load vae_path at all)"
            )
        if self.vae == "taesd" and self.vae_path:
            raise ValueError(
                "vae:taesd with vae_path: stable-diffusion.cpp decodes and encodes with the TAESD "
                "and never loads vae_path; remove vae_path or use vae:full"
            )
        return self

    @model_validator(mode="after")
    def _high_noise_needs_its_model(self) -> GgmlOptions:
        if not self.high_noise_diffusion_model_path:
            for key in HIGH_NOISE_KEYS:
                if getattr(self, key) is not None:
                    raise ValueError(
                        f"{key} sets how the Wan 2.2 high-noise expert samples; it needs "
                        "high_noise_diffusion_model_path"
                    )
        return self


VAE_CHOICES = ("taesd", "full")
HIGH_NOISE_KEYS = (
    "high_noise_cfg_scale",
    "high_noise_steps",
    "high_noise_sampler",
    "high_noise_scheduler",
    "moe_boundary",
)

OPTION_KEYS = frozenset(GgmlOptions.model_fields)
FILE_OPTIONS = (
    "clip_l_path",
    "clip_g_path",
    "t5xxl_path",
    "clip_vision_path",
    "llm_path",
    "llm_vision_path",
    "high_noise_diffusion_model_path",
    "vae_path",
    "taesd_path",
)


def parse_options(config: ModelConfig) -> GgmlOptions:
    """The YAML's options as GgmlOptions; an unknown key or bad value names the file and key."""
    raw = config.parsed_options()
    for key in PROMPT_ENHANCE_KEYS:  # off is what this engine does; on is refused
        if raw.get(key) not in (None, False):
            raise ConfigError(
                f"{config.where}: options: {key}: stable-diffusion.cpp has no prompt enhancer; "
                "the diffusers backend runs the enhancer of the families that have one (such as "
                "ERNIE-Image, gallery entry 'ernie-image'); remove it or set it to false"
            )
    unknown = sorted(
        k
        for k in raw
        if k not in OPTION_KEYS
        and k not in OPTION_ALIASES
        and k not in PROMPT_ENHANCE_KEYS
        and not is_cache_key(k)
    )
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
