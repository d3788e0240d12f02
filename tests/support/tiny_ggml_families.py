"""Random-weight files stable-diffusion.cpp 0.4.7 loads as the 2025-26 families, for tests.

stable-diffusion.cpp tells a family from tensor names only (model.cpp, get_sd_version) and then
builds the network with some dimensions read from the file and others fixed in code. What the
vendored version (stable-diffusion-cpp-python 0.4.7) reads, and so what can be tiny here:

- FLUX.2 klein (flux.hpp): `double_stream_modulation_img.lin.weight` marks FLUX.2, and without
  `single_blocks.47.*` it is klein (a Qwen3 encoder). Depth, hidden and context width (`txt_in`)
  and head_dim (`key_norm.scale`) come from the file; the rope axes are fixed at 4x32, so heads
  are 128 wide: hidden 128 is one head. One double and one single block: ~1.5 MB.
- FLUX.1 (Kontext is the same network; sd.cpp cannot tell them apart): `double_blocks.*` without
  the FLUX.2 modulation; the same dimensions are read (axes 16+56+56 = head_dim 128). Its text
  encoder is CLIP-L alone, at its fixed full size (123 M parameters, 246 MB f16): without T5
  sd.cpp puts zeros of T5's width in its place (with no text encoder at all 0.4.7 segfaults).
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

from collections.abc import Callable
from pathlib import Path

import numpy as np

from tests.support.ggml_writer import (
    GGML_F16,
    GGML_F32,
    GGML_Q4_0,
    GgufFile,
    Q4Writer,
    Writer,
    build,
    clip_l_text,
    q4_0,
)
from tests.support.tiny_models import cache_dir

CACHE_VERSION = "1"
VOCAB = 151_936  # Qwen2/3 tokenizer size

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


def clip_l(w: Writer) -> None:
    """CLIP ViT-L/14's text encoder (HF names), fixed by clip.hpp: 768 wide, 12 layers: 246 MB."""
    clip_l_text(w, "text_model")


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


# -- Wan 2.1 T2V 1.3B (GGUF, q4_0) ---------------------------------------------------------------

WAN_DIM, WAN_FFN, WAN_LAYERS = 1536, 8960, 30  # wan.hpp knows 30 or 40 layers, dims fixed by count


def wan_t2v_13b(path: Path, seed: int) -> None:
    """Wan2.1-T2V-1.3B at full size (the only small Wan wan.hpp builds): random q4_0 weights.

    ~0.8 GB. One block's weights are drawn and quantised once and repeated in all 30 blocks,
    which keeps writing it to a couple of seconds; biases and norms are f32 like the real files.
    """
    rng = np.random.default_rng(seed)
    file = GgufFile()

    def linear(name: str, n_in: int, n_out: int, gain: float = 1.0) -> bytes:
        weight = rng.standard_normal((n_out, n_in), dtype=np.float32) * (gain * n_in**-0.5)
        return q4_0(weight)

    def add_linear(name: str, n_in: int, n_out: int, data: bytes | None = None) -> None:
        file.add(f"{name}.weight", (n_out, n_in), GGML_Q4_0, data or linear(name, n_in, n_out))
        file.add(f"{name}.bias", (n_out,), GGML_F32, np.zeros(n_out, np.float32).tobytes())

    def const(name: str, shape: tuple[int, ...], value: float) -> None:
        file.add(name, shape, GGML_F32, np.full(shape, value, np.float32).tobytes())

    d = WAN_DIM
    patch = rng.standard_normal((d * 16, 1, 2, 2), dtype=np.float32) * (16 * 4) ** -0.5
    file.add("patch_embedding.weight", patch.shape, GGML_F16, patch.astype(np.float16).tobytes())
    const("patch_embedding.bias", (d,), 0.0)
    add_linear("text_embedding.0", 4096, d)
    add_linear("text_embedding.2", d, d)
    add_linear("time_embedding.0", 256, d)
    add_linear("time_embedding.2", d, d)
    add_linear("time_projection.1", d, 6 * d, linear("tp", d, 6 * d, gain=0.1))
    shared_attn = [linear(f"a{i}", d, d) for i in range(8)]
    shared_ffn0 = linear("f0", d, WAN_FFN)
    shared_ffn2 = linear("f2", WAN_FFN, d, gain=0.3)
    modulation = rng.standard_normal((1, 6, d), dtype=np.float32) * 0.1
    for layer in range(WAN_LAYERS):
        p = f"blocks.{layer}"
        file.add(f"{p}.modulation", modulation.shape, GGML_F32, modulation.tobytes())
        for index, (attn, proj) in enumerate(
            (a, q) for a in ("self_attn", "cross_attn") for q in ("q", "k", "v", "o")
        ):
            add_linear(f"{p}.{attn}.{proj}", d, d, shared_attn[index])
        for attn in ("self_attn", "cross_attn"):
            const(f"{p}.{attn}.norm_q.weight", (d,), 1.0)
            const(f"{p}.{attn}.norm_k.weight", (d,), 1.0)
        const(f"{p}.norm3.weight", (d,), 1.0)
        const(f"{p}.norm3.bias", (d,), 0.0)
        add_linear(f"{p}.ffn.0", d, WAN_FFN, shared_ffn0)
        add_linear(f"{p}.ffn.2", WAN_FFN, d, shared_ffn2)
    head = rng.standard_normal((1, 2, d), dtype=np.float32) * 0.1
    file.add("head.modulation", head.shape, GGML_F32, head.tobytes())
    add_linear("head.head", d, 16 * 4, linear("head", d, 64, gain=0.3))
    file.write(path)


