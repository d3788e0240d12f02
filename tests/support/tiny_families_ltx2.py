"""A tiny LTX-2 (`LTX2Pipeline`, text-to-video with audio) saved like the real repositories, which
LTX2ImageToVideoPipeline also loads (the same components).

The shapes follow diffusers' fast tests (tests/pipelines/ltx2/testing_utils.py) except the video
VAE, which keeps the real compression: 32x in space (4x4 patches, then three 2x steps) and 8x in
time, so sizes are multiples of 32 and frame counts 8k+1 as in the real model. The text encoder is
a toy Gemma 3 (vision tower included, unused for prompts) with a byte-fallback GemmaTokenizer
written here; LTX-2 feeds every hidden layer of it to its connectors. No prompt enhancer,
processor or duration head (the optional components of LTX-2.5).

Facts (diffusers 0.42.1): heights and widths must be multiples of 32 (a ValueError otherwise);
num_frames is rounded down to 8k+1 silently; frame_rate (float, default 24) sets the audio's
length and the transformer's time positions; guidance_scale (default 3) is the video's CFG and
audio_guidance_scale (default 7) the audio's, CFG (and the negative prompt) running when either
is above 1; the image-to-video pipeline re-compresses its input image as H.264 (CRF 33 for a
Gemma 3 model) through PyAV unless image_crf is 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.tiny_family_parts import family_folder, save_pipeline

GEMMA_SPECIALS = (
    "<pad>",
    "<eos>",
    "<bos>",
    "<unk>",
    "<mask>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<start_of_image>",
    "<end_of_image>",
    "<image_soft_token>",
)
GEMMA_VOCAB = 384  # > the 361 tokens of gemma_tokenizer


def gemma_vocab() -> dict[str, int]:
    """Gemma's specials, the 256 byte-fallback tokens, then printable ASCII and "▁"."""
    vocab = {token: i for i, token in enumerate(GEMMA_SPECIALS)}
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    for piece in ["▁", *(chr(c) for c in range(33, 127))]:
        vocab.setdefault(piece, len(vocab))
    return vocab


def gemma_tokenizer() -> Any:
    """A GemmaTokenizer (BPE, no merges, byte fallback) with Gemma 3's special tokens."""
    from transformers import GemmaTokenizer

    return GemmaTokenizer(vocab=gemma_vocab(), merges=[], model_max_length=1024)


