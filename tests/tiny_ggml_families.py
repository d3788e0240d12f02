"""Random-weight files stable-diffusion.cpp 0.4.7 loads as the 2025-26 families, for tests.

stable-diffusion.cpp tells a family from tensor names only (model.cpp, get_sd_version) and then
builds the network with some dimensions read from the file and others fixed in code. What the
vendored version (stable-diffusion-cpp-python 0.4.7) reads, and so what can be tiny here:

- FLUX.2 klein (flux.hpp): `double_stream_modulation_img.lin.weight` marks FLUX.2, and without
  `single_blocks.47.*` it is klein (a Qwen3 encoder). Depth, hidden and context width (`txt_in`)
  and head_dim (`key_norm.scale`) come from the file; the rope axes are fixed at 4x32, so heads
  are 128 wide: hidden 128 is one head. One double and one single block: ~1.5 MB.
- FLUX.1 (Kontext is the same network; sd.cpp cannot tell them apart): `double_blocks.*` without
  the FLUX.2 modulation; the same dimensions are read (axes 16+56+56 = head_dim 128). No text
  encoder file: sd.cpp then conditions on zeros ("No text encoders provided").
- Qwen3 text encoder (llm.hpp): layers, hidden, vocab and MLP width come from the file; heads are
  fixed (32 x 128 for queries, 8 x 128 for keys/values). The built-in Qwen2 tokenizer emits ids up
  to ~151,668, so the vocabulary stays 151,936: ~20 MB at hidden 64, one layer. With fewer layers
  than the family's output layers (klein reads 9, 18, 27) the final norm is the output, so the
  transformer's context width is the LLM's hidden size.
- Wan 2.1 (wan.hpp): `blocks.0.cross_attn.norm_k.weight` marks Wan; dims come from the file (see
  wan_transformer). The UMT5 encoder is fixed at XXL size, so none is written (zero context).
- Tiny autoencoders (tae.hpp, `taesd_path`): fixed 64 channels; z 32 with group-norm mid blocks
  for FLUX.2 (TAEF2), z 16 for FLUX.1 (TAEF1), and the video one (TAEW2.1) for Wan. The full VAEs
  (fixed, ~100 MB and more) are never built when a TAE is given.

Not tiny in 0.4.7 (so not written here): Qwen-Image (24 heads x 128 and a 3584-wide Qwen2.5-VL
fixed: ~0.55 GB at one block), Z-Image (its transformer reads its dims from the file, but the
Qwen3 context must be 2560 wide), FLUX.2-dev (Mistral-Small 3.2, 5120 wide).

Everything is written once with numpy + safetensors and cached next to the other fixtures.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tests.tiny_models import cache_dir

CACHE_VERSION = "1"
VOCAB = 151_936  # Qwen2/3 tokenizer size

Tensors = dict[str, np.ndarray]


class Writer:
    """Collects tensors from a fixed random stream so the files are the same on every machine."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.tensors: Tensors = {}

    def normal(self, name: str, shape: tuple[int, ...], std: float) -> None:
        data = self.rng.standard_normal(size=shape, dtype=np.float32)
        data *= np.float32(std)
        self.tensors[name] = data.astype(np.float16)

    def const(self, name: str, shape: tuple[int, ...], value: float) -> None:
        self.tensors[name] = np.full(shape, value, dtype=np.float16)

    def linear(
        self, name: str, n_in: int, n_out: int, bias: bool = False, gain: float = 1.0
    ) -> None:
        self.normal(f"{name}.weight", (n_out, n_in), gain * n_in**-0.5)
        if bias:
            self.const(f"{name}.bias", (n_out,), 0.0)

    def conv(
        self,
        name: str,
        n_in: int,
        n_out: int,
        k: int = 3,
        bias: bool = True,
        gain: float = 1.0,
    ) -> None:
        self.normal(f"{name}.weight", (n_out, n_in, k, k), gain * (n_in * k * k) ** -0.5)
        if bias:
            self.const(f"{name}.bias", (n_out,), 0.0)

    def norm(self, name: str, channels: int, bias: bool = True) -> None:
        self.const(f"{name}.weight", (channels,), 1.0)
        if bias:
            self.const(f"{name}.bias", (channels,), 0.0)


# -- FLUX.2 klein / FLUX.1 transformers ------------------------------------------------------------

