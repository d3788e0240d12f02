"""Tiny random models for image-conditioned and video generation, built offline and cached.

Each builder saves a real diffusers pipeline (real architecture, toy sizes, random weights) so the
real pipeline code runs end to end in a second or two on a CPU:

- depth2img: StableDiffusionDepth2ImgPipeline with a tiny DPT depth estimator (ViT, not hybrid);
- img2vid: StableVideoDiffusionPipeline (spatio-temporal UNet, temporal VAE decoder, CLIP vision);
- txt2vid: TextToVideoSDPipeline (UNet3D), the class `DiffusionPipeline` resolves for
  damo-vilab/text-to-video-ms-1.7b.

Folders live in `tests.support.tiny_models.cache_dir()`, keyed by a version so a change rebuilds
them.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.tiny_models import (
    build_lock,
    cache_dir,
    tiny_text_encoder,
    tiny_tokenizer,
    tiny_vae,
)

CACHE_VERSION = "2"


def _save(folder: Path, make: Callable[[Path], Any]) -> Path:
    """Build into a temporary folder and rename it: an interrupted build leaves no half cache."""
    import torch

    torch.manual_seed(0)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    pipe = make(tmp)
    pipe.save_pretrained(str(tmp))
    shutil.rmtree(tmp / "tokenizer-src", ignore_errors=True)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def _depth2img(tmp: Path) -> Any:
    from diffusers import (
        EulerDiscreteScheduler,
        StableDiffusionDepth2ImgPipeline,
        UNet2DConditionModel,
    )
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=32,
        in_channels=5,  # 4 latent channels + the depth map
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=4,
        norm_num_groups=32,
    )
    vae = tiny_vae(width=32, groups=32)
    depth = DPTForDepthEstimation(
        DPTConfig(
            image_size=32,
            patch_size=8,
            num_channels=3,
            hidden_size=32,
            num_hidden_layers=4,
            backbone_out_indices=[0, 1, 2, 3],
            num_attention_heads=4,
            intermediate_size=37,
            neck_hidden_sizes=[8, 16, 16, 32],
            fusion_hidden_size=16,
            head_in_index=-1,
            is_hybrid=False,
        )
    )
    processor = DPTImageProcessor(size={"height": 32, "width": 32}, keep_aspect_ratio=False)
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
    )
    return StableDiffusionDepth2ImgPipeline(
        vae=vae,
        text_encoder=tiny_text_encoder(32),
        tokenizer=tiny_tokenizer(tmp),
        unet=unet,
        scheduler=scheduler,
        depth_estimator=depth,
        feature_extractor=processor,
    )


def _img2vid(tmp: Path) -> Any:
    from diffusers import (
        AutoencoderKLTemporalDecoder,
        EulerDiscreteScheduler,
        StableVideoDiffusionPipeline,
        UNetSpatioTemporalConditionModel,
    )
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    unet = UNetSpatioTemporalConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=16,
        in_channels=8,
        out_channels=4,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        cross_attention_dim=32,
        num_attention_heads=8,
        projection_class_embeddings_input_dim=96,
        addition_time_embed_dim=32,
    )
    scheduler = EulerDiscreteScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        interpolation_type="linear",
        num_train_timesteps=1000,
        prediction_type="v_prediction",
        sigma_max=700.0,
        sigma_min=0.002,
        steps_offset=1,
        timestep_spacing="leading",
        timestep_type="continuous",
        use_karras_sigmas=True,
    )
    vae = AutoencoderKLTemporalDecoder(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        latent_channels=4,
    )
    encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=32,
            projection_dim=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=224,  # the pipeline resizes its input to 224x224 for CLIP
            intermediate_size=37,
            patch_size=32,
        )
    )
    processor = CLIPImageProcessor(crop_size=224, size=224)
    return StableVideoDiffusionPipeline(
        vae=vae, image_encoder=encoder, unet=unet, scheduler=scheduler, feature_extractor=processor
    )


def _txt2vid(tmp: Path) -> Any:
    from diffusers import DDIMScheduler, TextToVideoSDPipeline, UNet3DConditionModel

    unet = UNet3DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
        up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
        cross_attention_dim=8,
        attention_head_dim=4,
        norm_num_groups=4,
    )
    vae = tiny_vae(width=8, groups=4)
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="linear", clip_sample=False
    )
    return TextToVideoSDPipeline(
        vae=vae,
        text_encoder=tiny_text_encoder(8),
        tokenizer=tiny_tokenizer(tmp),
        unet=unet,
        scheduler=scheduler,
    )


BUILDERS: dict[str, Callable[[Path], Any]] = {
    "depth2img": _depth2img,
    "img2vid": _img2vid,
    "txt2vid": _txt2vid,
}


def tiny_path(kind: str) -> Path:
    """The cached tiny pipeline of `kind` (depth2img, img2vid, txt2vid), built on first use."""
    folder = cache_dir() / f"tiny-{kind}-v{CACHE_VERSION}"
    with build_lock():
        if not (folder / "model_index.json").is_file():
            _save(folder, BUILDERS[kind])
    return folder
