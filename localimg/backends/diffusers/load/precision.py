"""Where and in what precision a diffusers model runs: the device, and the one decision of the
dtype, which both loading (a torch dtype) and the engine's memory estimate (bytes per weight,
before anything is loaded) read, so the estimate always counts what loading will do.

torch is imported only by choose_device and choose_dtype; the decision itself needs only the YAML
and the CPU's abilities.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from localimg._util.system import cpu_has_bf16
from localimg.backends.base import RuntimeSettings
from localimg.backends.diffusers.options import DTYPES, DiffusersOptions, parse_options
from localimg.config import ModelConfig
from localimg.errors import ConfigError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

HALF_DTYPES = frozenset({"float16", "bfloat16"})


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


def dtype_name(config: ModelConfig, options: DiffusersOptions, gpu: bool) -> str:
    """The torch dtype's name the weights are cast to: the dtype option wins; else f16 means half
    precision on a GPU, and bfloat16 on a CPU only where the CPU has native bfloat16 arithmetic
    (elsewhere bfloat16 is emulated and slower than float32)."""
    if options.dtype:
        return DTYPES[options.dtype]
    if not config.f16:
        return "float32"
    if gpu:
        return "float16"
    return "bfloat16" if cpu_has_bf16() else "float32"


def choose_dtype(device: str, config: ModelConfig, options: DiffusersOptions) -> torch.dtype:
    """dtype_name as a torch dtype, saying so when f16 on a CPU became something else."""
    import torch

    gpu = device.startswith(("cuda", "mps"))
    name = dtype_name(config, options, gpu)
    if config.f16 and not options.dtype and not gpu:
        if name == "bfloat16":
            log.info(
                "%s: f16 on a CPU with native bfloat16 (AVX512-BF16/AMX): bfloat16", config.where
            )
        else:
            log.warning(
                "%s: f16 is set but this CPU has neither float16 nor native bfloat16 arithmetic "
                '(AVX512-BF16/AMX): using float32; set `options: ["dtype:bfloat16"]` to force '
                "bfloat16",
                config.where,
            )
    dtype: torch.dtype = getattr(torch, name)
    return dtype


def weight_itemsize(config: ModelConfig, where: str) -> int | None:
    """Bytes per float weight once loaded on `where` ("vram" or "ram"), decided without torch:
    1 when quantized (int8: the denoiser and text encoders; fp8: the denoiser, the bulk of the
    weights, while its text encoders keep the dtype: `memory:` in the YAML gives an exact budget),
    else the size of dtype_name's dtype. None (as stored) when the options are invalid: loading
    refuses them with the message, the estimate need not."""
    try:
        options = parse_options(config)
    except ConfigError:
        return None
    if options.quantization:
        return 1
    return 2 if dtype_name(config, options, gpu=where == "vram") in HALF_DTYPES else 4
