"""Tiny Qwen-Image (text-to-image, Edit Plus) and Wan (text/image-to-video) pipelines.

See tests/support/tiny_families.py for what each accepts. Qwen-Image's text encoder is a Qwen2.5-VL
(vision tower included, used by Edit Plus for its input images); its VAE is the Wan-style
AutoencoderKLQwenImage.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support.tiny_family_parts import (
    QWEN_VOCAB,
    family_folder,
    qwen_token_id,
    qwen_tokenizer,
    save_pipeline,
    t5_encoder,
    t5_tokenizer,
)

# Qwen-Image's own scheduler config (exponential time shift, dynamic shifting).
QWEN_SCHEDULER = {
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "max_image_seq_len": 8192,
    "max_shift": 0.9,
    "shift": 1.0,
    "shift_terminal": 0.02,
    "time_shift_type": "exponential",
    "use_dynamic_shifting": True,
}


def qwen25_vl_encoder() -> Any:
    """Qwen2_5_VLForConditionalGeneration at toy size, its token ids those of qwen_tokenizer."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    config = Qwen2_5_VLConfig(  # type: ignore[call-arg]  # vocab_size: a kwargs attribute
        text_config={
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "vocab_size": QWEN_VOCAB,
            "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
            "rope_theta": 1000000.0,
            "bos_token_id": qwen_token_id("<|endoftext|>"),
            "pad_token_id": qwen_token_id("<|endoftext|>"),
            "eos_token_id": qwen_token_id("<|im_end|>"),
        },
        vision_config={
            "depth": 2,
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_heads": 2,
            "out_hidden_size": 16,
            "fullatt_block_indexes": [1],
        },
        vocab_size=QWEN_VOCAB,
        image_token_id=qwen_token_id("<|image_pad|>"),
        video_token_id=qwen_token_id("<|video_pad|>"),
        vision_start_token_id=qwen_token_id("<|vision_start|>"),
        vision_end_token_id=qwen_token_id("<|vision_end|>"),
    )
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def qwen_image_vae(levels: int) -> Any:
    """AutoencoderKLQwenImage with 4 latent channels and `levels` downsamplings (2**levels)."""
    from diffusers import AutoencoderKLQwenImage

    return AutoencoderKLQwenImage(
        base_dim=8,
        z_dim=4,
        dim_mult=[1] + [2] * levels,
        num_res_blocks=1,
        temperal_downsample=[False] + [True] * (levels - 1),
        latents_mean=[0.0] * 4,
        latents_std=[1.0] * 4,
    )


def qwen_image_transformer() -> Any:
    from diffusers import QwenImageTransformer2DModel

    return QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=3,
        joint_attention_dim=16,
        guidance_embeds=False,
        axes_dims_rope=(8, 4, 4),
    )


def make_qwen_image() -> Any:
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, QwenImagePipeline

    torch.manual_seed(0)
    transformer = qwen_image_transformer()
    torch.manual_seed(0)
    vae = qwen_image_vae(levels=3)  # scale factor 8 as the real one: multiples of 16
    torch.manual_seed(0)
    text_encoder = qwen25_vl_encoder()
    return QwenImagePipeline(
        transformer=transformer,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=qwen_tokenizer(),
        scheduler=FlowMatchEulerDiscreteScheduler(**QWEN_SCHEDULER),
    )


def tiny_qwen_image_path() -> Path:
    """A tiny QwenImagePipeline (true CFG via true_cfg_scale + negative_prompt): multiples of 16."""
    return save_pipeline(family_folder("qwen-image"), make_qwen_image)


def qwen_vl_processor() -> Any:
    """A Qwen2VLProcessor: Qwen2-VL's image processor (14 px patches, 2x2 merge) + the tokenizer.

    Built as localimg builds it without torchvision (backends/diffusers/load/processors.py): the PIL
    image processor and no video processor, as Qwen-Image-Edit never passes videos. The saved
    folder names the real Qwen2VLProcessor (see `tiny_qwen_image_edit_plus_path`).
    """
    from transformers import Qwen2VLImageProcessorPil

    from localimg.backends.diffusers.load.processors import image_only_processor

    images = Qwen2VLImageProcessorPil(
        patch_size=14,
        merge_size=2,
        temporal_patch_size=2,
        min_pixels=56 * 56,
        max_pixels=448 * 448,
    )
    return image_only_processor(images, qwen_tokenizer())


def make_qwen_image_edit_plus() -> Any:
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, QwenImageEditPlusPipeline

    torch.manual_seed(0)
    transformer = qwen_image_transformer()
    torch.manual_seed(0)
    # Scale factor 16 (the real one has 8): every input image is encoded at ~1 MP, which a
    # deeper tiny VAE keeps cheap (its attention runs at 1/16 of the side).
    vae = qwen_image_vae(levels=4)
    torch.manual_seed(0)
    text_encoder = qwen25_vl_encoder()
    processor = qwen_vl_processor()
    return QwenImageEditPlusPipeline(
        transformer=transformer,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=processor.tokenizer,
        processor=processor,
        scheduler=FlowMatchEulerDiscreteScheduler(**QWEN_SCHEDULER),
    )


