"""A tiny Z-Image-Omni pipeline (ZImageOmniPipeline: text-to-image and reference edits).

Z-Image's transformer with its SigLIP branch switched on (`siglip_feat_dim`), the Qwen3 text
encoder and the 16-channel VAE of tests/support/tiny_families.py's Z-Image, plus the image side:
a Siglip2VisionModel and a Siglip2ImageProcessor. Without torchvision, transformers 5 builds
that processor (and loads it back) as its PIL version, so no torchvision is needed; the saved
model_index.json names `Siglip2ImageProcessor`, as a released repository would (NamedAsReleased).

Facts (diffusers 0.42): sizes in multiples of 4 here (a 2-level VAE x 2x2 patches; 16 on the real
model). guidance_scale is true CFG when above 0 (default 5.0); negative_prompt ("" when none) is
used only then; cfg_normalization and cfg_truncation (defaults False and 1.0) act only with CFG.
`image=[...]`: any number of reference images, or none (text-to-image); each is cropped to the
multiple, its SigLIP features read from the image as given. The prompt is cut per piece to
max_sequence_length (default 512) tokens. The text positions of the prompt's pieces share the
transformer's first RoPE axis (`axes_lens[0]`) and may not run past it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support.tiny_family_parts import (
    family_folder,
    qwen3_config,
    qwen_tokenizer,
    save_pipeline,
)

SIGLIP_HIDDEN = 16
# The first RoPE axis of the tiny transformer: room for a 512-token prompt (the default) and a
# few references, small enough to refuse a longer max_sequence_length.
TEXT_AXIS = 768


def omni_transformer() -> Any:
    import torch
    from diffusers import ZImageTransformer2DModel

    torch.manual_seed(0)
    transformer = ZImageTransformer2DModel(
        all_patch_size=(2,),
        all_f_patch_size=(1,),
        in_channels=16,
        dim=32,
        n_layers=2,
        n_refiner_layers=1,
        n_heads=2,
        n_kv_heads=2,
        norm_eps=1e-5,
        qk_norm=True,
        cap_feat_dim=16,
        siglip_feat_dim=SIGLIP_HIDDEN,
        rope_theta=256.0,
        t_scale=1000.0,
        axes_dims=[8, 4, 4],
        axes_lens=[TEXT_AXIS, 32, 32],
    )
    with torch.no_grad():  # made with torch.empty: fix them so no NaN sneaks in
        for name in ("x_pad_token", "cap_pad_token", "siglip_pad_token"):
            token = getattr(transformer, name)
            token.copy_(torch.ones_like(token))
    return transformer


def omni_vae() -> Any:
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        block_out_channels=[32, 64],
        layers_per_block=1,
        latent_channels=16,
        norm_num_groups=32,
        sample_size=32,
        scaling_factor=0.3611,
        shift_factor=0.1159,
    )


def siglip_parts() -> tuple[Any, Any]:
    """A 1-layer Siglip2VisionModel on 8-pixel patches and its processor (at most 16 patches,
    so a reference is read at about 32x32)."""
    import torch
    from transformers import Siglip2ImageProcessor, Siglip2VisionConfig, Siglip2VisionModel

    torch.manual_seed(0)
    config = Siglip2VisionConfig(
        hidden_size=SIGLIP_HIDDEN,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        patch_size=8,
        num_patches=16,
        vision_use_head=False,
    )
    model = Siglip2VisionModel(config).eval()
    processor = Siglip2ImageProcessor(patch_size=8, max_num_patches=16)
    return model, processor


def make_z_image_omni() -> Any:
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, ZImageOmniPipeline
    from transformers import Qwen3Model

    transformer = omni_transformer()
    vae = omni_vae()
    torch.manual_seed(0)
    text_encoder = Qwen3Model(qwen3_config(hidden=16, layers=2))
    siglip, processor = siglip_parts()
    return ZImageOmniPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=False),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=qwen_tokenizer(),
        transformer=transformer,
        siglip=siglip,
        siglip_processor=processor,
    )


class NamedAsReleased:
    """The pipeline, saved with its processor named `Siglip2ImageProcessor` in model_index.json as
    a repository saved with transformers 4 names it (transformers 5 writes the class it built,
    `Siglip2ImageProcessorPil` without torchvision); loading it runs transformers' own fallback."""

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe

    def save_pretrained(self, folder: str) -> None:
        self.pipe.save_pretrained(folder)
        index_file = Path(folder) / "model_index.json"
        index = json.loads(index_file.read_text(encoding="utf-8"))
        index["siglip_processor"] = ["transformers", "Siglip2ImageProcessor"]
        index_file.write_text(json.dumps(index, indent=2), encoding="utf-8")


def tiny_z_image_omni_path() -> Path:
    """A tiny ZImageOmniPipeline (Z-Image-Omni): sizes in multiples of 4."""
    return save_pipeline(
        family_folder("z-image-omni-2"), lambda: NamedAsReleased(make_z_image_omni())
    )
