"""Random-weight files for the 2026 families on stable-diffusion.cpp 0.4.7, for tests.

What the vendored library (stable-diffusion-cpp-python 0.4.7) reads from a file and what it fixes
in code decides what can be tiny:

- ERNIE-Image (ernie_image.hpp): `layers.0.adaLN_sa_ln.weight` marks it. Patch, in/out channels
  (`x_embedder.proj`), text width (`text_proj`), MLP width and the layer count come from the
  file. The width would too, but 0.4.7 derives the head count from `norm_q` before it has read
  the width (heads = 4096 / head_dim), and the rope axes fix heads at 128: the width must stay
  4096. One layer with a narrow MLP, q4_0: ~135 MB. Its text encoder is Ministral 3 3B (llm.hpp
  MINISTRAL_3_3B): heads fixed at 32 x 128 (queries) and 8 x 128 (keys/values), hidden width,
  MLP width and layers from the file; the built-in Mistral tokenizer emits ids up to 131,072, so
  the vocabulary stays that size (~17 MB at hidden 64). It decodes with the FLUX.2 VAE (32 latent
  channels, 2x2 patches: 128 channels at a 16x scale). The decoder's width is read from
  `decoder.conv_in` (ch 32 here: a few MB) but the encoder is always built at its full width (ch
  128: ~34 M parameters, ~68 MB f16), because the binding never asks for a decode-only VAE.
  0.4.7 builds a 16-channel tiny autoencoder for ERNIE-Image, which cannot decode its 128-channel
  latents, so no TAESD is written: the full (small-decoder) VAE decodes.
- Anima (anima.hpp): `llm_adapter.blocks.0.cross_attn.q_proj.weight` marks it; only the block
  count is read. The width (2048, 16 heads of 128), the text width (1024) and the 6-layer LLM
  adapter are fixed: one block, q4_0, ~125 MB. Its Qwen3 encoder must be 1024 wide (the
  adapter's source): one layer, q4_0, ~90 MB. The tiny TAEW2.1 video autoencoder decodes it.
- Not written: Z-Image (z_image.hpp builds 30 layers at 3840, ~6.15 B parameters, whatever the
  file says) and Qwen-Image-2512 (Qwen-Image's network: tiny_ggml_families.qwen_image_files).

Everything is written once with numpy (safetensors or GGUF) and cached next to the other
fixtures.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from tests.support.ggml_writer import GGML_F16, GgufFile, Q4Writer, Writer, build
from tests.support.tiny_models import build_lock, cache_dir

CACHE_VERSION = "1"
MISTRAL_VOCAB = 131_072  # the Tekken tokenizer's size (sd.cpp's MistralTokenizer)

ERNIE_HIDDEN = 4096  # fixed in 0.4.7, see ernie_image_transformer
ERNIE_TEXT = 64  # Ministral's hidden width here = ERNIE-Image's text_proj input


def ernie_image_transformer(path: Path, seed: int) -> None:
    """ERNIE-Image's transformer (diffusers names) as q4_0 GGUF: one layer, a narrow MLP.

    0.4.7 derives the head count from `norm_q` before it has read the hidden width from
    `x_embedder` (the tensor map is sorted by name), so heads = 4096 / 128 whatever the file
    says: the width has to stay the real 4096. One layer with a 256-wide MLP is ~240 M
    parameters (~135 MB q4_0), most of it the shared 6 x 4096 modulation."""
    file = GgufFile()
    w = Q4Writer(file, seed)
    h, ffn = ERNIE_HIDDEN, 256
    patch = w.rng.standard_normal((h, 128, 1, 1), dtype=np.float32) * np.float32(128**-0.5)
    file.add("x_embedder.proj.weight", patch.shape, GGML_F16, patch.astype(np.float16).tobytes())
    w.const("x_embedder.proj.bias", (h,), 0.0)
    w.linear("text_proj", ERNIE_TEXT, h, bias=False)
    w.linear("time_embedding.linear_1", h, h)
    w.linear("time_embedding.linear_2", h, h)
    w.linear("adaLN_modulation.1", h, 6 * h, gain=0.1)
    p = "layers.0"
    w.const(f"{p}.adaLN_sa_ln.weight", (h,), 1.0)
    w.const(f"{p}.adaLN_mlp_ln.weight", (h,), 1.0)
    for proj in ("to_q", "to_k", "to_v", "to_out.0"):
        w.linear(f"{p}.self_attention.{proj}", h, h, bias=False)
    w.const(f"{p}.self_attention.norm_q.weight", (128,), 1.0)
    w.const(f"{p}.self_attention.norm_k.weight", (128,), 1.0)
    w.linear(f"{p}.mlp.gate_proj", h, ffn, bias=False)
    w.linear(f"{p}.mlp.up_proj", h, ffn, bias=False)
    w.linear(f"{p}.mlp.linear_fc2", ffn, h, bias=False, gain=0.3)
    w.linear("final_norm.linear", h, 2 * h, gain=0.1)
    w.linear("final_linear", h, 128, gain=0.3)
    file.write(path)


def ministral3(w: Writer, hidden: int = ERNIE_TEXT, intermediate: int = 128) -> None:
    """HF-format Ministral 3 text model (`model.*`), one layer: 32 x 128 queries, 8 x 128 kv."""
    w.normal("model.embed_tokens.weight", (MISTRAL_VOCAB, hidden), 1.0)
    p = "model.layers.0"
    w.linear(f"{p}.self_attn.q_proj", hidden, 32 * 128)
    w.linear(f"{p}.self_attn.k_proj", hidden, 8 * 128)
    w.linear(f"{p}.self_attn.v_proj", hidden, 8 * 128)
    w.linear(f"{p}.self_attn.o_proj", 32 * 128, hidden)
    w.linear(f"{p}.mlp.gate_proj", hidden, intermediate)
    w.linear(f"{p}.mlp.up_proj", hidden, intermediate)
    w.linear(f"{p}.mlp.down_proj", intermediate, hidden)
    w.const(f"{p}.input_layernorm.weight", (hidden,), 1.0)
    w.const(f"{p}.post_attention_layernorm.weight", (hidden,), 1.0)
    w.const("model.norm.weight", (hidden,), 1.0)


def _resnet(w: Writer, name: str, n_in: int, n_out: int) -> None:
    w.norm(f"{name}.norm1", n_in)
    w.conv(f"{name}.conv1", n_in, n_out)
    w.norm(f"{name}.norm2", n_out)
    w.conv(f"{name}.conv2", n_out, n_out, gain=0.3)
    if n_in != n_out:
        w.conv(f"{name}.nin_shortcut", n_in, n_out, k=1)


def _mid(w: Writer, name: str, channels: int) -> None:
    _resnet(w, f"{name}.mid.block_1", channels, channels)
    w.norm(f"{name}.mid.attn_1.norm", channels)
    for proj in ("q", "k", "v", "proj_out"):
        w.conv(f"{name}.mid.attn_1.{proj}", channels, channels, k=1)
    _resnet(w, f"{name}.mid.block_2", channels, channels)


def flux2_vae(w: Writer, decoder_ch: int = 32) -> None:
    """The FLUX.2 VAE in its original names: the encoder at its fixed width (ch 128), the
    decoder at `decoder_ch` (read from decoder.conv_in), 32 latent channels."""
    mult, z = (1, 2, 4, 4), 32
    w.conv("encoder.conv_in", 3, 128)
    block_in = 128
    for level, m in enumerate(mult):
        for index in range(2):
            _resnet(w, f"encoder.down.{level}.block.{index}", block_in, 128 * m)
            block_in = 128 * m
        if level != len(mult) - 1:
            w.conv(f"encoder.down.{level}.downsample.conv", block_in, block_in)
    _mid(w, "encoder", block_in)
    w.norm("encoder.norm_out", block_in)
    w.conv("encoder.conv_out", block_in, 2 * z)
    w.conv("quant_conv", 2 * z, 2 * z, k=1)
    w.conv("post_quant_conv", z, z, k=1)
    block_in = decoder_ch * mult[-1]
    w.conv("decoder.conv_in", z, block_in)
    _mid(w, "decoder", block_in)
    for level in reversed(range(len(mult))):
        for index in range(3):
            _resnet(w, f"decoder.up.{level}.block.{index}", block_in, decoder_ch * mult[level])
            block_in = decoder_ch * mult[level]
        if level != 0:
            w.conv(f"decoder.up.{level}.upsample.conv", block_in, block_in)
    w.norm("decoder.norm_out", block_in)
    # Small last layer around 0: mid-grey noise instead of black/white clipping.
    w.conv("decoder.conv_out", block_in, 3, gain=0.05)


ANIMA_HIDDEN, ANIMA_TEXT = 2048, 1024  # fixed in 0.4.7 (anima.hpp AnimaNet, LLMAdapter)
QWEN_VOCAB = 151_936  # Qwen2/3 tokenizer size


def _anima_attention(w: Q4Writer, name: str, dim: int, context: int, heads: int, out: str) -> None:
    inner = heads * (128 if dim == ANIMA_HIDDEN else 64)
    w.linear(f"{name}.q_proj", dim, inner, bias=False)
    w.linear(f"{name}.k_proj", context, inner, bias=False)
    w.linear(f"{name}.v_proj", context, inner, bias=False)
    head = inner // heads
    w.const(f"{name}.q_norm.weight", (head,), 1.0)
    w.const(f"{name}.k_norm.weight", (head,), 1.0)
    w.linear(f"{name}.{out}", inner, dim, bias=False, gain=0.3)


def anima_transformer(path: Path, seed: int) -> None:
    """Anima's network (original `net.*` names) as q4_0 GGUF with one block.

    0.4.7 reads only the block count from the file: the width (2048, 16 heads of 128), the text
    width (1024) and the 6-layer LLM adapter are fixed, ~220 M parameters (~125 MB q4_0)."""
    file = GgufFile()
    w = Q4Writer(file, seed)
    h, text = ANIMA_HIDDEN, ANIMA_TEXT
    patch = w.rng.standard_normal((h, 17 * 4), dtype=np.float32) * np.float32(68**-0.5)
    file.add("net.x_embedder.proj.1.weight", (h, 68), GGML_F16, patch.astype(np.float16).tobytes())
    w.linear("net.t_embedder.1.linear_1", h, h, bias=False)
    w.linear("net.t_embedder.1.linear_2", h, 3 * h, bias=False, gain=0.1)
    w.const("net.t_embedding_norm.weight", (h,), 1.0)
    p = "net.blocks.0"
    for norm in ("self_attn", "cross_attn", "mlp"):
        w.linear(f"{p}.adaln_modulation_{norm}.1", h, 256, bias=False)
        w.linear(f"{p}.adaln_modulation_{norm}.2", 256, 3 * h, bias=False, gain=0.1)
    _anima_attention(w, f"{p}.self_attn", h, h, 16, "output_proj")
    _anima_attention(w, f"{p}.cross_attn", h, text, 16, "output_proj")
    w.linear(f"{p}.mlp.layer1", h, 4 * h, bias=False)
    w.linear(f"{p}.mlp.layer2", 4 * h, h, bias=False, gain=0.3)
    w.linear("net.final_layer.adaln_modulation.1", h, 256, bias=False)
    w.linear("net.final_layer.adaln_modulation.2", 256, 2 * h, bias=False, gain=0.1)
    w.linear("net.final_layer.linear", h, 4 * 16, bias=False, gain=0.3)
    a = "net.llm_adapter"
    w.matrix(f"{a}.embed.weight", 32128, text, 1.0)
    for index in range(6):
        b = f"{a}.blocks.{index}"
        for norm in ("norm_self_attn", "norm_cross_attn", "norm_mlp"):
            w.const(f"{b}.{norm}.weight", (text,), 1.0)
        _anima_attention(w, f"{b}.self_attn", text, text, 16, "o_proj")
        _anima_attention(w, f"{b}.cross_attn", text, text, 16, "o_proj")
        w.linear(f"{b}.mlp.0", text, 4 * text)
        w.linear(f"{b}.mlp.2", 4 * text, text, gain=0.3)
    w.linear(f"{a}.out_proj", text, text)
    w.const(f"{a}.norm.weight", (text,), 1.0)
    file.write(path)


def qwen3_text(path: Path, seed: int, hidden: int = ANIMA_TEXT) -> None:
    """Qwen3 (HF names) with one layer at Anima's text width, q4_0: ~90 MB, most of it the
    151,936-token embedding the built-in tokenizer needs."""
    file = GgufFile()
    w = Q4Writer(file, seed)
    w.matrix("model.embed_tokens.weight", QWEN_VOCAB, hidden, 1.0)
    p = "model.layers.0"
    w.linear(f"{p}.self_attn.q_proj", hidden, 32 * 128, bias=False)
    w.linear(f"{p}.self_attn.k_proj", hidden, 8 * 128, bias=False)
    w.linear(f"{p}.self_attn.v_proj", hidden, 8 * 128, bias=False)
    w.linear(f"{p}.self_attn.o_proj", 32 * 128, hidden, bias=False)
    w.const(f"{p}.self_attn.q_norm.weight", (128,), 1.0)
    w.const(f"{p}.self_attn.k_norm.weight", (128,), 1.0)
    for proj, n_in, n_out in (("gate_proj", hidden, 256), ("up_proj", hidden, 256)):
        w.linear(f"{p}.mlp.{proj}", n_in, n_out, bias=False)
    w.linear(f"{p}.mlp.down_proj", 256, hidden, bias=False)
    w.const(f"{p}.input_layernorm.weight", (hidden,), 1.0)
    w.const(f"{p}.post_attention_layernorm.weight", (hidden,), 1.0)
    w.const("model.norm.weight", (hidden,), 1.0)
    file.write(path)


# -- files -----------------------------------------------------------------------------------------


def folder() -> Path:
    path = cache_dir() / f"ggml-families-2026-v{CACHE_VERSION}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _build(name: str, fill: Callable[[Writer], None], seed: int) -> Path:
    return build(folder() / name, fill, seed)


def ernie_image_files() -> dict[str, Path]:
    """{diffusion_model, llm, vae} of a small ERNIE-Image (~230 MB: a one-layer q4_0
    transformer at its fixed width, a one-layer Ministral, the VAE with a small decoder)."""
    model = folder() / "ernie-image-1layer-random-q4_0.gguf"
    with build_lock():
        if not model.exists():
            ernie_image_transformer(model, seed=51)
    return {
        "diffusion_model": model,
        "llm": _build("ministral3-tiny.safetensors", ministral3, seed=52),
        "vae": _build("flux2-vae-small-decoder.safetensors", flux2_vae, seed=53),
    }


def anima_files() -> dict[str, Path]:
    """{diffusion_model, llm, taesd} of a small Anima (~215 MB: one block at the fixed width, a
    one-layer Qwen3 and the tiny TAEW2.1 video autoencoder, which decodes it)."""
    from tests.support.tiny_ggml_families import folder as families_folder
    from tests.support.tiny_ggml_families import video_tae

    model = folder() / "anima-1block-random-q4_0.gguf"
    llm = folder() / "qwen3-1024-1layer-random-q4_0.gguf"
    with build_lock():
        if not model.exists():
            anima_transformer(model, seed=61)
        if not llm.exists():
            qwen3_text(llm, seed=62)
    taesd = build(families_folder() / "taew2.1-tiny.safetensors", video_tae, seed=32)
    return {"diffusion_model": model, "llm": llm, "taesd": taesd}


if __name__ == "__main__":
    for key, built in {**ernie_image_files(), **anima_files()}.items():
        print(key, built, f"{built.stat().st_size / 1e6:.1f} MB")
