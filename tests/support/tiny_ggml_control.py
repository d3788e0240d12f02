"""A full-width random SD1.5 checkpoint and SD1.5 ControlNets that stable-diffusion.cpp loads.

stable-diffusion.cpp builds its ControlNet with SD1.5's fixed widths (control.hpp: 320/640/1280
channels, two res blocks per level, thirteen outputs added to the UNet's skip connections), so
the UNet it feeds must be a full SD1.5 UNet too: the tiny UNet of tiny_ggml.py has fewer skip
connections. The UNet is written at full width in f16 (about 1.7 GB), with the 768-wide CLIP text
encoder SD1 checkpoints carry; no VAE (the tiny TAESD of tiny_ggml.py decodes). The ControlNet
files use the original `control_model.*` names (lllyasviel's layout, which stable-diffusion.cpp
strips to its own), about 0.7 GB each in f16. All are written once into the test cache.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.ggml_writer import Writer, build, clip_l_text
from tests.support.tiny_ggml import folder
from tests.support.tiny_single_file import ldm_unet_key

CHECKPOINT = "sd15-full-unet.safetensors"
CONTROLNETS = ("sd15-control-a.safetensors", "sd15-control-b.safetensors")
# (block index, in, out, attention) of SD1.5's input res blocks; downsamplers at 3, 6 and 9.
INPUT_BLOCKS = (
    (1, 320, 320, True),
    (2, 320, 320, True),
    (4, 320, 640, True),
    (5, 640, 640, True),
    (7, 640, 1280, True),
    (8, 1280, 1280, True),
    (10, 1280, 1280, False),
    (11, 1280, 1280, False),
)
DOWNSAMPLERS = ((3, 320), (6, 640), (9, 1280))
# Output res blocks take the skip connection concatenated: (index, in, out, attention).
OUTPUT_BLOCKS = (
    (0, 2560, 1280, False),
    (1, 2560, 1280, False),
    (2, 2560, 1280, False),
    (3, 2560, 1280, True),
    (4, 2560, 1280, True),
    (5, 1920, 1280, True),
    (6, 1920, 640, True),
    (7, 1280, 640, True),
    (8, 960, 640, True),
    (9, 960, 320, True),
    (10, 640, 320, True),
    (11, 640, 320, True),
)
# (output block, index of the upsampler inside it, channels)
UPSAMPLERS = ((2, 1, 1280), (5, 2, 1280), (8, 2, 640))


def resblock(w: Writer, name: str, n_in: int, n_out: int) -> None:
    w.norm(f"{name}.in_layers.0", n_in)
    w.conv(f"{name}.in_layers.2", n_in, n_out)
    w.linear(f"{name}.emb_layers.1", 1280, n_out, bias=True)
    w.norm(f"{name}.out_layers.0", n_out)
    w.conv(f"{name}.out_layers.3", n_out, n_out)
    if n_in != n_out:
        w.conv(f"{name}.skip_connection", n_in, n_out, k=1)


def transformer(w: Writer, name: str, channels: int) -> None:
    """SD1's spatial transformer: 1x1 conv projections, one block, 768-wide cross-attention."""
    w.norm(f"{name}.norm", channels)
    w.conv(f"{name}.proj_in", channels, channels, k=1)
    block = f"{name}.transformer_blocks.0"
    for attn, kv_dim in (("attn1", channels), ("attn2", 768)):
        w.linear(f"{block}.{attn}.to_q", channels, channels)
        w.linear(f"{block}.{attn}.to_k", kv_dim, channels)
        w.linear(f"{block}.{attn}.to_v", kv_dim, channels)
        w.linear(f"{block}.{attn}.to_out.0", channels, channels, bias=True)
    w.linear(f"{block}.ff.net.0.proj", channels, channels * 8, bias=True)  # GEGLU
    w.linear(f"{block}.ff.net.2", channels * 4, channels, bias=True)
    for index in (1, 2, 3):
        w.norm(f"{block}.norm{index}", channels)
    w.conv(f"{name}.proj_out", channels, channels, k=1)


def encoder_half(w: Writer, p: str) -> None:
    """What the UNet and the ControlNet share: time embedding, input blocks, middle block."""
    w.linear(f"{p}.time_embed.0", 320, 1280, bias=True)
    w.linear(f"{p}.time_embed.2", 1280, 1280, bias=True)
    w.conv(f"{p}.input_blocks.0.0", 4, 320)
    for index, n_in, n_out, attention in INPUT_BLOCKS:
        resblock(w, f"{p}.input_blocks.{index}.0", n_in, n_out)
        if attention:
            transformer(w, f"{p}.input_blocks.{index}.1", n_out)
    for index, channels in DOWNSAMPLERS:
        w.conv(f"{p}.input_blocks.{index}.0.op", channels, channels)
    resblock(w, f"{p}.middle_block.0", 1280, 1280)
    transformer(w, f"{p}.middle_block.1", 1280)
    resblock(w, f"{p}.middle_block.2", 1280, 1280)


