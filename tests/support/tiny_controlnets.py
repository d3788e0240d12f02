"""Tiny random ControlNets matching the tiny pipelines the suite builds, saved as diffusers
folders under the test cache (built once, under the cache's build lock).

SD 1.x and SDXL: `ControlNetModel.from_unet` on the tiny UNet (its conditioning embedding
downsamples once, as the tiny VAE: a real one downsamples 8x, three times); FLUX.1 and Qwen-Image:
`from_transformer` on the tiny transformer (one layer); Z-Image: a ZImageControlNetModel of the
tiny transformer's width. The conditioning blocks end in zero-initialised layers (a fresh
ControlNet adds nothing), so the builders fill every weight with small random values: a control
image must change the image.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.tiny_models import build_lock, cache_dir

CONTROLNETS_VERSION = "1"


def randomized(model: Any, seed: int = 0, scale: float = 0.05) -> Any:
    """Every floating-point weight redrawn (zero-initialised output layers included)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dtype.is_floating_point:
                noise = torch.randn(parameter.shape, generator=generator) * scale
                parameter.copy_(noise.to(parameter.dtype))
    return model


def save_net(name: str, make: Callable[[], Any]) -> Path:
    """Build `make()` and save it as a diffusers folder, all or nothing, once."""
    folder = cache_dir() / f"tiny-controlnet-{name}-v{CONTROLNETS_VERSION}"
    with build_lock():
        if (folder / "config.json").is_file():
            return folder
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        make().save_pretrained(str(tmp))
        tmp.rename(folder)
    return folder


def unet_of(pipeline_folder: Path) -> Any:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_pretrained(str(pipeline_folder / "unet"))


def transformer_of(pipeline_folder: Path, class_name: str) -> Any:
    import diffusers

    return getattr(diffusers, class_name).from_pretrained(str(pipeline_folder / "transformer"))


def tiny_sd_controlnet_path(seed: int = 0) -> Path:
    """A ControlNetModel for the tiny SD 1.x pipeline (tiny_models.tiny_sd_path)."""
    from diffusers import ControlNetModel

    from tests.support.tiny_models import tiny_sd_path

    def make() -> Any:
        unet = unet_of(tiny_sd_path())
        net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32))
        return randomized(net, seed)

    return save_net(f"sd-{seed}", make)


def tiny_sdxl_controlnet_path() -> Path:
    """A ControlNetModel for the tiny SDXL pipeline (tiny_sdxl_sd3.tiny_sdxl_path)."""
    from diffusers import ControlNetModel

    from tests.support.tiny_sdxl_sd3 import tiny_sdxl_path

    def make() -> Any:
        unet = unet_of(tiny_sdxl_path())
        net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32))
        return randomized(net)

    return save_net("sdxl", make)


def tiny_sdxl_union_controlnet_path() -> Path:
    """A ControlNetUnionModel (ControlNet++) for the tiny SDXL pipeline: its control-type
    transformer at the tiny UNet's width."""
    from diffusers import ControlNetUnionModel

    from tests.support.tiny_sdxl_sd3 import tiny_sdxl_path

    def make() -> Any:
        unet = unet_of(tiny_sdxl_path())
        keys = [
            "in_channels",
            "down_block_types",
            "block_out_channels",
            "layers_per_block",
            "norm_num_groups",
            "cross_attention_dim",
            "transformer_layers_per_block",
            "attention_head_dim",
            "use_linear_projection",
            "addition_embed_type",
            "addition_time_embed_dim",
            "projection_class_embeddings_input_dim",
        ]
        config = {key: unet.config[key] for key in keys}
        net = ControlNetUnionModel(
            **config,
            conditioning_embedding_out_channels=(16, 32),
            num_trans_channel=32,
            num_trans_head=2,
            num_proj_channel=32,
        )
        return randomized(net)

    return save_net("sdxl-union", make)


def tiny_flux1_path() -> Path:
    """The tiny FluxPipeline the FLUX.1 ControlNet fits (tiny_families_flux builds it)."""
    from tests.support.tiny_families_flux import tiny_flux1_path as flux1

    return flux1()


def tiny_flux_controlnet_path() -> Path:
    """A FluxControlNetModel for tiny_flux1_path's transformer."""
    from diffusers import FluxControlNetModel

    def make() -> Any:
        transformer = transformer_of(tiny_flux1_path(), "FluxTransformer2DModel")
        net = FluxControlNetModel.from_transformer(
            transformer,
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
        )
        return randomized(net)

    return save_net("flux1", make)


def tiny_z_image_controlnet_path() -> Path:
    """A ZImageControlNetModel for the tiny Z-Image transformer (dim 32, 2 heads)."""
    from diffusers import ZImageControlNetModel

    def make() -> Any:
        net = ZImageControlNetModel(
            control_layers_places=[0, 1],
            control_refiner_layers_places=[0],
            control_in_dim=16,
            all_patch_size=(2,),
            all_f_patch_size=(1,),
            dim=32,
            n_refiner_layers=1,
            n_heads=2,
            n_kv_heads=2,
        )
        return randomized(net)

    return save_net("z-image", make)


def tiny_qwen_controlnet_path() -> Path:
    """A QwenImageControlNetModel for the tiny Qwen-Image transformer."""
    from diffusers import QwenImageControlNetModel

    from tests.support.tiny_families_qwen_wan import tiny_qwen_image_path

    def make() -> Any:
        transformer = transformer_of(tiny_qwen_image_path(), "QwenImageTransformer2DModel")
        net = QwenImageControlNetModel.from_transformer(
            transformer, num_layers=1, attention_head_dim=16, num_attention_heads=3
        )
        return randomized(net)

    return save_net("qwen-image", make)