def tiny_qwen_image_edit_plus_path() -> Path:
    """A tiny QwenImageEditPlusPipeline (Qwen-Image-Edit-2509/2511 style): multiples of 32.

    model_index.json names `transformers.Qwen2VLProcessor` for the processor, as the real repos
    do, not the torchvision-free subclass it was built with.
    """

    def make() -> Any:
        pipe = make_qwen_image_edit_plus()
        original = pipe.save_pretrained

        def save(folder: str, **kwargs: Any) -> None:
            original(folder, **kwargs)
            index = Path(folder) / "model_index.json"
            data = json.loads(index.read_text())
            data["processor"] = ["transformers", "Qwen2VLProcessor"]
            index.write_text(json.dumps(data, indent=2))

        pipe.save_pretrained = save
        return pipe

    return save_pipeline(family_folder("qwen-image-edit-plus"), make)


# --- Wan ----------------------------------------------------------------------------------------

# Wan's own scheduler (UniPC on flow sigmas; 480p shift). No `mu`: Wan sets no dynamic shift.
WAN_SCHEDULER = {"prediction_type": "flow_prediction", "use_flow_sigmas": True, "flow_shift": 3.0}


def wan_transformer(channels_in: int, channels_out: int) -> Any:
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=channels_in,
        out_channels=channels_out,
        text_dim=32,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    )


def make_wan() -> Any:
    import torch
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline

    torch.manual_seed(0)
    # Wan 2.1's VAE shape: 16 latent channels, 8x space, 4x time (8 base channels, not the fast
    # test's 3, so the frames vary more than a few levels).
    vae = AutoencoderKLWan(
        base_dim=8,
        z_dim=16,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
    )
    torch.manual_seed(0)
    text_encoder = t5_encoder(umt5=True)
    torch.manual_seed(0)
    transformer = wan_transformer(16, 16)
    return WanPipeline(
        tokenizer=t5_tokenizer(),
        text_encoder=text_encoder,
        vae=vae,
        scheduler=UniPCMultistepScheduler(**WAN_SCHEDULER),
        transformer=transformer,
    )


def tiny_wan_path() -> Path:
    """A tiny WanPipeline (Wan 2.1 text-to-video): sizes in multiples of 16, 4k+1 frames."""
    return save_pipeline(family_folder("wan"), make_wan)


def wan22_ti2v_parts() -> dict[str, Any]:
    """Wan 2.2 TI2V-5B's components at toy size (one checkpoint for text- and image-to-video)."""
    import torch
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler

    torch.manual_seed(0)
    vae = AutoencoderKLWan(  # Wan 2.2's VAE shape: 48 latent channels, 16x space, 4x time
        base_dim=8,
        z_dim=48,
        in_channels=12,
        out_channels=12,
        is_residual=True,
        patch_size=2,
        latents_mean=[0.0] * 48,
        latents_std=[1.0] * 48,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        scale_factor_spatial=16,
        scale_factor_temporal=4,
        temperal_downsample=[False, True, True],
    )
    torch.manual_seed(0)
    text_encoder = t5_encoder(umt5=True)
    torch.manual_seed(0)
    transformer = wan_transformer(48, 48)
    return {
        "tokenizer": t5_tokenizer(),
        "text_encoder": text_encoder,
        "vae": vae,
        "scheduler": UniPCMultistepScheduler(**WAN_SCHEDULER),
        "transformer": transformer,
        "transformer_2": None,
        "boundary_ratio": None,
        "expand_timesteps": True,
    }


def make_wan_i2v() -> Any:
    from diffusers import WanImageToVideoPipeline

    return WanImageToVideoPipeline(**wan22_ti2v_parts(), image_encoder=None, image_processor=None)


def tiny_wan22_ti2v_path() -> Path:
    """The same tiny Wan 2.2 TI2V-5B as a WanPipeline folder, as that repository is saved (to my
    knowledge): text-to-video as it is, image-to-video when loaded as WanImageToVideoPipeline."""
    from diffusers import WanPipeline

    return save_pipeline(family_folder("wan22-ti2v"), lambda: WanPipeline(**wan22_ti2v_parts()))


def tiny_wan_i2v_path() -> Path:
    """A tiny WanImageToVideoPipeline like Wan 2.2 TI2V-5B (no CLIP image encoder; the image is
    the first latent frame): sizes in multiples of 32, 4k+1 frames."""
    return save_pipeline(family_folder("wan-i2v"), make_wan_i2v)