def gemma3_encoder() -> Any:
    """Gemma3ForConditionalGeneration at toy size: 2 text layers of width 16."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    vocab = gemma_vocab()
    config = Gemma3Config(
        text_config={
            "vocab_size": GEMMA_VOCAB,
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 8,
            "max_position_embeddings": 2048,
            "sliding_window": 64,
            "pad_token_id": vocab["<pad>"],
            "eos_token_id": vocab["<eos>"],
            "bos_token_id": vocab["<bos>"],
        },
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 28,
            "patch_size": 14,
        },
        mm_tokens_per_image=4,
        boi_token_index=vocab["<start_of_image>"],
        eoi_token_index=vocab["<end_of_image>"],
        image_token_index=vocab["<image_soft_token>"],
    )
    return Gemma3ForConditionalGeneration(config).eval()


def ltx2_video_vae() -> Any:
    """AutoencoderKLLTX2Video with the real compression (32x space, 8x time) at 8 channels."""
    from diffusers import AutoencoderKLLTX2Video

    return AutoencoderKLLTX2Video(
        latent_channels=4,
        block_out_channels=(8, 8, 8),
        decoder_block_out_channels=(8, 8, 8),
        layers_per_block=(1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, True),
        decoder_spatio_temporal_scaling=(True, True, True),
        decoder_inject_noise=(False, False, False, False),
        downsample_type=("spatiotemporal", "spatiotemporal", "spatiotemporal"),
        upsample_type=("spatiotemporal", "spatiotemporal", "spatiotemporal"),
        upsample_residual=(False, False, False),
        upsample_factor=(1, 1, 1),
        patch_size=4,
        patch_size_t=1,
        timestep_conditioning=False,
    )


def ltx2_parts() -> dict[str, Any]:
    """The components of a tiny LTX-2 (diffusers' fast-test shapes, a real-ratio video VAE)."""
    import torch
    from diffusers import (
        AutoencoderKLLTX2Audio,
        FlowMatchEulerDiscreteScheduler,
        LTX2VideoTransformer3DModel,
    )
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder

    torch.manual_seed(0)
    text_encoder = gemma3_encoder()
    hidden = text_encoder.config.text_config.hidden_size
    layers = text_encoder.config.text_config.num_hidden_layers
    torch.manual_seed(0)
    transformer = LTX2VideoTransformer3DModel(
        in_channels=4,
        out_channels=4,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=2,
        attention_head_dim=8,
        cross_attention_dim=16,
        audio_in_channels=4,
        audio_out_channels=4,
        audio_num_attention_heads=2,
        audio_attention_head_dim=4,
        audio_cross_attention_dim=8,
        num_layers=2,
        qk_norm="rms_norm_across_heads",
        caption_channels=hidden,
        rope_double_precision=False,
        rope_type="split",
    )
    torch.manual_seed(0)
    connectors = LTX2TextConnectors(
        caption_channels=hidden,
        text_proj_in_factor=layers + 1,
        video_connector_num_attention_heads=2,  # x 8 = the text width
        video_connector_attention_head_dim=8,
        video_connector_num_layers=1,
        video_connector_num_learnable_registers=None,
        audio_connector_num_attention_heads=2,
        audio_connector_attention_head_dim=8,
        audio_connector_num_layers=1,
        audio_connector_num_learnable_registers=None,
        connector_rope_base_seq_len=32,
        rope_double_precision=False,
        rope_type="split",
    )
    torch.manual_seed(0)
    vae = ltx2_video_vae()
    torch.manual_seed(0)
    audio_vae = AutoencoderKLLTX2Audio(
        base_channels=4,
        output_channels=2,
        ch_mult=(1,),
        num_res_blocks=1,
        in_channels=2,
        resolution=32,
        latent_channels=2,
        mel_bins=8,
    )
    torch.manual_seed(0)
    vocoder = LTX2Vocoder(
        in_channels=2 * 8,
        hidden_channels=32,
        out_channels=2,
        upsample_kernel_sizes=[4, 4],
        upsample_factors=[2, 2],
        resnet_kernel_sizes=[3],
        resnet_dilations=[[1, 3, 5]],
        output_sampling_rate=16000,
    )
    return {
        "scheduler": FlowMatchEulerDiscreteScheduler(),
        "vae": vae,
        "audio_vae": audio_vae,
        "text_encoder": text_encoder,
        "tokenizer": gemma_tokenizer(),
        "connectors": connectors,
        "transformer": transformer,
        "vocoder": vocoder,
    }


def make_ltx2() -> Any:
    from diffusers import LTX2Pipeline

    return LTX2Pipeline(**ltx2_parts())


def tiny_ltx2_path() -> Path:
    """A tiny LTX2Pipeline (LTX-2.0/2.3 shape, no prompt enhancer): multiples of 32, 8k+1 frames."""
    return save_pipeline(family_folder("ltx2"), make_ltx2)


# Gemma's chat turns, with an image as <start_of_image> (the enhancer's image-to-video message).
GEMMA_CHAT_TEMPLATE = (
    "{%- for m in messages -%}<start_of_turn>{{ m['role'] }}\n"
    "{%- if m['content'] is string -%}{{ m['content'] }}"
    "{%- else -%}{%- for p in m['content'] -%}"
    "{%- if p['type'] == 'text' -%}{{ p['text'] }}{%- else -%}<start_of_image>{%- endif -%}"
    "{%- endfor -%}{%- endif -%}<end_of_turn>\n"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<start_of_turn>model\n{%- endif -%}"
)


def gemma3_processor() -> Any:
    """A Gemma3Processor (the PIL image processor, no torchvision) over gemma_tokenizer."""
    from transformers import Gemma3Processor, GemmaTokenizer
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    tokenizer = GemmaTokenizer(
        vocab=gemma_vocab(),
        merges=[],
        model_max_length=1024,
        extra_special_tokens={
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
            "image_token": "<image_soft_token>",
        },
    )
    tokenizer.chat_template = GEMMA_CHAT_TEMPLATE
    images = Gemma3ImageProcessorPil(size={"height": 28, "width": 28})
    return Gemma3Processor(image_processor=images, tokenizer=tokenizer, image_seq_length=4)


def make_ltx2_with_enhancer() -> Any:
    """LTX-2 with a prompt enhancer and its processor (the components LTX-2.5 adds). The real
    enhancer is a Gemma 4; the pipeline only calls its `generate`, which a second toy Gemma 3 has
    too, and Gemma 3's processor is the one transformers builds without torchvision."""
    import torch
    from diffusers import LTX2Pipeline

    parts = ltx2_parts()
    torch.manual_seed(1)
    return LTX2Pipeline(**parts, processor=gemma3_processor(), prompt_enhancer=gemma3_encoder())


def tiny_ltx2_enhancer_path() -> Path:
    """A tiny LTX2Pipeline with `prompt_enhancer` and `processor` (the prompt_enhance option)."""
    return save_pipeline(family_folder("ltx2-enhancer"), make_ltx2_with_enhancer)
