"""Random-weight files stable-diffusion.cpp loads as a real SD1 model, for tests and benchmarks.

stable-diffusion.cpp only loads architectures it knows, so a toy-sized model will not do. The
smallest SD1 family member it knows is the "tiny UNet" (BK-SDM-Tiny): it is detected from a
768-wide CLIP text encoder, no `middle_block.1.*` keys and an `output_blocks.7.1.*` key. Its layout
(from unet.hpp of stable-diffusion.cpp): three levels of 320/640/1280 channels, one res block plus
one attention block per level, the original block numbering kept (input blocks 1/4/7 with
downsamplers at 3 and 6; output blocks 0,1 / 3,4 / 6,7 with upsamplers at 2.1 and 5.2).

No KL VAE is written: a random TAESD (passed as `taesd_path`) encodes and decodes the latents. It is
initialised so its output is mid-grey noise rather than clipped black and white, which makes pixel
comparisons between seeds meaningful. Everything is written once with numpy + safetensors and cached
next to the diffusers fixtures (`tests.support.tiny_models.cache_dir()`).
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.support.ggml_writer import Writer, build, clip_l_text
from tests.support.tiny_models import cache_dir

CACHE_VERSION = "2"
CHECKPOINT = "tiny-sd1-unet.safetensors"
TAESD = "tiny-taesd.safetensors"
LORA = "tiny-lora.safetensors"


def _resblock(w: Writer, name: str, n_in: int, n_out: int, emb: int = 1280) -> None:
    w.norm(f"{name}.in_layers.0", n_in)
    w.conv(f"{name}.in_layers.2", n_in, n_out)
    w.linear(f"{name}.emb_layers.1", emb, n_out, bias=True)
    w.norm(f"{name}.out_layers.0", n_out)
    w.conv(f"{name}.out_layers.3", n_out, n_out)
    if n_in != n_out:
        w.conv(f"{name}.skip_connection", n_in, n_out, k=1)


def _transformer(w: Writer, name: str, channels: int, context: int = 768) -> None:
    w.norm(f"{name}.norm", channels)
    w.conv(f"{name}.proj_in", channels, channels, k=1)
    block = f"{name}.transformer_blocks.0"
    for attn, kv_dim in (("attn1", channels), ("attn2", context)):
        w.linear(f"{block}.{attn}.to_q", channels, channels, bias=False)
        w.linear(f"{block}.{attn}.to_k", kv_dim, channels, bias=False)
        w.linear(f"{block}.{attn}.to_v", kv_dim, channels, bias=False)
        w.linear(f"{block}.{attn}.to_out.0", channels, channels, bias=True)
    w.linear(f"{block}.ff.net.0.proj", channels, channels * 4 * 2, bias=True)  # GEGLU
    w.linear(f"{block}.ff.net.2", channels * 4, channels, bias=True)
    for index in (1, 2, 3):
        w.norm(f"{block}.norm{index}", channels)
    w.conv(f"{name}.proj_out", channels, channels, k=1)


def _unet(w: Writer) -> None:
    p = "model.diffusion_model"
    w.linear(f"{p}.time_embed.0", 320, 1280, bias=True)
    w.linear(f"{p}.time_embed.2", 1280, 1280, bias=True)
    w.conv(f"{p}.input_blocks.0.0", 4, 320)
    # (block index, in, out) of the input res blocks; each has an attention block `.1`.
    for index, n_in, n_out in ((1, 320, 320), (4, 320, 640), (7, 640, 1280)):
        _resblock(w, f"{p}.input_blocks.{index}.0", n_in, n_out)
        _transformer(w, f"{p}.input_blocks.{index}.1", n_out)
    for index, channels in ((3, 320), (6, 640)):
        w.conv(f"{p}.input_blocks.{index}.0.op", channels, channels)
    # Output res blocks take the skip connection concatenated: (index, in, out).
    outputs = (
        (0, 1280 + 1280, 1280),
        (1, 1280 + 640, 1280),
        (3, 1280 + 640, 640),
        (4, 640 + 320, 640),
        (6, 640 + 320, 320),
        (7, 320 + 320, 320),
    )
    for index, n_in, n_out in outputs:
        _resblock(w, f"{p}.output_blocks.{index}.0", n_in, n_out)
        _transformer(w, f"{p}.output_blocks.{index}.1", n_out)
    w.conv(f"{p}.output_blocks.2.1.conv", 1280, 1280)
    w.conv(f"{p}.output_blocks.5.2.conv", 640, 640)
    w.norm(f"{p}.out.0", 320)
    # A small noise prediction: the latents stay in TAESD's unclipped range, so samplers and
    # seeds give visibly different images (a large one saturates every image the same way).
    w.conv(f"{p}.out.2", 320, 4, gain=0.05)


def _taeblocks(w: Writer, name: str) -> None:
    # He init (ReLU between the convs); the last conv small so that the residual sums of ten
    # blocks do not blow the activations up.
    w.conv(f"{name}.conv.0", 64, 64, gain=2**0.5)
    w.conv(f"{name}.conv.2", 64, 64, gain=2**0.5)
    w.conv(f"{name}.conv.4", 64, 64, gain=0.5)


def _taesd(w: Writer) -> None:
    """TAESD for SD1 latents (4 channels), encoder and decoder, 64 channels wide."""
    enc = "encoder.layers"
    w.conv(f"{enc}.0", 3, 64, gain=2**0.5)
    _taeblocks(w, f"{enc}.1")
    for down, blocks in ((2, (3, 4, 5)), (6, (7, 8, 9)), (10, (11, 12, 13))):
        w.conv(f"{enc}.{down}", 64, 64, bias=False, gain=2**0.5)
        for index in blocks:
            _taeblocks(w, f"{enc}.{index}")
    w.conv(f"{enc}.14", 64, 4, gain=0.5)
    dec = "decoder.layers"
    w.conv(f"{dec}.0", 4, 64, gain=2**0.5)
    for index in (2, 3, 4, 7, 8, 9, 12, 13, 14, 17):
        _taeblocks(w, f"{dec}.{index}")
    for index in (6, 11, 16):  # after each 2x upsample
        w.conv(f"{dec}.{index}", 64, 64, bias=False, gain=2**0.5)
    # Small last layer around 0.5: mid-grey noise instead of black/white clipping.
    w.conv(f"{dec}.18", 64, 3, gain=0.05)
    w.const(f"{dec}.18.bias", (3,), 0.5)


def _lora(w: Writer) -> None:
    """A rank-4 kohya-style LoRA on the attention projections of the first input block."""
    for attn, context in (("attn1", 320), ("attn2", 768)):
        for proj, n_in in (("to_q", 320), ("to_k", context), ("to_v", context)):
            key = f"lora_unet_input_blocks_1_1_transformer_blocks_0_{attn}_{proj}"
            w.normal(f"{key}.lora_down.weight", (4, n_in), 1.0)
            w.normal(f"{key}.lora_up.weight", (320, 4), 1.0)
            w.const(f"{key}.alpha", (), 4.0)


def folder() -> Path:
    path = cache_dir() / f"ggml-v{CACHE_VERSION}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def tiny_checkpoint_path() -> Path:
    """The SD1 tiny-UNet checkpoint (UNet + CLIP text encoder, no VAE), about 0.9 GB in f16."""

    def fill(w: Writer) -> None:
        _unet(w)
        clip_l_text(w, "cond_stage_model.transformer.text_model")  # SD1 checkpoint names

    return build(folder() / CHECKPOINT, fill, seed=1)


def tiny_taesd_path() -> Path:
    return build(folder() / TAESD, _taesd, seed=2)


def tiny_lora_path() -> Path:
    return build(folder() / LORA, _lora, seed=3)


if __name__ == "__main__":
    for built in (tiny_checkpoint_path(), tiny_taesd_path(), tiny_lora_path()):
        print(built, f"{built.stat().st_size / 1e6:.1f} MB")


SEED_YAML = """\
name: stablediffusion
backend: stablediffusion-ggml
parameters:
  model: gguf_model.safetensors
step: 2
cfg_scale: 4.5
size: 64x64
options:
- "taesd_path:taesd.safetensors"
- "sampler:euler"
"""


def link_or_copy(source: Path, target: Path) -> None:
    """A hard link (instant, no space) where the file system allows, else a copy."""
    import shutil

    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def populate_models_dir(folder: Path, files: dict[str, Path]) -> Path:
    """The files under the names the YAML uses, plus `stablediffusion.yaml` (the seed's shape,
    without the clip_l/clip_g/t5xxl files that SD1 does not need)."""
    folder.mkdir(parents=True, exist_ok=True)
    link_or_copy(files["model"], folder / "gguf_model.safetensors")
    link_or_copy(files["taesd"], folder / "taesd.safetensors")
    (folder / "loras").mkdir(exist_ok=True)
    link_or_copy(files["lora"], folder / "loras" / "mylora.safetensors")
    (folder / "stablediffusion.yaml").write_text(SEED_YAML, encoding="utf-8")
    return folder