def qwen_image_one_block(path: Path, seed: int) -> None:
    """Qwen-Image's transformer with one block at its fixed width (24 x 128 heads, text 3584)."""
    file = GgufFile()
    w = Q4Writer(file, seed)
    d, text = 3072, 3584
    w.linear("time_text_embed.timestep_embedder.linear_1", 256, d)
    w.linear("time_text_embed.timestep_embedder.linear_2", d, d)
    w.const("txt_norm.weight", (text,), 1.0)
    w.linear("img_in", 64, d)
    w.linear("txt_in", text, d)
    p = "transformer_blocks.0"
    for stream in ("img", "txt"):
        w.linear(f"{p}.{stream}_mod.1", d, 6 * d, gain=0.1)
        w.linear(f"{p}.{stream}_mlp.net.0.proj", d, 4 * d)
        w.linear(f"{p}.{stream}_mlp.net.2", 4 * d, d, gain=0.3)
    for proj in ("to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj"):
        w.linear(f"{p}.attn.{proj}", d, d)
    for norm in ("norm_q", "norm_k", "norm_added_q", "norm_added_k"):
        w.const(f"{p}.attn.{norm}.weight", (128,), 1.0)
    w.linear(f"{p}.attn.to_out.0", d, d)
    w.linear(f"{p}.attn.to_add_out", d, d)
    w.linear("norm_out.linear", d, 2 * d, gain=0.1)
    w.linear("proj_out", d, 64, gain=0.3)
    file.write(path)


def qwen25vl_one_layer(path: Path, seed: int) -> None:
    """Qwen2.5-VL's text model with one layer at its width (3584: Qwen-Image's context)."""
    file = GgufFile()
    w = Q4Writer(file, seed)
    d, inner = 3584, 256
    w.matrix("model.embed_tokens.weight", 152_064, d, 1.0)
    p = "model.layers.0"
    w.linear(f"{p}.self_attn.q_proj", d, 28 * 128)
    w.linear(f"{p}.self_attn.k_proj", d, 4 * 128)
    w.linear(f"{p}.self_attn.v_proj", d, 4 * 128)
    w.linear(f"{p}.self_attn.o_proj", 28 * 128, d, bias=False)
    for proj, n_in, n_out in (
        ("gate_proj", d, inner),
        ("up_proj", d, inner),
        ("down_proj", inner, d),
    ):
        w.linear(f"{p}.mlp.{proj}", n_in, n_out, bias=False)
    w.const(f"{p}.input_layernorm.weight", (d,), 1.0)
    w.const(f"{p}.post_attention_layernorm.weight", (d,), 1.0)
    w.const("model.norm.weight", (d,), 1.0)
    file.write(path)


