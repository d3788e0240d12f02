"""Where a loaded pipeline runs and how fast: device placement, the memory options (offload,
slicing, tiling) and the speed options (channels_last, torch.compile)."""

from __future__ import annotations

from typing import Any

from localimg.backends.diffusers.options import DiffusersOptions
from localimg.backends.diffusers.pipeline.batch_invariance import (
    BatchGrouping,
    make_linear_layers_batch_invariant,
)
from localimg.errors import ConfigError


def cpp_compiler() -> str | None:
    """The C++ compiler torch.compile's CPU code generator would use, if there is one."""
    import os
    import shutil

    for name in (os.environ.get("CXX"), "g++", "clang++"):
        if name and shutil.which(name):
            return name
    return None


def denoiser_of(pipe: Any) -> Any:
    """The UNet or transformer (tested with `is None`: a compiled module has no truth value)."""
    unet = getattr(pipe, "unet", None)
    return unet if unet is not None else getattr(pipe, "transformer", None)


def attention_kind(pipe: Any) -> str:
    """Return "sdpa" when every attention layer uses torch's scaled_dot_product_attention."""
    denoiser = denoiser_of(pipe)
    processors = getattr(denoiser, "attn_processors", None)
    if not processors:
        return ""
    names = {type(p).__name__ for p in processors.values()}
    if names <= {"AttnProcessor2_0", "FluxAttnProcessor", "FluxAttnProcessor2_0"}:
        return "sdpa"
    return ",".join(sorted(names))


def place(pipe: Any, options: DiffusersOptions, device: str) -> BatchGrouping:
    """Move the pipeline to `device` (or offload it) and apply the memory options; returns how
    its linear layers group images (pipeline/batch_invariance.py)."""
    if options.cpu_offload:
        if not device.startswith("cuda"):
            raise ConfigError("options: cpu_offload needs a CUDA GPU")
        pipe.enable_model_cpu_offload()
    else:
        pipe.to(device)
    if options.attention_slicing:
        pipe.enable_attention_slicing()
    vae = getattr(pipe, "vae", None)
    if options.vae_tiling:
        if vae is None or not hasattr(vae, "enable_tiling"):
            raise ConfigError("options: vae_tiling is not supported by this pipeline's VAE")
        vae.enable_tiling()
    if options.vae_slicing:
        if vae is None or not hasattr(vae, "enable_slicing"):
            raise ConfigError("options: vae_slicing is not supported by this pipeline's VAE")
        vae.enable_slicing()
    return make_linear_layers_batch_invariant(pipe)  # before compile traces it


def speed_up(pipe: Any, options: DiffusersOptions, device: str) -> bool:
    """channels_last and torch.compile (options), each applied or refused, never ignored;
    returns whether the denoiser is compiled."""
    import torch

    denoiser_name = "unet" if getattr(pipe, "unet", None) is not None else "transformer"
    denoiser = getattr(pipe, denoiser_name, None)
    if options.channels_last:
        convolutional = [
            m
            for m in (getattr(pipe, "unet", None), getattr(pipe, "vae", None))
            if isinstance(m, torch.nn.Module)
        ]
        if not convolutional:
            raise ConfigError("options: channels_last needs a pipeline with a UNet or a VAE")
        for module in convolutional:
            module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if options.compile:
        if not isinstance(denoiser, torch.nn.Module):
            raise ConfigError("options: compile needs a pipeline with a UNet or transformer")
        if options.cpu_offload:
            raise ConfigError("options: compile cannot be combined with cpu_offload")
        if device == "cpu" and not cpp_compiler():
            raise ConfigError(
                "options: compile on the CPU needs a C++ compiler (g++ or clang++, or $CXX)"
            )
        setattr(pipe, denoiser_name, torch.compile(denoiser))
        return True
    return False