HIDDEN = 128  # one 128-wide head


def _qk_norm(w: Writer, name: str) -> None:
    w.const(f"{name}.query_norm.scale", (128,), 1.0)
    w.const(f"{name}.key_norm.scale", (128,), 1.0)


def flux2_klein(w: Writer, context: int = 64) -> None:
    """BFL-format FLUX.2 klein: 1 double + 1 single block, no biases, shared modulations."""
    h, mlp = HIDDEN, HIDDEN * 3
    w.linear("img_in", 128, h)
    w.linear("txt_in", context, h)
    w.linear("time_in.in_layer", 256, h)
    w.linear("time_in.out_layer", h, h)
    w.linear("double_stream_modulation_img.lin", h, 6 * h, gain=0.1)
    w.linear("double_stream_modulation_txt.lin", h, 6 * h, gain=0.1)
    w.linear("single_stream_modulation.lin", h, 3 * h, gain=0.1)
    for stream in ("img", "txt"):
        block = f"double_blocks.0.{stream}"
        w.linear(f"{block}_attn.qkv", h, 3 * h)
        _qk_norm(w, f"{block}_attn.norm")
        w.linear(f"{block}_attn.proj", h, h)
        w.linear(f"{block}_mlp.0", h, 2 * mlp)  # SiLU-gated
        w.linear(f"{block}_mlp.2", mlp, h)
    w.linear("single_blocks.0.linear1", h, 3 * h + 2 * mlp)
    w.linear("single_blocks.0.linear2", h + mlp, h)
    _qk_norm(w, "single_blocks.0.norm")
    w.linear("final_layer.linear", h, 128, gain=0.3)
    w.linear("final_layer.adaLN_modulation.1", h, 2 * h, gain=0.1)


def flux1(w: Writer) -> None:
    """BFL-format FLUX.1 (dev / Kontext): 1 double + 1 single block, guidance embedding, biases.

    The context width stays T5's 4096 and the vector CLIP-L's 768: without text encoder files
    sd.cpp feeds zeros of those widths."""
    h, mlp = HIDDEN, HIDDEN * 4
    w.linear("img_in", 64, h, bias=True)
    w.linear("txt_in", 4096, h, bias=True)
    for embed, n_in in (("time_in", 256), ("vector_in", 768), ("guidance_in", 256)):
        w.linear(f"{embed}.in_layer", n_in, h, bias=True)
        w.linear(f"{embed}.out_layer", h, h, bias=True)
    for stream in ("img", "txt"):
        block = f"double_blocks.0.{stream}"
        w.linear(f"{block}_mod.lin", h, 6 * h, bias=True, gain=0.1)
        w.linear(f"{block}_attn.qkv", h, 3 * h, bias=True)
        _qk_norm(w, f"{block}_attn.norm")
        w.linear(f"{block}_attn.proj", h, h, bias=True)
        w.linear(f"{block}_mlp.0", h, mlp, bias=True)
        w.linear(f"{block}_mlp.2", mlp, h, bias=True)
    w.linear("single_blocks.0.modulation.lin", h, 3 * h, bias=True, gain=0.1)
    w.linear("single_blocks.0.linear1", h, 3 * h + mlp, bias=True)
    w.linear("single_blocks.0.linear2", h + mlp, h, bias=True)
    _qk_norm(w, "single_blocks.0.norm")
    w.linear("final_layer.linear", h, 64, bias=True, gain=0.3)
    w.linear("final_layer.adaLN_modulation.1", h, 2 * h, bias=True, gain=0.1)


# -- Qwen3 text encoder ----------------------------------------------------------------------------


def qwen3(w: Writer, hidden: int = 64, layers: int = 1, intermediate: int = 128) -> None:
    """HF-format Qwen3 (`model.*`): fixed 32 query and 8 key/value heads of 128."""
    w.normal("model.embed_tokens.weight", (VOCAB, hidden), 1.0)
    for layer in range(layers):
        p = f"model.layers.{layer}"
        w.linear(f"{p}.self_attn.q_proj", hidden, 32 * 128)
        w.linear(f"{p}.self_attn.k_proj", hidden, 8 * 128)
        w.linear(f"{p}.self_attn.v_proj", hidden, 8 * 128)
        w.linear(f"{p}.self_attn.o_proj", 32 * 128, hidden)
        w.const(f"{p}.self_attn.q_norm.weight", (128,), 1.0)
        w.const(f"{p}.self_attn.k_norm.weight", (128,), 1.0)
        w.linear(f"{p}.mlp.gate_proj", hidden, intermediate)
        w.linear(f"{p}.mlp.up_proj", hidden, intermediate)
        w.linear(f"{p}.mlp.down_proj", intermediate, hidden)
        w.const(f"{p}.input_layernorm.weight", (hidden,), 1.0)
        w.const(f"{p}.post_attention_layernorm.weight", (hidden,), 1.0)
    w.const("model.norm.weight", (hidden,), 1.0)


