"""`options:` keys the diffusers backend consumes at load time, typed (what they imply for the
engine's memory estimate is decided with the dtype, in load/precision.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from localimg._util.validation import first_problem
from localimg.config import ModelConfig
from localimg.config.options import PROMPT_ENHANCE_ALIASES
from localimg.errors import ConfigError, InvalidRequest
from localimg.requests import ImageRequest

DTYPES = {
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float32": "float32",
    "fp32": "float32",
}


class DiffusersOptions(BaseModel):
    """`options:` keys the diffusers backend consumes at load time."""

    model_config = ConfigDict(extra="forbid")

    dtype: Literal["float16", "fp16", "half", "bfloat16", "bf16", "float32", "fp32"] | None = None
    variant: str | None = None  # e.g. fp16: the repo's half-precision weight files
    revision: str | None = None
    config: str | None = None  # single files: a diffusers folder or hub id with the configs
    original_config: str | None = None
    base_model: str | None = None  # FluxTransformer2DModel: the repo with the other components
    attention_slicing: bool = False
    vae_tiling: bool = False
    vae_slicing: bool = False
    cpu_offload: bool = False
    channels_last: bool = False  # NHWC weights for the UNet/VAE convolutions (faster on many CPUs)
    compile: bool = False  # torch.compile the denoiser: the first generation pays a warm-up
    # Weights in 1 byte each (load/quantize.py): torchao int8 weight-only, or fp8 storage cast per
    # layer to the compute dtype. A `.gguf` model file is quantized already (load/gguf_files.py).
    quantization: Literal["int8", "fp8"] | None = None
    # The decoder (decode/tiny_vae.py): taesd swaps the VAE for a tiny autoencoder (taesd_path, or
    # the family's published one); full keeps the model's own VAE.
    vae: Literal["taesd", "full"] | None = None
    taesd_path: str | None = None
    # Generation settings of the model families (families.py); a request's `extra` may override
    # each. guidance: the distilled guidance of a family that also has true CFG (FLUX.1 Kontext,
    # a guidance-distilled Qwen-Image); shift: a fixed flow shift (sampling/flow.py).
    guidance: float | None = Field(default=None, ge=0, le=100)
    shift: float | None = Field(default=None, gt=0, le=100)
    max_sequence_length: int | None = Field(default=None, ge=1, le=4096)
    # The model's own prompt enhancer (Ideogram 4's prompt upsampling, ERNIE-Image's `pe`,
    # LTX-2's prompt enhancement): off unless asked (families/rules.py).
    prompt_enhance: bool | None = None
    lora_dir: str | None = None  # where <lora:name:weight> looks (default: the models dir's loras/)


OPTION_KEYS = frozenset(DiffusersOptions.model_fields) | frozenset(PROMPT_ENHANCE_ALIASES)
GENERATION_KEYS = ("guidance", "shift", "max_sequence_length", "prompt_enhance")


def parse_options(config: ModelConfig) -> DiffusersOptions:
    parsed = config.parsed_options()
    raw = {k: v for k, v in parsed.items() if k in DiffusersOptions.model_fields}
    for alias in PROMPT_ENHANCE_ALIASES:  # the pipelines' own names, accepted too
        if alias not in parsed:
            continue
        value = parsed[alias]
        if "prompt_enhance" in raw and str(raw["prompt_enhance"]) != str(value):
            said = {key: str(parsed[key]).lower() for key in (alias, "prompt_enhance")}
            raise ConfigError(
                f"{config.where}: options: {alias}:{said[alias]} disagrees with "
                f"prompt_enhance:{said['prompt_enhance']} (both switch the prompt enhancer)"
            )
        raw["prompt_enhance"] = value
    try:
        return DiffusersOptions.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{config.where}: options: {first_problem(exc).describe()}") from None


# Request fields that `diffusers.enable_parameters` can switch off (LocalAI's gate).
GATED = ("negative_prompt", "num_inference_steps", "clip_skip", "image", "mask_image")


def check_enabled_parameters(request: ImageRequest, config: ModelConfig) -> None:
    """LocalAI's gate: a request field the YAML's `diffusers.enable_parameters` leaves out is
    refused (no list: every field is enabled)."""
    enabled = config.enabled_parameters
    if enabled is None:
        return
    asked = {
        "negative_prompt": request.negative_prompt is not None or "|" in request.prompt,
        "num_inference_steps": request.steps is not None,
        "clip_skip": request.clip_skip is not None,
        "image": request.init_image is not None,
        "mask_image": request.mask is not None,
    }
    for gate in GATED:
        if asked[gate] and gate not in enabled:
            raise InvalidRequest(
                f"model {config.name!r} does not accept {gate}: add it to "
                f"diffusers.enable_parameters in {config.where} "
                f"(now {config.diffusers.enable_parameters!r})",
                param=gate,
            )
