"""Tiny models for the quantization and tiny-decoder tests, built into a test's own folder.

- a Qwen-Image base folder whose transformer is 64 wide (GGUF's Q8_0 quantizes rows in blocks of
  32 values, so the tiny family's 48-wide transformer would stay unquantized);
- a GGUF file of that transformer, written with gguf's own GGUFWriter and quantizer in the key
  layout Qwen-Image's published GGUF files use (diffusers' own names);
- a tiny random AutoencoderTiny folder with the tiny SD pipeline's latent shape.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def wide_qwen_transformer() -> Any:
    import torch
    from diffusers import QwenImageTransformer2DModel

    torch.manual_seed(0)
    return QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=2,
        attention_head_dim=32,
        num_attention_heads=2,
        joint_attention_dim=16,
        guidance_embeds=False,
        axes_dims_rope=(16, 8, 8),
    )


def qwen_base(tiny_qwen_image: Path, folder: Path) -> Path:
    """The tiny Qwen-Image pipeline with the 64-wide transformer, saved as a diffusers folder."""
    from diffusers import QwenImagePipeline

    pipe = QwenImagePipeline.from_pretrained(str(tiny_qwen_image))
    pipe.transformer = wide_qwen_transformer()
    pipe.save_pretrained(str(folder))
    return folder


def write_gguf(transformer: Any, path: Path, quant: str = "Q8_0") -> Path:
    """Each 2-D weight whose rows split into 32-value blocks quantized (as llama.cpp-style
    converters do), the rest (biases, norms, narrow layers) kept in F32."""
    import gguf

    kind = gguf.GGMLQuantizationType[quant]
    block = gguf.GGML_QUANT_SIZES[kind][0]
    writer = gguf.GGUFWriter(str(path), arch="qwen_image")
    for name, tensor in transformer.state_dict().items():
        values = tensor.float().numpy()
        if values.ndim == 2 and values.shape[-1] % block == 0:
            packed = gguf.quants.quantize(values, kind)
            writer.add_tensor(name, packed, raw_shape=packed.shape, raw_dtype=kind)
        else:
            writer.add_tensor(name, values)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def tiny_autoencoder(folder: Path, latent_channels: int = 4, blocks: int = 2) -> Path:
    """A random AutoencoderTiny decoding `latent_channels` latents at 2**(blocks-1) pixels each
    (the tiny SD pipeline: 4 channels, 2 pixels)."""
    import torch
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    vae = AutoencoderTiny(
        latent_channels=latent_channels,
        encoder_block_out_channels=(8,) * blocks,
        decoder_block_out_channels=(8,) * blocks,
        num_encoder_blocks=(1,) * blocks,
        num_decoder_blocks=(1,) * blocks,
    )
    vae.save_pretrained(str(folder))  # type: ignore[attr-defined]
    return folder
