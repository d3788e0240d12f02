"""Tiny random-weight pipelines of today's diffusers model families, built offline for tests.

Each builder makes the family's real pipeline class with its real component classes at toy sizes
(a few MB, 2 steps at 32x32 in about a second on a CPU), saves it with `save_pretrained` under
the test cache and returns the folder, which `DiffusionPipeline.from_pretrained(folder)` reloads
(that is how localimg loads models). The shapes follow diffusers' own fast tests
(`tests/pipelines/<family>/test_*.py`, `get_dummy_components`); the tokenizers, which those tests
fetch from the hub, are written here: a byte-level BPE (one token per byte, no merges) plus the
family's special tokens and, for Qwen ones, a Qwen-style chat template.

Facts per family (diffusers 0.42; "multiple" = height and width must be multiples of it here;
"mu" = the pipeline passes `mu` to `scheduler.set_timesteps`, which only uses it when the
scheduler config has `use_dynamic_shifting: true`). Also in /tmp/families-facts.md.

ZImagePipeline: multiple 4 (tiny) / 16 (real; vae_scale_factor*2). negative_prompt: yes (used when
  guidance_scale > 0). guidance_scale: true CFG (Turbo runs at 0). max_sequence_length 512.
  FlowMatchEuler; passes mu (real Turbo config: static shift 3, so mu is ignored). Own sigmas.
Flux2KleinPipeline: multiple 4 / 16. No negative_prompt kwarg (CFG's negative is ""; only
  negative_prompt_embeds). guidance_scale: true CFG when > 1 and not `is_distilled` (the 4B/9B
  klein are distilled: ignored with a warning; `tiny_flux2_klein_base_path` is not). 512.
  FlowMatchEuler with dynamic shifting; passes mu (compute_empirical_mu). References: image=[...]
  (no count limit in the pipeline), each >= 64 px a side, aspect <= 8, cropped to the multiple.
Flux2Pipeline: multiple 4 / 16. No negative_prompt (no CFG at all). guidance_scale: distilled
  guidance (embedded, default 4.0). 512 (and a long system message before the prompt). Scheduler
  and references as klein. Its `tokenizer` is a plain tokenizer here: the real PixtralProcessor
  needs torchvision in transformers 5 (see mistral_tokenizer).
ChromaPipeline: multiple 4 / 16. negative_prompt: yes. guidance_scale: true CFG when > 1.
  512 (T5). FlowMatchEuler with dynamic shifting; passes mu (calculate_shift).
FluxKontextPipeline: multiple 16 / 16 (a 4-level tiny VAE). negative_prompt: yes, with
  true_cfg_scale > 1 (true CFG); guidance_scale: distilled guidance. 512 (T5; CLIP 77). Dynamic
  shifting, mu passed. The output is rescaled to `max_area` (default 1024**2) at the requested
  aspect ratio; the input image goes to the nearest Kontext resolution unless
  `_auto_resize=False`. One image only (two fail inside the pipeline with a RuntimeError).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.tiny_models import cache_dir

FAMILIES_VERSION = "1"

# Qwen's chat format (im_start/im_end), with images as vision_start/image_pad/vision_end and
# Qwen3's `enable_thinking=False` empty think block.
QWEN_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif part['type'] == 'video' -%}{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}"
    "{%- if enable_thinking is defined and enable_thinking is false -%}"
    "{{- '<think>\\n\\n</think>\\n\\n' -}}{%- endif -%}{%- endif -%}"
)
QWEN_SPECIALS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<think>",
    "</think>",
)
QWEN_VOCAB = 320  # 256 bytes + the specials, rounded up: the text encoders' vocab_size


def byte_symbols() -> list[str]:
    """GPT-2's 256 printable stand-ins for the bytes, in byte order (byte-level BPE's alphabet)."""
    visible = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    visible += range(ord("®"), ord("ÿ") + 1)
    table = {b: chr(b) for b in visible}
    extra = 0
    for byte in range(256):
        if byte not in table:
            table[byte] = chr(256 + extra)
            extra += 1
    return [table[b] for b in range(256)]


def qwen_vocab() -> dict[str, int]:
    """Byte tokens 0..255, then QWEN_SPECIALS from 256 on (so `<|image_pad|>` is 261)."""
    vocab = {symbol: i for i, symbol in enumerate(byte_symbols())}
    for token in QWEN_SPECIALS:
        vocab[token] = len(vocab)
    return vocab


def qwen_token_id(token: str) -> int:
    return qwen_vocab()[token]


def qwen_tokenizer(max_length: int = 512) -> Any:
    """A Qwen2Tokenizer (byte level, no merges) with Qwen's specials and chat template."""
    from transformers import Qwen2Tokenizer

    tokenizer = Qwen2Tokenizer(
        vocab=qwen_vocab(),
        merges=[],
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(QWEN_SPECIALS[1:]),
        model_max_length=max_length,
    )
    tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    return tokenizer


