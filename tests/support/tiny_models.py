"""Tiny random-weight models built offline, for tests and benchmarks.

They have the real architectures (UNet, VAE, CLIP text encoder and tokenizer) at toy sizes, so the
real diffusers code runs end to end in well under a second per image on a CPU. Built once and
cached on disk under `LOCALIMG_TEST_CACHE` (default: `.test-cache/` in the repository).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CACHE_VERSION = "2"


_BUILD_LOCK: Any = None


@contextmanager
def build_lock() -> Iterator[None]:
    """One cache builder at a time across processes: pytest-xdist's workers share `.test-cache/`
    and would otherwise build the same model side by side (or read one half written). One lock
    object per process, so nested builders (a family that needs another file) re-enter it."""
    global _BUILD_LOCK
    if _BUILD_LOCK is None:
        from filelock import FileLock

        _BUILD_LOCK = FileLock(str(cache_dir() / ".build.lock"))
    with _BUILD_LOCK:
        yield


def cache_dir() -> Path:
    root = os.environ.get("LOCALIMG_TEST_CACHE")
    path = Path(root) if root else Path(__file__).resolve().parents[2] / ".test-cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte → printable character table."""
    visible = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    visible += list(range(ord("®"), ord("ÿ") + 1))
    chars = visible[:]
    extra = 0
    for byte in range(256):
        if byte not in visible:
            visible.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(visible, (chr(c) for c in chars), strict=True))


def write_tokenizer(folder: Path) -> None:
    """A CLIP BPE tokenizer with a byte-level vocabulary and no merges (one token per byte)."""
    folder.mkdir(parents=True, exist_ok=True)
    symbols = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for symbol in symbols:
        vocab[symbol] = len(vocab)
    for symbol in symbols:
        vocab[symbol + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    config = {
        "model_max_length": 77,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "tokenizer_class": "CLIPTokenizer",
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    (folder / "special_tokens_map.json").write_text(
        json.dumps({k: config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")}),
        encoding="utf-8",
    )


def kl_vae(channels: Sequence[int], groups: int, layers_per_block: int = 1) -> Any:
    """A KL VAE with one level per entry of `channels` (scale factor 2 per extra level)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=list(channels),
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * len(channels),
        up_block_types=["UpDecoderBlock2D"] * len(channels),
        layers_per_block=layers_per_block,
        latent_channels=4,
        norm_num_groups=groups,
    )


def tiny_vae(width: int, groups: int) -> Any:
    """A two-level KL VAE (scale factor 2) with `width`/`2*width` channels."""
    return kl_vae([width, 2 * width], groups)


def tiny_text_encoder(
    hidden: int, *, layers: int = 2, heads: int = 4, intermediate: int = 37, vocab: int = 1000
) -> Any:
    """A CLIP text encoder matching the tokenizer of `write_tokenizer` (2 layers by default).

    The vocabulary may be larger than the tokenizer's: an SD1-shaped encoder has 49408 rows, which
    stable-diffusion.cpp (with its own tokenizer) requires of a checkpoint.
    """
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=512,
            eos_token_id=513,
            pad_token_id=513,
            hidden_size=hidden,
            intermediate_size=intermediate,
            layer_norm_eps=1e-05,
            num_attention_heads=heads,
            num_hidden_layers=layers,
            vocab_size=vocab,
            max_position_embeddings=77,
            projection_dim=32,
        )
    )


def tiny_tokenizer(tmp: Path) -> Any:
    """The byte-level CLIP tokenizer, written under `tmp` and loaded."""
    from transformers import CLIPTokenizer

    write_tokenizer(tmp / "tokenizer-src")
    return CLIPTokenizer.from_pretrained(str(tmp / "tokenizer-src"))


def build_tiny_sd(folder: Path) -> Path:
    """Save a tiny random StableDiffusionPipeline (64x64 default size) to `folder`."""
    import torch
    from diffusers import EulerDiscreteScheduler, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=4,
        norm_num_groups=32,
    )
    vae = tiny_vae(width=32, groups=32)
    text_encoder = tiny_text_encoder(hidden=32)
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
    )
    return save_sd_pipeline(folder, unet, vae, text_encoder, scheduler)


def save_sd_pipeline(folder: Path, unet: Any, vae: Any, text_encoder: Any, scheduler: Any) -> Path:
    """Save a StableDiffusionPipeline with the local tokenizer to `folder`, all or nothing."""
    from diffusers import StableDiffusionPipeline

    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tiny_tokenizer(tmp),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(str(tmp))  # type: ignore[attr-defined]
    shutil.rmtree(tmp / "tokenizer-src")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def tiny_sd_path() -> Path:
    """The cached tiny SD folder, built on first use."""
    folder = cache_dir() / f"tiny-sd-v{CACHE_VERSION}"
    with build_lock():
        if not (folder / "model_index.json").is_file():
            build_tiny_sd(folder)
    return folder


def build_tiny_lora(pipe_folder: Path, out_file: Path, rank: int = 4, seed: int = 1) -> Path:
    """A random LoRA for the tiny UNet's attention projections, saved as diffusers LoRA weights."""
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, get_peft_model_state_dict

    unet = UNet2DConditionModel.from_pretrained(str(pipe_folder), subfolder="unet")
    unet.add_adapter(
        LoraConfig(r=rank, lora_alpha=rank, target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    )
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    layers: Any = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    out_file.parent.mkdir(parents=True, exist_ok=True)
    StableDiffusionPipeline.save_lora_weights(
        str(out_file.parent), unet_lora_layers=layers, weight_name=out_file.name
    )
    return out_file
