"""A full SD1 KL VAE with random weights, for stable-diffusion.cpp tests of `vae:full`/`vae:taesd`.

stable-diffusion.cpp builds the SD1 VAE at its fixed size (128/256/512/512 channels, two res
blocks per level: 84 M parameters), so it cannot be tiny; the tiny SD1 checkpoint of tiny_ggml.py
has none (its TAESD decodes). This one is written in diffusers' layout, which `vae_path` loads
(the library renames diffusers VAE keys), as float16: about 170 MB, built once and cached.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.tiny_models import build_lock, cache_dir

CACHE_VERSION = "1"


def sd1_vae_path() -> Path:
    """The random SD1-size VAE file (built with diffusers on first use, about a minute)."""
    target = cache_dir() / f"ggml-vae-v{CACHE_VERSION}" / "sd1-vae.safetensors"
    with build_lock():
        if not target.is_file():
            _build_sd1_vae(target)
    return target


def _build_sd1_vae(target: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from tests.support.tiny_models import kl_vae

    torch.manual_seed(0)
    vae = kl_vae([128, 256, 512, 512], groups=32, layers_per_block=2)
    tensors = {k: v.to(torch.float16).contiguous() for k, v in vae.state_dict().items()}
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    save_file(tensors, str(partial))
    partial.rename(target)