def unet(w: Writer) -> None:
    p = "model.diffusion_model"
    encoder_half(w, p)
    for index, n_in, n_out, attention in OUTPUT_BLOCKS:
        resblock(w, f"{p}.output_blocks.{index}.0", n_in, n_out)
        if attention:
            transformer(w, f"{p}.output_blocks.{index}.1", n_out)
    for index, inner, channels in UPSAMPLERS:
        w.conv(f"{p}.output_blocks.{index}.{inner}.conv", channels, channels)
    w.norm(f"{p}.out.0", 320)
    # A small noise prediction keeps the latents in TAESD's unclipped range (as tiny_ggml.py).
    w.conv(f"{p}.out.2", 320, 4, gain=0.05)


def controlnet(w: Writer) -> None:
    """SD1.5's ControlNet: the UNet's encoder half, the hint encoder and the zero convolutions
    (random here, so that the control image visibly moves the output)."""
    p = "control_model"
    encoder_half(w, p)
    hint = ((0, 3, 16), (2, 16, 16), (4, 16, 32), (6, 32, 32), (8, 32, 96), (10, 96, 96))
    for index, n_in, n_out in (*hint, (12, 96, 256), (14, 256, 320)):
        w.conv(f"{p}.input_hint_block.{index}", n_in, n_out)
    channels = [320, *(n_out for _, _, n_out, _ in INPUT_BLOCKS)]
    channels += [channels_of for _, channels_of in DOWNSAMPLERS]
    order = [0, 1, 2, 4, 5, 7, 8, 10, 11, 3, 6, 9]
    for index, width in zip(order, channels, strict=True):
        w.conv(f"{p}.zero_convs.{index}.0", width, width, k=1, gain=0.5)
    w.conv(f"{p}.middle_block_out.0", 1280, 1280, k=1, gain=0.5)


def sd15_checkpoint_path() -> Path:
    """The full-width random SD1.5 checkpoint (UNet + CLIP text encoder, no VAE)."""

    def fill(w: Writer) -> None:
        unet(w)
        clip_l_text(w, "cond_stage_model.transformer.text_model")

    return build(folder() / CHECKPOINT, fill, seed=11)


def controlnet_paths() -> tuple[Path, Path]:
    """Two SD1.5 ControlNets with different random weights."""
    first = build(folder() / CONTROLNETS[0], controlnet, seed=12)
    second = build(folder() / CONTROLNETS[1], controlnet, seed=13)
    return first, second


# -- a diffusers ControlNet as one original-layout file (the benchmarks' SD1.5 ControlNet) --------

# The ControlNet's own parts; its copy of the UNet's encoder is named as the UNet's is.
CONTROLNET_ONLY = {
    "controlnet_cond_embedding.conv_in": "input_hint_block.0",
    "controlnet_cond_embedding.conv_out": "input_hint_block.14",
    "controlnet_mid_block": "middle_block_out.0",
}


def ldm_controlnet_key(key: str, layers: int = 2) -> str:
    """A diffusers ControlNetModel key (SD1.x) → its original (ldm) name, without the prefix."""
    parts = key.split(".")
    head, tail = ".".join(parts[:-1]), parts[-1]
    if head in CONTROLNET_ONLY:
        return f"{CONTROLNET_ONLY[head]}.{tail}"
    if parts[0] == "controlnet_cond_embedding":  # blocks.i: the convs between the SiLUs
        return f"input_hint_block.{2 * (int(parts[2]) + 1)}.{tail}"
    if parts[0] == "controlnet_down_blocks":
        return f"zero_convs.{parts[1]}.0.{tail}"
    return ldm_unet_key(key, layers)


def ldm_controlnet_file(folder: Path, out_file: Path) -> Path:
    """A diffusers SD1.x ControlNet folder written as one `control_model.*` .safetensors file
    (the layout stable-diffusion.cpp reads), once."""
    from safetensors.numpy import load_file

    from tests.support.ggml_writer import save_safetensors
    from tests.support.tiny_models import build_lock

    with build_lock():
        if not out_file.exists():
            weights = load_file(str(next(folder.glob("*.safetensors"))))
            tensors = {f"control_model.{ldm_controlnet_key(k)}": v for k, v in weights.items()}
            save_safetensors(tensors, out_file)
    return out_file


if __name__ == "__main__":
    for built in (sd15_checkpoint_path(), *controlnet_paths()):
        print(built, f"{built.stat().st_size / 1e6:.1f} MB")