# -- tiny autoencoders -----------------------------------------------------------------------------


def _tae_block(w: Writer, name: str, gn: bool = False) -> None:
    w.conv(f"{name}.conv.0", 64, 64, gain=2**0.5)
    w.conv(f"{name}.conv.2", 64, 64, gain=2**0.5)
    w.conv(f"{name}.conv.4", 64, 64, gain=0.5)
    if gn:
        w.conv(f"{name}.pool.0", 64, 256, k=1, bias=False, gain=0.5)
        w.norm(f"{name}.pool.1", 256)
        w.conv(f"{name}.pool.3", 256, 64, k=1, bias=False, gain=0.5)


def image_tae(w: Writer, z: int, gn: bool) -> None:
    """TAESD-style encoder + decoder for `z` latent channels (TAEF1: 16, TAEF2: 32 with GN)."""
    enc = "encoder.layers"
    w.conv(f"{enc}.0", 3, 64, gain=2**0.5)
    _tae_block(w, f"{enc}.1")
    for down, blocks in ((2, (3, 4, 5)), (6, (7, 8, 9)), (10, (11, 12, 13))):
        w.conv(f"{enc}.{down}", 64, 64, bias=False, gain=2**0.5)
        for index in blocks:
            _tae_block(w, f"{enc}.{index}", gn=gn and down == 10)
    w.conv(f"{enc}.14", 64, z, gain=0.5)
    dec = "decoder.layers"
    w.conv(f"{dec}.0", z, 64, gain=2**0.5)
    for index in (2, 3, 4):
        _tae_block(w, f"{dec}.{index}", gn=gn)
    for index in (7, 8, 9, 12, 13, 14, 17):
        _tae_block(w, f"{dec}.{index}")
    for index in (6, 11, 16):
        w.conv(f"{dec}.{index}", 64, 64, bias=False, gain=2**0.5)
    # Small last layer around 0.5: mid-grey noise instead of black/white clipping.
    w.conv(f"{dec}.18", 64, 3, gain=0.05)
    w.const(f"{dec}.18.bias", (3,), 0.5)


# -- files -----------------------------------------------------------------------------------------


def _save(tensors: Tensors, path: Path) -> None:
    from safetensors.numpy import save_file

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(tensors, str(tmp))
    os.replace(tmp, path)


def _build(name: str, fill: Callable[[Writer], None], seed: int) -> Path:
    path = folder() / name
    if not path.exists():
        writer = Writer(seed)
        fill(writer)
        _save(writer.tensors, path)
    return path


def folder() -> Path:
    path = cache_dir() / f"ggml-families-v{CACHE_VERSION}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def flux2_klein_files() -> dict[str, Path]:
    """{diffusion_model, llm, taesd} of a tiny FLUX.2 klein (about 25 MB in all)."""
    return {
        "diffusion_model": _build("flux2-klein-tiny.safetensors", flux2_klein, seed=11),
        "llm": _build("qwen3-tiny.safetensors", qwen3, seed=12),
        "taesd": _build("taef2-tiny.safetensors", lambda w: image_tae(w, 32, True), seed=13),
    }


def flux1_files() -> dict[str, Path]:
    """{diffusion_model, taesd} of a tiny FLUX.1 (Kontext has the same network)."""
    return {
        "diffusion_model": _build("flux1-tiny.safetensors", flux1, seed=21),
        "taesd": _build("taef1-tiny.safetensors", lambda w: image_tae(w, 16, False), seed=22),
    }


if __name__ == "__main__":
    for files in (flux2_klein_files(), flux1_files()):
        for key, built in files.items():
            print(key, built, f"{built.stat().st_size / 1e6:.1f} MB")
