"""Where and in what precision a diffusers model runs: the device, and the one decision of the
dtype, which loading (a torch dtype), the engine's memory estimate (bytes per weight, before
anything is loaded) and `localimg models show` (what would happen, and why) all read, so none of
them can disagree with what loading does.

The rule, when the YAML names no `dtype:` option:
- `f16: false` forces float32 everywhere;
- CUDA: half precision, automatic when `f16` is absent: bfloat16 for the families published in
  bfloat16 (FLUX, SD3.5, Z-Image, Qwen-Image, Chroma, Wan, ...) where the GPU has it, else float16
  (the SD 1.x/2.x/SDXL era, whose float16 weights are what their repos publish);
- MPS: float16;
- CPU: float32, unless the model opts in with `f16: true` and the CPU computes bfloat16 natively
  (elsewhere bfloat16 is emulated and slower than float32).

`decide` itself needs neither torch nor the weights: the caller says the device and, where it
knows it, the pipeline class; torch is imported only by choose_device and choose_dtype.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from localimg._util.system import cpu_has_bf16
from localimg.backends.base import RuntimeSettings
from localimg.backends.diffusers.families import published_in_bfloat16
from localimg.backends.diffusers.options import DTYPES, DiffusersOptions, parse_options
from localimg.config import ModelConfig
from localimg.errors import ConfigError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

HALF_DTYPES = frozenset({"float16", "bfloat16"})


@dataclass(frozen=True)
class Precision:
    """What a model runs with here, and why (shown by `models show` and `/v1/models`)."""

    device: str  # cpu, cuda, cuda:1, mps
    dtype: str  # float32, float16, bfloat16
    reason: str
    variant: str | None = None  # the hub weight files fetched (fp16), None: the repo's default

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(
    config: ModelConfig,
    options: DiffusersOptions,
    device: str,
    pipeline_class: str | None = None,
    *,
    gpu_bfloat16: bool = True,
    cpu_bfloat16: bool | None = None,
) -> Precision:
    """The dtype `config` runs with on `device` (the rule in the module docstring)."""
    kind = device.split(":")[0]
    variant = options.variant
    if options.dtype:
        name = DTYPES[options.dtype]
        return Precision(device, name, f"options dtype:{options.dtype}", variant)
    if config.f16 is False:
        return Precision(device, "float32", "f16: false forces float32", variant)
    asked = "f16: true" if config.f16 else "automatic"
    if kind == "cuda":
        if published_in_bfloat16(pipeline_class):
            if gpu_bfloat16:
                why = f"{asked}: {pipeline_class} is published in bfloat16"
                return Precision(device, "bfloat16", why, variant)
            why = f"{asked}: {pipeline_class} prefers bfloat16, which this GPU lacks: float16"
            return Precision(device, "float16", why, variant)
        return Precision(device, "float16", f"{asked}: half precision on CUDA", variant)
    if kind == "mps":
        return Precision(device, "float16", f"{asked}: half precision on Apple MPS", variant)
    native = cpu_has_bf16() if cpu_bfloat16 is None else cpu_bfloat16
    if not config.f16:
        why = "automatic: float32 on a CPU (f16: true opts in to bfloat16 where the CPU has it)"
        return Precision(device, "float32", why, variant)
    if native:
        why = "f16: true on a CPU with native bfloat16 (AVX512-BF16/AMX)"
        return Precision(device, "bfloat16", why, variant)
    why = (
        "f16: true, but this CPU has neither float16 nor native bfloat16 arithmetic: float32 "
        '(options: ["dtype:bfloat16"] forces bfloat16)'
    )
    return Precision(device, "float32", why, variant)


def choose_device(settings: RuntimeSettings, config: ModelConfig) -> str:
    import torch

    cuda_ok = torch.cuda.is_available()
    mps_ok = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    wanted = settings.device
    if wanted and wanted != "auto":
        kind = wanted.split(":")[0]
        available = {"cpu": True, "cuda": cuda_ok, "mps": mps_ok}
        if kind not in available:
            raise ConfigError(f"unknown device {wanted!r}; use auto, cpu, cuda, cuda:N or mps")
        if not available[kind]:
            raise ConfigError(f"device {wanted!r} was asked for but is not available here")
        return wanted
    if config.use_cuda is False:
        return "cpu"
    if config.use_cuda and not cuda_ok:
        log.warning(
            "%s asks for CUDA, which is not available here: running on %s",
            config.where,
            "mps" if mps_ok else "cpu",
        )
    if cuda_ok:
        return "cuda"
    return "mps" if mps_ok else "cpu"


def gpu_has_bfloat16(device: str) -> bool:
    """Whether a CUDA device computes bfloat16 (Ampere and later); True elsewhere (unused)."""
    if not device.startswith("cuda"):
        return True
    import torch

    return bool(torch.cuda.is_bf16_supported())


def plan(settings: RuntimeSettings, config: ModelConfig, *, hub: bool = True) -> Precision:
    """decide() for this machine: its device and, on CUDA, the pipeline class loading will use
    (from the YAML, the file or model_index.json; from the hub's cache only unless `hub`)."""
    from localimg.backends.diffusers.load.loading import class_to_load

    options = parse_options(config)
    device = choose_device(settings, config)
    pipeline_class = class_to_load(config, options, hub=hub) if device.startswith("cuda") else None
    return decide(config, options, device, pipeline_class, gpu_bfloat16=gpu_has_bfloat16(device))


def precision_report(config: ModelConfig, settings: RuntimeSettings) -> dict[str, Any]:
    """plan() from the hub's cache only, as `localimg models show` and `/v1/models` report it (the
    backend's `precision` hook, beside `weight_itemsize`)."""
    return plan(settings, config, hub=False).as_dict()


def choose_dtype(precision: Precision, config: ModelConfig) -> torch.dtype:
    """The decision as a torch dtype, saying in the log why (a warning where a YAML's f16 could
    not be honoured; the built-in hub presets opt in quietly)."""
    import torch

    fallback = config.f16 and precision.dtype == "float32" and precision.device == "cpu"
    if fallback and config.source_file is not None:
        log.warning("%s: %s", config.where, precision.reason)
    else:
        log.info(
            "%s: %s on %s (%s)", config.where, precision.dtype, precision.device, precision.reason
        )
    dtype: torch.dtype = getattr(torch, precision.dtype)
    return dtype


def weight_itemsize(config: ModelConfig, where: str) -> int | None:
    """Bytes per float weight once loaded on `where` ("vram" or "ram"), decided without torch:
    1 when quantized (int8: the denoiser and text encoders; fp8: the denoiser, the bulk of the
    weights, while its text encoders keep the dtype: `memory:` in the YAML gives an exact budget),
    else the size of decide()'s dtype (float16 and bfloat16 weigh the same, so the family does
    not matter here). None (as stored) when the options are invalid: loading refuses them with
    the message, the estimate need not."""
    try:
        options = parse_options(config)
    except ConfigError:
        return None
    if options.quantization:
        return 1
    device = "cuda" if where == "vram" else "cpu"
    return 2 if decide(config, options, device).dtype in HALF_DTYPES else 4
