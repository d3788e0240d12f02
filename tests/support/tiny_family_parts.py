"""Shared pieces of the tiny family pipelines: local tokenizers, toy text encoders, the cache.

The tokenizers stand in for the ones diffusers' fast tests fetch from the hub: byte-level (or
one-piece-per-character) vocabularies with each family's special tokens and chat templates, so
the pipelines' real prompt code runs on them unchanged.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.tiny_models import build_lock, cache_dir

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
        unk_token=None,  # type: ignore[arg-type]  # Qwen2's tokenizer has none (stubs say str)
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
    """Build `make()` and save it to `folder`, all or nothing, one builder at a time (the cache's
    build lock): a temporary folder renamed into place, so an interrupted build leaves nothing."""
    with build_lock():
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

    ids: dict[str, Any] = {"bos_token_id": 2, "eos_token_id": 3, "pad_token_id": 4}
    config = Mistral3Config(  # type: ignore[call-arg]  # image_seq_length: a kwargs attribute
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

    sizes: dict[str, Any] = {
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


def clip_tokenizer() -> Any:
    """tests.support.tiny_models' byte-level CLIP tokenizer (ids 512/513 = start/end of text)."""
    import tempfile

    from transformers import CLIPTokenizer

    from tests.support.tiny_models import write_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        write_tokenizer(Path(tmp))
        return CLIPTokenizer.from_pretrained(tmp)
