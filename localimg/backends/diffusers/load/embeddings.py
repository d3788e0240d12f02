"""Textual-inversion embeddings of the models dir's `embeddings/` folder on a loaded diffusers
pipeline, each under its file stem (the name a prompt uses), through diffusers'
`load_textual_inversion`. A file whose width does not fit the pipeline's text encoders is
skipped with one log line, never an error: a prompt that does not name it is not concerned.
An SDXL file's `clip_l` part goes to text_encoder/tokenizer and its `clip_g` part to
text_encoder_2/tokenizer_2, as diffusers' documentation shows.
"""

from __future__ import annotations

import logging
from typing import Any

from localimg.config import ModelConfig
from localimg.prompts.embeddings import Embedding, fitting_embeddings, load_tensors

log = logging.getLogger(__name__)

ENCODERS = (
    ("text_encoder", "tokenizer"),
    ("text_encoder_2", "tokenizer_2"),
    ("text_encoder_3", ""),
)


def encoder_widths(pipe: Any) -> tuple[int, ...]:
    """The widths of the pipeline's text encoders, in order (a T5's `d_model` counts too)."""
    widths = []
    for encoder_name, _ in ENCODERS:
        encoder = getattr(pipe, encoder_name, None)
        config = getattr(encoder, "config", None)
        width = getattr(config, "hidden_size", None) or getattr(config, "d_model", None)
        if isinstance(width, int):
            widths.append(width)
    return tuple(widths)


def _load_one(pipe: Any, embedding: Embedding) -> None:
    tensors = load_tensors(embedding)
    for (encoder_name, tokenizer_name), tensor in zip(ENCODERS, tensors, strict=False):
        pipe.load_textual_inversion(
            tensor,
            token=embedding.name,
            text_encoder=getattr(pipe, encoder_name),
            tokenizer=getattr(pipe, tokenizer_name),
        )


def load_embeddings(pipe: Any, config: ModelConfig) -> list[str]:
    """Load every fitting embedding of `embeddings/`; the names loaded."""
    if not hasattr(pipe, "load_textual_inversion"):
        return []
    fitting = fitting_embeddings(config.models_path, lambda: encoder_widths(pipe), config.name)
    loaded = []
    for embedding in fitting:
        try:
            _load_one(pipe, embedding)
        except (ValueError, KeyError, RuntimeError, OSError) as exc:
            log.warning("%s: embedding %r not loaded: %s", config.name, embedding.name, exc)
            continue
        loaded.append(embedding.name)
    if loaded:
        log.info("%s: embeddings loaded: %s", config.name, ", ".join(loaded))
    return loaded
