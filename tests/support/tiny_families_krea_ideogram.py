"""Tiny Krea 2 and Ideogram 4 pipelines (diffusers 0.42), built offline for tests.

The shapes follow diffusers' fast tests (`tests/pipelines/krea2`, `tests/pipelines/ideogram4`),
with the byte-level Qwen tokenizer of tiny_family_parts in place of the hub's, and each VAE at the
real model's scale factor, so the size multiple is the real one (16 for both).

Krea2Pipeline: a Qwen3-VL text encoder whose hidden states of `text_encoder_select_layers` are
  stacked per token; the Qwen-Image VAE. guidance_scale follows Krea's convention: guidance runs
  when it is above 0 (cond + g x (cond - uncond)), with "" as the negative prompt when none is
  given. `is_distilled` (the turbo checkpoint) fixes the shift mu at 1.15; the base one computes mu
  from the image size (dynamic shifting). max_sequence_length pads/truncates the prompt.
Ideogram4Pipeline: a conditional `transformer` and an `unconditional_transformer` (asymmetric CFG:
  v = g x v_cond + (1 - g) x v_uncond), no negative prompt. guidance_scale (constant) and
  guidance_schedule (per step, default 45 x 7.0 + 3 x 3.0 for 48 steps) exclude each other. Its
  own logit-normal sigmas (mu, std). The prompt is left-padded to max_sequence_length and refused
  (ValueError) when longer. `prompt_upsampling` rewrites the prompt with the text encoder grafted
  onto the optional `prompt_enhancer_head` (up to max_sequence_length new tokens).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.tiny_families_qwen_wan import qwen_image_vae
from tests.support.tiny_family_parts import (
    QWEN_VOCAB,
    family_folder,
    qwen_token_id,
    qwen_tokenizer,
    save_pipeline,
)

# Krea 2's scheduler config (the pipeline's docstring): exponential dynamic shifting by image size.
KREA2_SCHEDULER = {
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 256,
    "max_image_seq_len": 6400,
}
IDEOGRAM_TEXT_HIDDEN = 8
# The Ideogram 4 pipeline taps Qwen3-VL layers 0, 3, ..., 35: the encoder needs 36 of them.
IDEOGRAM_TEXT_LAYERS = 36
IDEOGRAM_TAPS = 13


def qwen3_vl_encoder(hidden: int, layers: int) -> Any:
    """Qwen3VLModel at toy size, its token ids those of qwen_tokenizer (vision tower unused)."""
    from transformers import Qwen3VLConfig, Qwen3VLModel

    ids = {
        "pad_token_id": qwen_token_id("<|endoftext|>"),
        "eos_token_id": qwen_token_id("<|im_end|>"),
    }
    config = Qwen3VLConfig(
        text_config={
            "hidden_size": hidden,
            "intermediate_size": 16,
            "num_hidden_layers": layers,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "head_dim": 8,
            "vocab_size": QWEN_VOCAB,
            "max_position_embeddings": 8192,
            "rope_theta": 10_000.0,
            **ids,
        },
        vision_config={
            "hidden_size": 8,
            "depth": 1,
            "num_heads": 2,
            "intermediate_size": 16,
            "out_hidden_size": hidden,
            "patch_size": 14,
        },
        image_token_id=qwen_token_id("<|image_pad|>"),
        video_token_id=qwen_token_id("<|video_pad|>"),
        vision_start_token_id=qwen_token_id("<|vision_start|>"),
        vision_end_token_id=qwen_token_id("<|vision_end|>"),
    )
    return Qwen3VLModel(config).eval()


# --- Krea 2 --------------------------------------------------------------------------------------


def make_krea2(distilled: bool) -> Any:
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, Krea2Pipeline, Krea2Transformer2DModel

    torch.manual_seed(0)
    transformer = Krea2Transformer2DModel(
        in_channels=16,  # 4 latent channels x the 2x2 patch
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=32,
        timestep_embed_dim=8,
        text_hidden_dim=16,
        num_text_layers=3,
        text_num_attention_heads=2,
        text_num_key_value_heads=1,
        text_intermediate_size=16,
        num_layerwise_text_blocks=1,
        num_refiner_text_blocks=1,
        axes_dims_rope=(4, 2, 2),
        rope_theta=1000.0,
    )
    torch.manual_seed(0)
    vae = qwen_image_vae(levels=3)  # scale factor 8 as the real one: multiples of 16
    torch.manual_seed(0)
    text_encoder = qwen3_vl_encoder(hidden=16, layers=2)
    return Krea2Pipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**KREA2_SCHEDULER),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=qwen_tokenizer(),
        transformer=transformer,
        text_encoder_select_layers=(0, 1, 2),
        is_distilled=distilled,
    )


def tiny_krea2_path() -> Path:
    """A tiny Krea2Pipeline like the base (midtrain) checkpoint: CFG, dynamic shift."""
    return save_pipeline(family_folder("krea2"), lambda: make_krea2(distilled=False))


def tiny_krea2_turbo_path() -> Path:
    """A tiny Krea2Pipeline like the few-step distilled (TDM) checkpoint: `is_distilled`."""
    return save_pipeline(family_folder("krea2-turbo"), lambda: make_krea2(distilled=True))


# --- Ideogram 4 ----------------------------------------------------------------------------------


def ideogram4_transformer() -> Any:
    from diffusers import Ideogram4Transformer2DModel

    return Ideogram4Transformer2DModel(
        in_channels=16,  # 4 latent channels x the 2x2 patch
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        intermediate_size=32,
        adaln_dim=16,
        llm_features_dim=IDEOGRAM_TAPS * IDEOGRAM_TEXT_HIDDEN,
        rope_theta=10_000,
        mrope_section=(2, 1, 1),
        norm_eps=1e-5,
    )


def ideogram4_vae() -> Any:
    """AutoencoderKLFlux2 with four levels (scale factor 8, as the real one: multiples of 16)."""
    from diffusers import AutoencoderKLFlux2

    return AutoencoderKLFlux2(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(4, 4, 4, 4),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=1,
        patch_size=(2, 2),
        use_quant_conv=False,
        use_post_quant_conv=False,
    )


def end_soon(text_encoder: Any, head: Any) -> None:
    """Make the prompt enhancer end its rewrite after a few tokens (random weights never would
    within max_sequence_length, and the pipeline then refuses its own longer prompt).

    Only the enhancer reads the text model's final norm (the image's text features are the hidden
    states of the tapped layers, before it): with its weight on the first unit alone, the head's
    `<|im_end|>` row along that unit makes the end likely whenever the unit is positive.
    """
    import torch

    end = qwen_token_id("<|im_end|>")
    with torch.no_grad():
        text_encoder.language_model.norm.weight.zero_()
        text_encoder.language_model.norm.weight[0] = 1.0
        head.lm_head.weight[end].zero_()
        head.lm_head.weight[end, 0] = 10.0


def make_ideogram4(with_head: bool) -> Any:
    import torch
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        Ideogram4Pipeline,
        Ideogram4PromptEnhancerHead,
    )

    torch.manual_seed(0)
    transformer = ideogram4_transformer()
    torch.manual_seed(1)
    unconditional = ideogram4_transformer()
    torch.manual_seed(0)
    vae = ideogram4_vae()
    torch.manual_seed(0)
    text_encoder = qwen3_vl_encoder(hidden=IDEOGRAM_TEXT_HIDDEN, layers=IDEOGRAM_TEXT_LAYERS)
    torch.manual_seed(0)
    head = Ideogram4PromptEnhancerHead(hidden_size=IDEOGRAM_TEXT_HIDDEN, vocab_size=QWEN_VOCAB)
    end_soon(text_encoder, head)
    return Ideogram4Pipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=qwen_tokenizer(max_length=8192),
        transformer=transformer,
        unconditional_transformer=unconditional,
        prompt_enhancer_head=head if with_head else None,
    )


def tiny_ideogram4_path() -> Path:
    """A tiny Ideogram4Pipeline with its prompt enhancer head (prompt upsampling works)."""
    return save_pipeline(family_folder("ideogram4"), lambda: make_ideogram4(with_head=True))


def tiny_ideogram4_headless_path() -> Path:
    """The same tiny Ideogram4Pipeline without the optional prompt_enhancer_head."""
    return save_pipeline(
        family_folder("ideogram4-headless"), lambda: make_ideogram4(with_head=False)
    )


@contextmanager
def short_caption_instructions() -> Iterator[None]:
    """The prompt enhancer's instructions (about 7,900 byte tokens of schema and examples) cut to
    one sentence: on the tiny 36-layer encoder the full text alone takes most of a minute. The
    backend and a bare pipeline call read the same module constant, so they stay comparable."""
    from diffusers.pipelines.ideogram4 import prompt_enhancer

    saved = prompt_enhancer.CAPTION_SYSTEM_MESSAGE
    prompt_enhancer.CAPTION_SYSTEM_MESSAGE = "Rewrite the idea as a JSON caption."
    try:
        yield
    finally:
        prompt_enhancer.CAPTION_SYSTEM_MESSAGE = saved
