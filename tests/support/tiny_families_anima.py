"""A tiny random Anima, saved as diffusers' modular pipeline saves it.

Anima exists in diffusers 0.42 only as a modular pipeline (AnimaModularPipeline over
AnimaAutoBlocks): a folder with `modular_model_index.json` naming each component's class and
where it loads from. Its components at toy size (shapes after diffusers' own Cosmos and Anima fast
tests): a Qwen3 text encoder with the byte-level Qwen tokenizer, the T5 tokenizer whose token ids
the AnimaTextConditioner embeds as its queries, the Cosmos DiT (CosmosTransformer3DModel, 4 latent
channels), the Qwen-Image VAE with 3 downsamplings (scale 8: sizes are multiples of 16) and a
FlowMatchEulerDiscreteScheduler. The guider (ClassifierFreeGuidance) and the image processor are
made from their default configs by the pipeline itself, so they are not saved.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from tests.support.tiny_families_qwen_wan import qwen_image_vae
from tests.support.tiny_family_parts import (
    family_folder,
    qwen3_config,
    qwen_tokenizer,
    t5_tokenizer,
)
from tests.support.tiny_models import build_lock

TEXT_WIDTH = 16  # the Qwen3 encoder's hidden size = the conditioner's source width
EMBED_WIDTH = 16  # the conditioner's output = the transformer's text_embed_dim
T5_VOCAB = 256  # > the 192 pieces of t5_tokenizer


def anima_components() -> dict[str, Any]:
    """Every component the Anima blocks load from a folder, at toy size, seeded."""
    import torch
    from diffusers import AnimaTextConditioner, CosmosTransformer3DModel
    from diffusers import FlowMatchEulerDiscreteScheduler as FlowEuler
    from transformers import Qwen3Model

    torch.manual_seed(0)
    transformer = CosmosTransformer3DModel(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=12,
        num_layers=2,
        mlp_ratio=2,
        text_embed_dim=EMBED_WIDTH,
        adaln_lora_dim=4,
        max_size=(4, 32, 32),
        patch_size=(1, 2, 2),
        rope_scale=(1.0, 4.0, 4.0),  # Anima's own
        concat_padding_mask=True,
        extra_pos_embed_type=None,  # Anima's own
    )
    torch.manual_seed(0)
    conditioner = AnimaTextConditioner(
        source_dim=TEXT_WIDTH,
        target_dim=EMBED_WIDTH,
        model_dim=EMBED_WIDTH,
        num_layers=2,
        num_attention_heads=4,
        target_vocab_size=T5_VOCAB,
        min_sequence_length=64,  # Anima pads to 512: a batch pads no prompt further
    )
    torch.manual_seed(0)
    vae = qwen_image_vae(levels=3)
    torch.manual_seed(0)
    encoder = Qwen3Model(qwen3_config(TEXT_WIDTH, 2)).eval()
    return {
        "text_encoder": encoder,
        "tokenizer": qwen_tokenizer(),
        "t5_tokenizer": t5_tokenizer(),
        "text_conditioner": conditioner,
        "transformer": transformer,
        "vae": vae.eval(),
        "scheduler": FlowEuler(shift=3.0),
    }


def make_anima(folder: Path) -> None:
    """Save the tiny Anima into `folder` the way ModularPipeline.save_pretrained does."""
    from diffusers import AnimaAutoBlocks, AnimaModularPipeline

    pipe: Any = AnimaModularPipeline(blocks=AnimaAutoBlocks())
    pipe.update_components(**anima_components())
    pipe.save_pretrained(str(folder), overwrite_modular_index=True)


def tiny_anima_path() -> Path:
    """The cached tiny Anima folder (built once, all or nothing, under the build lock)."""
    folder = family_folder("anima")
    with build_lock():
        if (folder / "modular_model_index.json").is_file():
            return folder
        tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        make_anima(tmp)
        # The index names the folder each component was saved to: the final one after the rename
        # (a copied folder loads its own files either way: diffusers' _is_local_component).
        index = tmp / "modular_model_index.json"
        index.write_text(index.read_text(encoding="utf-8").replace(str(tmp), str(folder)))
        tmp.rename(folder)
    return folder