def qwen3_config(hidden: int, layers: int) -> Any:
    from transformers import Qwen3Config

    return Qwen3Config(
        hidden_size=hidden,
        intermediate_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=hidden // 2,
        vocab_size=QWEN_VOCAB,
        max_position_embeddings=1024,
        pad_token_id=qwen_token_id("<|endoftext|>"),
        eos_token_id=qwen_token_id("<|im_end|>"),
    )


def save_pipeline(folder: Path, make: Callable[[], Any]) -> Path:
    """Build `make()` and save it to `folder`, all or nothing, safe against a concurrent build.

    Each builder writes its own temporary folder and renames it into place; if another process
    got there first, its copy (same seeds, same weights) wins and ours is dropped.
    """
    if (folder / "model_index.json").is_file():
        return folder
    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    make().save_pretrained(str(tmp))
    try:
        tmp.rename(folder)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (folder / "model_index.json").is_file():
            raise
    return folder


def family_folder(name: str) -> Path:
    return cache_dir() / f"tiny-{name}-v{FAMILIES_VERSION}"


# --- Z-Image ------------------------------------------------------------------------------------


def make_z_image() -> Any:
    import torch
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        ZImagePipeline,
        ZImageTransformer2DModel,
    )
    from transformers import Qwen3Model

    torch.manual_seed(0)
    transformer = ZImageTransformer2DModel(
        all_patch_size=(2,),
        all_f_patch_size=(1,),
        in_channels=16,
        dim=32,
        n_layers=2,
        n_refiner_layers=1,
        n_heads=2,
        n_kv_heads=2,
        norm_eps=1e-5,
        qk_norm=True,
        cap_feat_dim=16,
        rope_theta=256.0,
        t_scale=1000.0,
        axes_dims=[8, 4, 4],
        axes_lens=[256, 32, 32],
    )
    with torch.no_grad():  # made with torch.empty: fix them so no NaN sneaks in
        transformer.x_pad_token.copy_(torch.ones_like(transformer.x_pad_token))
        transformer.cap_pad_token.copy_(torch.ones_like(transformer.cap_pad_token))
    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        block_out_channels=[32, 64],
        layers_per_block=1,
        latent_channels=16,
        norm_num_groups=32,
        sample_size=32,
        scaling_factor=0.3611,
        shift_factor=0.1159,
    )
    torch.manual_seed(0)
    text_encoder = Qwen3Model(qwen3_config(hidden=16, layers=2))
    # Z-Image-Turbo's own scheduler config: a static shift of 3.
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=False)
    return ZImagePipeline(
        transformer=transformer,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=qwen_tokenizer(),
        scheduler=scheduler,
    )


def tiny_z_image_path() -> Path:
    """A tiny ZImagePipeline (Z-Image / Z-Image-Turbo): sizes in multiples of 4."""
    return save_pipeline(family_folder("z-image"), make_z_image)


# --- FLUX.2 -------------------------------------------------------------------------------------


def flux2_transformer(text_hidden: int, guidance_embeds: bool) -> Any:
    """Flux2's transformer for 4-channel packed latents, conditioned on 3 stacked encoder layers."""
    from diffusers import Flux2Transformer2DModel

    return Flux2Transformer2DModel(
        patch_size=1,
        in_channels=4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=3 * text_hidden,
        timestep_guidance_channels=256,
        axes_dims_rope=[4, 4, 4, 4],
        guidance_embeds=guidance_embeds,
    )


def flux2_vae() -> Any:
    """AutoencoderKLFlux2 with two levels (scale factor 2: sizes in multiples of 4)."""
    from diffusers import AutoencoderKLFlux2

    return AutoencoderKLFlux2(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(4, 8),
        layers_per_block=1,
        latent_channels=1,
        norm_num_groups=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )


