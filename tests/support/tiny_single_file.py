"""Write the tiny diffusers pipeline as one original-layout (ldm) checkpoint file.

Single-file loading (`from_single_file`) converts an original Stable Diffusion checkpoint — the
layout AUTOMATIC1111 and civitai files use — into diffusers modules. To test that path offline, this
module renames the tiny pipeline's weights back into that layout: UNet under
`model.diffusion_model.`, VAE under `first_stage_model.`, CLIP under
`cond_stage_model.transformer.text_model.`. The mapping covers the tiny UNet's shape (two levels,
two res blocks each, attention on the second level) and the tiny VAE.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
VAE_ATTENTION = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}


def ldm_unet_key(key: str, layers: int) -> str:
    """A diffusers UNet2DConditionModel key (SD1.x layout) → its original (ldm) name."""
    parts = key.split(".")
    simple = {
        "time_embedding.linear_1": "time_embed.0",
        "time_embedding.linear_2": "time_embed.2",
        "conv_in": "input_blocks.0.0",
        "conv_norm_out": "out.0",
        "conv_out": "out.2",
    }
    head, tail = ".".join(parts[:-1]), parts[-1]
    if head in simple:
        return f"{simple[head]}.{tail}"

    def resnet_inner(rest: list[str]) -> str:
        return ".".join([RESNET.get(rest[0], rest[0]), *rest[1:]])

    if parts[0] == "down_blocks":
        level, kind = int(parts[1]), parts[2]
        if kind == "downsamplers":
            return f"input_blocks.{(level + 1) * (layers + 1)}.0.op.{'.'.join(parts[5:])}"
        index = 1 + level * (layers + 1) + int(parts[3])
        if kind == "resnets":
            return f"input_blocks.{index}.0.{resnet_inner(parts[4:])}"
        return f"input_blocks.{index}.1.{'.'.join(parts[4:])}"
    if parts[0] == "mid_block":
        if parts[1] == "resnets":
            return f"middle_block.{2 * int(parts[2])}.{resnet_inner(parts[3:])}"
        return f"middle_block.1.{'.'.join(parts[3:])}"
    if parts[0] == "up_blocks":
        level, kind = int(parts[1]), parts[2]
        if kind == "upsamplers":
            return f"output_blocks.{level * (layers + 1) + layers}.@UP@.conv.{'.'.join(parts[5:])}"
        index = level * (layers + 1) + int(parts[3])
        if kind == "resnets":
            return f"output_blocks.{index}.0.{resnet_inner(parts[4:])}"
        return f"output_blocks.{index}.1.{'.'.join(parts[4:])}"
    raise KeyError(key)


def _vae_key(key: str, levels: int) -> tuple[str, bool]:
    """(ldm key, whether a linear weight must become a 1x1 conv)."""
    parts = key.split(".")
    side = parts[0]
    if side in ("quant_conv", "post_quant_conv"):
        return key, False
    rest = parts[1:]
    if rest[0] == "conv_norm_out":
        return ".".join([side, "norm_out", *rest[1:]]), False
    if rest[0] in ("conv_in", "conv_out"):
        return key, False
    if rest[0] == "mid_block":
        if rest[1] == "resnets":
            inner = ["nin_shortcut" if rest[3] == "conv_shortcut" else rest[3], *rest[4:]]
            return ".".join([side, "mid", f"block_{int(rest[2]) + 1}", *inner]), False
        name = ".".join(rest[3:-1])
        return ".".join([side, "mid", "attn_1", VAE_ATTENTION[name], rest[-1]]), True
    blocks = "down_blocks" if side == "encoder" else "up_blocks"
    assert rest[0] == blocks, key
    level = int(rest[1])
    ldm_level = level if side == "encoder" else levels - 1 - level
    group = "down" if side == "encoder" else "up"
    if rest[2] in ("downsamplers", "upsamplers"):
        op = "downsample" if side == "encoder" else "upsample"
        return ".".join([side, group, str(ldm_level), op, *rest[4:]]), False
    inner = ["nin_shortcut" if rest[4] == "conv_shortcut" else rest[4], *rest[5:]]
    return ".".join([side, group, str(ldm_level), "block", rest[3], *inner]), False


def write_ldm_checkpoint(pipe_folder: Path, out_file: Path) -> Path:
    """Save `pipe_folder` (the tiny SD pipeline) as one ldm-layout .safetensors file."""
    from safetensors.torch import load_file, save_file

    def component(name: str) -> dict[str, Any]:
        return load_file(str(next((pipe_folder / name).glob("*.safetensors"))))

    unet_config = json.loads((pipe_folder / "unet" / "config.json").read_text())
    layers = int(unet_config["layers_per_block"])
    attention_up_levels = {
        i for i, kind in enumerate(unet_config["up_block_types"]) if "CrossAttn" in kind
    }
    levels = len(
        json.loads((pipe_folder / "vae" / "config.json").read_text())["block_out_channels"]
    )
    checkpoint = {}
    for key, tensor in component("unet").items():
        ldm = ldm_unet_key(key, layers)
        if "@UP@" in ldm:
            level = int(key.split(".")[1])
            ldm = ldm.replace("@UP@", "2" if level in attention_up_levels else "1")
        checkpoint[f"model.diffusion_model.{ldm}"] = tensor.contiguous()
    for key, tensor in component("vae").items():
        ldm, to_conv = _vae_key(key, levels)
        if to_conv and tensor.ndim == 2:
            tensor = tensor[:, :, None, None]
        checkpoint[f"first_stage_model.{ldm}"] = tensor.contiguous()
    for key, tensor in component("text_encoder").items():
        name = key if key.startswith("text_model.") else f"text_model.{key}"
        checkpoint[f"cond_stage_model.transformer.{name}"] = tensor.contiguous()
    out_file.parent.mkdir(parents=True, exist_ok=True)
    save_file(checkpoint, str(out_file))
    return out_file
