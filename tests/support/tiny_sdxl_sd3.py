"""Tiny random SDXL and SD3 pipelines (diffusers' own fast-test shapes), for the prompt-weight
tests: the CLIP families besides SD 1.x that weight prompts. Built once into the cache like the
other families (save_pipeline: under the build lock, all or nothing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.tiny_family_parts import (
    clip_tokenizer,
    family_folder,
    save_pipeline,
    t5_encoder,
    t5_tokenizer,
)
from tests.support.tiny_models import kl_vae, tiny_text_encoder


def make_sdxl() -> Any:
    """A tiny random StableDiffusionXLPipeline, diffusers' own fast-test shapes."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=80,  # 6 * 8 + 32
        cross_attention_dim=64,
        norm_num_groups=1,
    )
    encoder = tiny_text_encoder(hidden=32)
    config = CLIPTextConfig(**{**encoder.config.to_dict(), "projection_dim": 32})
    encoder_2 = CLIPTextModelWithProjection(config)
    tokenizer = clip_tokenizer()
    pipe = StableDiffusionXLPipeline(
        unet=unet,
        vae=kl_vae([32, 64], 32),
        text_encoder=encoder,
        text_encoder_2=encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        scheduler=EulerDiscreteScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
        ),
    )
    return pipe


def make_sd3() -> Any:
    """A tiny random StableDiffusion3Pipeline (diffusers' fast-test shapes)."""
    import torch
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=32,
        patch_size=1,
        in_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=32,
        pooled_projection_dim=64,
        out_channels=4,
    )
    config = CLIPTextConfig(
        **{**tiny_text_encoder(hidden=32).config.to_dict(), "projection_dim": 32}
    )
    vae = AutoencoderKL(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(4,),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )
    tokenizer = clip_tokenizer()
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=CLIPTextModelWithProjection(config),
        tokenizer=tokenizer,
        text_encoder_2=CLIPTextModelWithProjection(config),
        tokenizer_2=tokenizer,
        text_encoder_3=t5_encoder(),
        tokenizer_3=t5_tokenizer(),
    )
    return pipe


def tiny_sdxl_path() -> Path:
    return save_pipeline(family_folder("sdxl"), make_sdxl)


def tiny_sd3_path() -> Path:
    return save_pipeline(family_folder("sd3"), make_sd3)