def flux_scheduler() -> Any:
    """FLUX's scheduler config: resolution-dependent shift (the pipeline's `mu`) is used."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True)


def make_flux2_klein(distilled: bool) -> Any:
    import torch
    from diffusers import Flux2KleinPipeline
    from transformers import Qwen3ForCausalLM

    torch.manual_seed(0)
    transformer = flux2_transformer(text_hidden=16, guidance_embeds=False)
    torch.manual_seed(0)
    # 27 layers: the pipeline stacks hidden states (9, 18, 27) by default.
    text_encoder = Qwen3ForCausalLM(qwen3_config(hidden=16, layers=27))
    torch.manual_seed(0)
    vae = flux2_vae()
    return Flux2KleinPipeline(
        scheduler=flux_scheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=qwen_tokenizer(),
        transformer=transformer,
        is_distilled=distilled,
    )


def tiny_flux2_klein_path() -> Path:
    """A tiny Flux2KleinPipeline like FLUX.2 [klein] 4B (step-distilled: guidance ignored)."""
    return save_pipeline(family_folder("flux2-klein"), lambda: make_flux2_klein(distilled=True))


def tiny_flux2_klein_base_path() -> Path:
    """A tiny Flux2KleinPipeline like FLUX.2 [klein] base (not distilled: guidance_scale is CFG)."""
    return save_pipeline(
        family_folder("flux2-klein-base"), lambda: make_flux2_klein(distilled=False)
    )


# Mistral Small 3.x's special tokens (ids 0..10, [IMG] = 1 as in Mistral3Config), then bytes.
MISTRAL_SPECIALS = (
    "<unk>",
    "[IMG]",
    "<s>",
    "</s>",
    "<pad>",
    "[INST]",
    "[/INST]",
    "[SYSTEM_PROMPT]",
    "[/SYSTEM_PROMPT]",
    "[IMG_BREAK]",
    "[IMG_END]",
)
MISTRAL_VOCAB = 272
MISTRAL_CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{%- set parts = [{'type': 'text', 'text': message['content']}]"
    " if message['content'] is string else message['content'] -%}"
    "{%- if message['role'] == 'system' -%}[SYSTEM_PROMPT]"
    "{%- for part in parts -%}{{- part['text'] -}}{%- endfor -%}[/SYSTEM_PROMPT]"
    "{%- elif message['role'] == 'user' -%}[INST]"
    "{%- for part in parts -%}{%- if part['type'] == 'text' -%}{{- part['text'] -}}"
    "{%- else -%}[IMG]{%- endif -%}{%- endfor -%}[/INST]"
    "{%- else -%}{%- for part in parts -%}{{- part['text'] -}}{%- endfor -%}{{- eos_token -}}"
    "{%- endif -%}{%- endfor -%}"
)


def mistral_tokenizer() -> Any:
    """The Mistral-style byte-level tokenizer FLUX.2 [dev] applies its chat template with.

    The real repository names a PixtralProcessor here, which transformers 5 only builds with
    torchvision installed; the pipeline only calls `apply_chat_template` on it for prompts (its
    `.tokenizer` only for caption upsampling), which the tokenizer itself has.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(MISTRAL_SPECIALS)}
    for symbol in byte_symbols():
        vocab[symbol] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=[*MISTRAL_SPECIALS[5:], "[IMG]"],
        model_max_length=1024,
    )
    tokenizer.chat_template = MISTRAL_CHAT_TEMPLATE
    return tokenizer


def mistral3_encoder(hidden: int, layers: int) -> Any:
    """Mistral3ForConditionalGeneration at toy size (a Pixtral vision tower it keeps unused)."""
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    ids = {"bos_token_id": 2, "eos_token_id": 3, "pad_token_id": 4}
    config = Mistral3Config(
        text_config={
            "model_type": "mistral",
            "vocab_size": MISTRAL_VOCAB,
            "hidden_size": hidden,
            "intermediate_size": 37,
            "max_position_embeddings": 1024,
            "num_attention_heads": 4,
            "num_hidden_layers": layers,
            "num_key_value_heads": 2,
            "head_dim": hidden // 4,
            "rms_norm_eps": 1e-05,
            "rope_theta": 1000000000.0,
            "sliding_window": None,
            **ids,
        },
        vision_config={
            "model_type": "pixtral",
            "hidden_size": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": 4,
            "intermediate_size": 37,
            "image_size": 24,
            "patch_size": 6,
            "num_channels": 3,
        },
        image_seq_length=4,
        vision_feature_layer=-1,
        image_token_index=1,
        spatial_merge_size=2,
        **ids,
    )
    return Mistral3ForConditionalGeneration(config)


def make_flux2() -> Any:
    import torch
    from diffusers import Flux2Pipeline

    torch.manual_seed(0)
    transformer = flux2_transformer(text_hidden=16, guidance_embeds=True)
    torch.manual_seed(0)
    # 30 layers: the pipeline stacks hidden states (10, 20, 30) by default.
    text_encoder = mistral3_encoder(hidden=16, layers=30).eval()
    torch.manual_seed(0)
    vae = flux2_vae()
    return Flux2Pipeline(
        scheduler=flux_scheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=mistral_tokenizer(),
        transformer=transformer,
    )


