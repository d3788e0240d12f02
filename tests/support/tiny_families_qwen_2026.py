"""Tiny Qwen-Image 2.x (QwenImage21Pipeline) and Qwen-Image-Layered pipelines.

Qwen-Image 2.x reads prompt and input images with a Qwen3-VL encoder and a 64-channel, 16x VAE
over RGBA; its transformer takes unpatched latents. Qwen-Image-Layered is Qwen-Image with an
RGBA VAE and a layered transformer: it splits an input image into RGBA layers. Both processors are
built without a video processor (torchvision), as localimg loads them
(backends/diffusers/load/processors.py); model_index.json names the real processor classes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support.tiny_families_qwen_wan import (
    QWEN_SCHEDULER,
    qwen25_vl_encoder,
    qwen_vl_processor,
)
from tests.support.tiny_family_parts import (
    QWEN_VOCAB,
    family_folder,
    qwen_token_id,
    qwen_tokenizer,
    save_pipeline,
)

LATENT_CHANNELS = 8  # the real 2.x VAE has 64


def qwen3_vl_encoder() -> Any:
    """Qwen3VLForConditionalGeneration at toy size, its token ids those of qwen_tokenizer."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    config = Qwen3VLConfig(
        text_config={
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "head_dim": 8,
            "vocab_size": QWEN_VOCAB,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1000000.0,
                "mrope_section": [2, 1, 1],
                "mrope_interleaved": True,
            },
            "pad_token_id": qwen_token_id("<|endoftext|>"),
        },
        vision_config={
            "depth": 2,
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_heads": 2,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "out_hidden_size": 16,
            "num_position_embeddings": 64,
            "deepstack_visual_indexes": [0],
        },
        image_token_id=qwen_token_id("<|image_pad|>"),
        video_token_id=qwen_token_id("<|video_pad|>"),
        vision_start_token_id=qwen_token_id("<|vision_start|>"),
        vision_end_token_id=qwen_token_id("<|vision_end|>"),
    )
    return Qwen3VLForConditionalGeneration(config).eval()


def qwen3_vl_processor() -> Any:
    """A Qwen3-VL processor: 16 px patches, 2x2 merge, small pictures; no video processor."""
    from transformers import Qwen2VLImageProcessorPil

    from localimg.backends.diffusers.load.processors import image_only_processor

    images = Qwen2VLImageProcessorPil(
        patch_size=16,
        merge_size=2,
        temporal_patch_size=2,
        min_pixels=64 * 64,
        max_pixels=256 * 256,
    )
    return image_only_processor(images, qwen_tokenizer(), "Qwen3VLProcessor")


def qwen_image21_vae() -> Any:
    """AutoencoderKLQwenImage21 over RGBA with 16x downsampling, as the real one."""
    from diffusers import AutoencoderKLQwenImage21

    return AutoencoderKLQwenImage21(
        base_dim=8,
        decoder_base_dim=8,
        z_dim=LATENT_CHANNELS,
        dim_mult=[1, 1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True, True],
        latents_mean=[0.0] * LATENT_CHANNELS,
        latents_std=[1.0] * LATENT_CHANNELS,
    )


def make_qwen_image21(sample_sigmas: list[float] | None = None) -> Any:
    import torch
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        QwenImage21Pipeline,
        QwenImage21Transformer2DModel,
    )

    torch.manual_seed(0)
    transformer = QwenImage21Transformer2DModel(
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        context_in_dim=16,
        mlp_ratio=1,
        axes_dims_rope=(4, 6, 6),
    )
    torch.manual_seed(0)
    vae = qwen_image21_vae()
    torch.manual_seed(0)
    text_encoder = qwen3_vl_encoder()
    return QwenImage21Pipeline(
        transformer=transformer,
        vae=vae,
        text_encoder=text_encoder,
        processor=qwen3_vl_processor(),
        scheduler=FlowMatchEulerDiscreteScheduler(**QWEN_SCHEDULER),
        sample_sigmas=sample_sigmas,
    )


def with_processor_class(pipe: Any, class_name: str) -> Any:
    """`pipe`, saving a model_index.json that names the real processor class, as the repos do."""
    original = pipe.save_pretrained

    def save(folder: str, **kwargs: Any) -> None:
        original(folder, **kwargs)
        index = Path(folder) / "model_index.json"
        data = json.loads(index.read_text())
        data["processor"] = ["transformers", class_name]
        index.write_text(json.dumps(data, indent=2))

    pipe.save_pretrained = save
    return pipe


def tiny_qwen_image21_path() -> Path:
    """A tiny QwenImage21Pipeline without a sampling schedule of its own: multiples of 32."""
    return save_pipeline(
        family_folder("qwen-image-21"),
        lambda: with_processor_class(make_qwen_image21(), "Qwen3VLProcessor"),
    )


SAMPLE_SIGMAS = [1.0, 0.9, 0.5, 0.2]


def tiny_qwen_image21_sigmas_path() -> Path:
    """The same, with the model author's 4-step schedule (`sample_sigmas`, as Turbo has)."""
    return save_pipeline(
        family_folder("qwen-image-21-sigmas"),
        lambda: with_processor_class(make_qwen_image21(SAMPLE_SIGMAS), "Qwen3VLProcessor"),
    )


def make_qwen_image_layered() -> Any:
    import torch
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImageLayeredPipeline,
        QwenImageTransformer2DModel,
    )

    torch.manual_seed(0)
    transformer = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=32,
        out_channels=8,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=16,
        axes_dims_rope=(8, 4, 4),
        use_additional_t_cond=True,
        use_layer3d_rope=True,
    )
    torch.manual_seed(0)
    # RGBA in and out. 16x (the real one: 8x): the pipeline works at 640x640 or more, which a
    # deeper, narrower tiny VAE keeps cheap.
    vae = AutoencoderKLQwenImage(
        base_dim=2,  # convolutions at 640x640 on the CPU: as narrow as it gets
        z_dim=8,  # not 4: the pipeline would take a 4-channel (RGBA) input for latents
        dim_mult=[1, 1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True, True],
        input_channels=4,
        latents_mean=[0.0] * 8,
        latents_std=[1.0] * 8,
    )
    torch.manual_seed(0)
    text_encoder = qwen25_vl_encoder()
    processor = qwen_vl_processor()
    return QwenImageLayeredPipeline(
        transformer=transformer,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=processor.tokenizer,
        processor=processor,
        scheduler=FlowMatchEulerDiscreteScheduler(**QWEN_SCHEDULER),
    )


def tiny_qwen_image_layered_path() -> Path:
    """A tiny QwenImageLayeredPipeline: an input image → RGBA layers, multiples of 16."""
    return save_pipeline(
        family_folder("qwen-image-layered"),
        lambda: with_processor_class(make_qwen_image_layered(), "Qwen2VLProcessor"),
    )