def _mem_block(w: Writer, name: str, channels: int) -> None:
    w.conv(f"{name}.conv.0", 2 * channels, channels, gain=2**0.5)
    w.conv(f"{name}.conv.2", channels, channels, gain=2**0.5)
    w.conv(f"{name}.conv.4", channels, channels, gain=0.5)


def video_tae(w: Writer, z: int = 16) -> None:
    """TAEW2.1 (tae.hpp TinyVideoAutoEncoder): 4x temporal and 8x spatial, encoder + decoder."""
    w.conv("encoder.0", 3, 64, gain=2**0.5)
    index = 2
    for stride in (2, 2, 1):
        w.conv(f"encoder.{index}.conv", 64 * stride, 64, k=1, bias=False)
        w.conv(f"encoder.{index + 1}", 64, 64, bias=False, gain=2**0.5)
        for block in range(3):
            _mem_block(w, f"encoder.{index + 2 + block}", 64)
        index += 5
    w.conv(f"encoder.{index}", 64, z, gain=0.5)
    channels = (256, 128, 64, 64)
    w.conv("decoder.1", z, channels[0], gain=2**0.5)
    index = 3
    for level, stride in enumerate((1, 2, 2)):
        width = channels[level]
        for block in range(3):
            _mem_block(w, f"decoder.{index + block}", width)
        w.conv(f"decoder.{index + 4}.conv", width, width * stride, k=1, bias=False)
        w.conv(f"decoder.{index + 5}", width, channels[level + 1], bias=False, gain=2**0.5)
        index += 6
    w.conv(f"decoder.{index + 1}", 64, 3, gain=0.05)
    w.const(f"decoder.{index + 1}.bias", (3,), 0.5)


# -- files -----------------------------------------------------------------------------------------


def _build(name: str, fill: Callable[[Writer], None], seed: int) -> Path:
    return build(folder() / name, fill, seed)


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
    """{diffusion_model, clip_l, taesd} of a tiny FLUX.1 (Kontext has the same network).

    sd.cpp's FLUX.1 conditioner needs one text encoder (without any it segfaults in 0.4.7):
    CLIP-L at full size, no T5 (zeros of T5's width take its place)."""
    return {
        "diffusion_model": _build("flux1-tiny.safetensors", flux1, seed=21),
        "clip_l": _build("clip-l.safetensors", clip_l, seed=23),
        "taesd": _build("taef1-tiny.safetensors", lambda w: image_tae(w, 16, False), seed=22),
    }


def wan_files() -> dict[str, Path]:
    """{diffusion_model, taesd} of Wan2.1-T2V-1.3B (random, q4_0: ~0.8 GB) and a tiny TAEW2.1."""
    path = folder() / "wan2.1-t2v-1.3b-random-q4_0.gguf"
    if not path.exists():
        wan_t2v_13b(path, seed=31)
    return {
        "diffusion_model": path,
        "taesd": _build("taew2.1-tiny.safetensors", video_tae, seed=32),
    }


def qwen_image_files() -> dict[str, Path]:
    """{diffusion_model, llm, taesd} of Qwen-Image cut to one block / one LLM layer (~0.55 GB)."""
    model = folder() / "qwen-image-1block-random-q4_0.gguf"
    if not model.exists():
        qwen_image_one_block(model, seed=41)
    llm = folder() / "qwen2.5-vl-1layer-random-q4_0.gguf"
    if not llm.exists():
        qwen25vl_one_layer(llm, seed=42)
    taesd = _build("taew2.1-tiny.safetensors", video_tae, seed=32)
    return {"diffusion_model": model, "llm": llm, "taesd": taesd}


if __name__ == "__main__":
    for files in (flux2_klein_files(), flux1_files(), wan_files(), qwen_image_files()):
        for key, built in files.items():
            print(key, built, f"{built.stat().st_size / 1e6:.1f} MB")
