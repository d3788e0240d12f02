"""The benchmarks' real-size model: Stable Diffusion 1.5's shapes with random weights.

UNet 860M, KL VAE 84M and a CLIP ViT-L/14 text encoder (123M, 49408-token vocabulary), float32,
built once and cached under .test-cache/: the compute is that of SD1.5 and nothing is downloaded.
The same weights can be written as one original-layout (ldm) checkpoint, which
stable-diffusion.cpp loads, so the diffusers and ggml backends can be timed on identical weights.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

VERSION = "2"  # bump when the shapes change: the cached copies are rebuilt


def build_sd15(folder: Path) -> Path:
    """Save an SD1.5-shaped StableDiffusionPipeline with random weights to `folder`."""
    if (folder / "model_index.json").is_file():
        return folder
    import torch
    from diffusers import EulerDiscreteScheduler, UNet2DConditionModel

    from tests.support.tiny_models import kl_vae, save_sd_pipeline, tiny_text_encoder

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64,
        cross_attention_dim=768,
        attention_head_dim=8,
        block_out_channels=(320, 640, 1280, 1280),
    )
    vae = kl_vae([128, 256, 512, 512], groups=32, layers_per_block=2)
    text_encoder = tiny_text_encoder(768, layers=12, heads=12, intermediate=3072, vocab=49408)
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
    )
    return save_sd_pipeline(folder, unet, vae, text_encoder, scheduler)


def sd15_folder() -> Path:
    """The cached diffusers folder, built on first use (about 4 GB, a few minutes)."""
    from tests.support.tiny_models import cache_dir

    return build_sd15(cache_dir() / f"bench-sd15-v{VERSION}")


def sd15_checkpoint() -> Path:
    """The same weights as one ldm-layout .safetensors file (for stable-diffusion.cpp)."""
    from tests.support.tiny_models import cache_dir
    from tests.support.tiny_single_file import write_ldm_checkpoint

    target = cache_dir() / f"bench-sd15-v{VERSION}.safetensors"
    if not target.is_file():
        partial = target.with_suffix(".partial")
        write_ldm_checkpoint(sd15_folder(), partial)
        partial.rename(target)
    return target


def model_folder(kind: str) -> Path:
    """`sd15` (this module's model) or `tiny` (the test suite's toy pipeline)."""
    from tests.support.tiny_models import tiny_sd_path

    return tiny_sd_path() if kind == "tiny" else sd15_folder()