def tiny_flux2_path() -> Path:
    """A tiny Flux2Pipeline like FLUX.2 [dev] (guidance-distilled, Mistral 3 text encoder)."""
    return save_pipeline(family_folder("flux2"), make_flux2)


# --- T5 / CLIP pieces (Chroma, FLUX.1 Kontext, Wan) -------------------------------------------


def t5_tokenizer() -> Any:
    """A T5Tokenizer (Unigram, one piece per character): <pad>=0, </s>=1, <unk>=2, then text.

    Characters outside printable ASCII become <unk>, as rare ones do in the real vocabulary.
    """
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(chr(c), -5.0) for c in range(33, 127)]
    pieces += [("▁" + chr(c), -4.0) for c in range(33, 127)]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=512)


T5_VOCAB = 256  # > the 192 pieces of t5_tokenizer


def t5_encoder(umt5: bool = False) -> Any:
    """A 2-layer T5 (or UMT5) encoder, d_model 32, in eval mode (dropout off)."""
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    sizes = {
        "vocab_size": T5_VOCAB,
        "d_model": 32,
        "d_kv": 8,
        "d_ff": 37,
        "num_layers": 2,
        "num_heads": 4,
        "relative_attention_num_buckets": 8,
        "dropout_rate": 0.0,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "decoder_start_token_id": 0,
    }
    if umt5:
        return UMT5EncoderModel(UMT5Config(**sizes)).eval()
    return T5EncoderModel(T5Config(**sizes)).eval()


def flux_vae(levels: int) -> Any:
    """FLUX.1's AutoencoderKL shape at toy size: 1 latent channel, scale factor 2**(levels-1)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=(4,) * levels,
        layers_per_block=1,
        latent_channels=1,
        norm_num_groups=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )


def clip_tokenizer() -> Any:
    """tests.tiny_models' byte-level CLIP tokenizer (ids 512/513 = start/end of text)."""
    import tempfile

    from transformers import CLIPTokenizer

    from tests.tiny_models import write_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        write_tokenizer(Path(tmp))
        return CLIPTokenizer.from_pretrained(tmp)


# --- Chroma -------------------------------------------------------------------------------------


def make_chroma() -> Any:
    import torch
    from diffusers import ChromaPipeline, ChromaTransformer2DModel

    torch.manual_seed(0)
    transformer = ChromaTransformer2DModel(
        patch_size=1,
        in_channels=4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        axes_dims_rope=[4, 4, 8],
        approximator_hidden_dim=32,
        approximator_layers=1,
        approximator_num_channels=16,
    )
    torch.manual_seed(0)
    text_encoder = t5_encoder()
    torch.manual_seed(0)
    vae = flux_vae(levels=2)
    return ChromaPipeline(
        scheduler=flux_scheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=t5_tokenizer(),
        transformer=transformer,
        image_encoder=None,
        feature_extractor=None,
    )


def tiny_chroma_path() -> Path:
    """A tiny ChromaPipeline (T5 only, true CFG with negative_prompt): multiples of 4."""
    return save_pipeline(family_folder("chroma"), make_chroma)


# --- FLUX.1 Kontext -----------------------------------------------------------------------------


def make_flux_kontext() -> Any:
    import torch
    from diffusers import FluxKontextPipeline, FluxTransformer2DModel

    from tests.tiny_models import tiny_text_encoder

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8],
        guidance_embeds=True,
    )
    torch.manual_seed(0)
    text_encoder = tiny_text_encoder(hidden=32)
    torch.manual_seed(0)
    text_encoder_2 = t5_encoder()
    torch.manual_seed(0)
    # Four levels (scale factor 8, multiples of 16 as the real one): the pipeline resizes an input
    # image to a ~1 MP Kontext resolution by default, which stays cheap at this scale.
    vae = flux_vae(levels=4)
    return FluxKontextPipeline(
        scheduler=flux_scheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=clip_tokenizer(),
        text_encoder_2=text_encoder_2,
        tokenizer_2=t5_tokenizer(),
        transformer=transformer,
        image_encoder=None,
        feature_extractor=None,
    )


def tiny_flux_kontext_path() -> Path:
    """A tiny FluxKontextPipeline (FLUX.1 Kontext [dev]: one input image, multiples of 16)."""
    return save_pipeline(family_folder("flux-kontext"), make_flux_kontext)


FAMILY_BUILDERS: dict[str, Callable[[], Path]] = {
    "ZImagePipeline": tiny_z_image_path,
    "Flux2KleinPipeline": tiny_flux2_klein_path,
    "Flux2Pipeline": tiny_flux2_path,
    "ChromaPipeline": tiny_chroma_path,
    "FluxKontextPipeline": tiny_flux_kontext_path,
}
