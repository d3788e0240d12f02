"""Tiny FLUX-lineage pipelines: FLUX.2 [klein] and [dev], Chroma, FLUX.1 Kontext."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.tiny_family_parts import (
    clip_tokenizer,
    family_folder,
    mistral3_encoder,
    mistral_tokenizer,
    qwen3_config,
    qwen_tokenizer,
    save_pipeline,
    t5_encoder,
    t5_tokenizer,
)

# --- FLUX.2 -------------------------------------------------------------------------------------


def flux2_transformer(text_hidden: int, guidance_embeds: bool) -> Any:
    """Flux2's transformer for 4-channel packed latents, conditioned on 3 stacked encoder layers."""
    from diffusers import Flux2Transformer2DModel

    return Flux2Transformer2DModel(
        patch_size=1,
        in_channels=4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=3 * text_hidden,
        timestep_guidance_channels=256,
        axes_dims_rope=[4, 4, 4, 4],
        guidance_embeds=guidance_embeds,
    )


def flux2_vae() -> Any:
    """AutoencoderKLFlux2 with two levels (scale factor 2: sizes in multiples of 4)."""
    from diffusers import AutoencoderKLFlux2

    return AutoencoderKLFlux2(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(4, 8),
        layers_per_block=1,
        latent_channels=1,
        norm_num_groups=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )


def flux_scheduler() -> Any:
    """FLUX's scheduler config: resolution-dependent shift (the pipeline's `mu`) is used."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True)


def make_flux2_klein(distilled: bool) -> Any:
    import torch
    from diffusers import Flux2KleinPipeline
    from transformers import Qwen3ForCausalLM

    torch.manual_seed(0)
    transformer = flux2_transformer(text_hidden=16, guidance_embeds=False)
    torch.manual_seed(0)
    # 27 layers: the pipeline stacks hidden states (9, 18, 27) by default.
    text_encoder = Qwen3ForCausalLM(qwen3_config(hidden=16, layers=27))
    torch.manual_seed(0)
    vae = flux2_vae()
    return Flux2KleinPipeline(
        scheduler=flux_scheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=qwen_tokenizer(),
        transformer=transformer,
        is_distilled=distilled,
    )


def tiny_flux2_klein_path() -> Path:
    """A tiny Flux2KleinPipeline like FLUX.2 [klein] 4B (step-distilled: guidance ignored)."""
    return save_pipeline(family_folder("flux2-klein"), lambda: make_flux2_klein(distilled=True))


def tiny_flux2_klein_base_path() -> Path:
    """A tiny Flux2KleinPipeline like FLUX.2 [klein] base (not distilled: guidance_scale is CFG)."""
    return save_pipeline(
        family_folder("flux2-klein-base"), lambda: make_flux2_klein(distilled=False)
    )


# Mistral Small 3.x's special tokens (ids 0..10, [IMG] = 1 as in Mistral3Config), then bytes.


def make_flux2() -> Any:
    import torch
    from diffusers import Flux2Pipeline

    torch.manual_seed(0)
    transformer = flux2_transformer(text_hidden=16, guidance_embeds=True)
    torch.manual_seed(0)
    # 30 layers: the pipeline stacks hidden states (10, 20, 30) by default.
    text_encoder = mistral3_encoder(hidden=16, layers=30).eval()
    torch.manual_seed(0)
    vae = flux2_vae()
    return Flux2Pipeline(
        scheduler=flux_scheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=mistral_tokenizer(),
        transformer=transformer,
    )


def tiny_flux2_path() -> Path:
    """A tiny Flux2Pipeline like FLUX.2 [dev] (guidance-distilled, Mistral 3 text encoder)."""
    return save_pipeline(family_folder("flux2"), make_flux2)


def flux_vae(levels: int) -> Any:
    """FLUX.1's AutoencoderKL shape at toy size: 1 latent channel, scale factor 2**(levels-1)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=(4,) * levels,
        layers_per_block=1,
        latent_channels=1,
        norm_num_groups=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )


# --- Chroma -------------------------------------------------------------------------------------


def make_chroma() -> Any:
    import torch
    from diffusers import ChromaPipeline, ChromaTransformer2DModel

    torch.manual_seed(0)
    transformer = ChromaTransformer2DModel(
        patch_size=1,
        in_channels=4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        axes_dims_rope=[4, 4, 8],
        approximator_hidden_dim=32,
        approximator_layers=1,
        approximator_num_channels=16,
    )
    torch.manual_seed(0)
    text_encoder = t5_encoder()
    torch.manual_seed(0)
    vae = flux_vae(levels=2)
    return ChromaPipeline(
        scheduler=flux_scheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=t5_tokenizer(),
        transformer=transformer,
        image_encoder=None,
        feature_extractor=None,
    )


def tiny_chroma_path() -> Path:
    """A tiny ChromaPipeline (T5 only, true CFG with negative_prompt): multiples of 4."""
    return save_pipeline(family_folder("chroma"), make_chroma)


# --- FLUX.1 Kontext -----------------------------------------------------------------------------


def make_flux_kontext(pipeline_class: str = "FluxKontextPipeline") -> Any:
    import diffusers
    import torch
    from diffusers import FluxTransformer2DModel

    from tests.support.tiny_models import tiny_text_encoder

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8],
        guidance_embeds=True,
    )
    torch.manual_seed(0)
    text_encoder = tiny_text_encoder(hidden=32)
    torch.manual_seed(0)
    text_encoder_2 = t5_encoder()
    torch.manual_seed(0)
    # Four levels (scale factor 8, multiples of 16 as the real one): the pipeline resizes an input
    # image to a ~1 MP Kontext resolution by default, which stays cheap at this scale.
    vae = flux_vae(levels=4)
    return getattr(diffusers, pipeline_class)(
        scheduler=flux_scheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=clip_tokenizer(),
        text_encoder_2=text_encoder_2,
        tokenizer_2=t5_tokenizer(),
        transformer=transformer,
        image_encoder=None,
        feature_extractor=None,
    )


def tiny_flux_kontext_path() -> Path:
    """A tiny FluxKontextPipeline (FLUX.1 Kontext [dev]: one input image, multiples of 16)."""
    return save_pipeline(family_folder("flux-kontext"), make_flux_kontext)


def make_flux1() -> Any:
    return make_flux_kontext("FluxPipeline")


def tiny_flux1_path() -> Path:
    """A tiny FluxPipeline (FLUX.1 [dev] text-to-image), Kontext's parts."""
    return save_pipeline(family_folder("flux1"), make_flux1)
