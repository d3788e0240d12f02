"""The widths of a model's text encoders, read without loading it: what an embedding must match.

A diffusers folder (or a hub repo, from the local Hugging Face cache only) says them in each
`text_encoder*/config.json` (`hidden_size`, or `d_model` for a T5). A single .safetensors or
.gguf checkpoint says them in the shapes of its CLIP token embeddings: SD 1.x
`cond_stage_model.transformer...token_embedding.weight` [49408, 768], SD 2.x
`cond_stage_model.model.token_embedding.weight` [49408, 1024], SDXL
`conditioner.embedders.0...` (768) and `.1...` (1280). A ggml model whose CLIP is a file of its
own (`clip_l_path`, `clip_g_path` options) is read there. None: the widths cannot be known.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from localimg._util.hub_cache import cached_pipeline
from localimg.config import ModelConfig, model_source
from localimg.errors import LocalimgError

log = logging.getLogger(__name__)

TOKEN_EMBEDDING = "token_embedding.weight"
CHECKPOINT_PREFIXES = ("cond_stage_model.", "conditioner.embedders.")
SEPARATE_CLIPS = ("clip_l_path", "clip_g_path")
OTHER_ENCODERS = ("t5xxl_path", "llm_path")


def folder_widths(folder: Path) -> tuple[int, ...] | None:
    """Each `text_encoder*` component's width, in name order (text_encoder, text_encoder_2)."""
    widths = []
    for config_file in sorted(folder.glob("text_encoder*/config.json")):
        try:
            data = json.loads(config_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        width = data.get("hidden_size") or data.get("d_model")
        if not isinstance(width, int):
            return None
        widths.append(width)
    return tuple(widths)


def _tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Names and shapes (torch order) of a .safetensors or .gguf file's tensors, header only."""
    if path.suffix.lower() == ".gguf":
        from gguf import GGUFReader

        reader = GGUFReader(str(path))
        # ggml lists dimensions innermost first: reversed, they are torch's order
        return {t.name: tuple(int(d) for d in reversed(t.shape)) for t in reader.tensors}
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as handle:
        return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118


def file_widths(path: Path, prefixes: tuple[str, ...] = CHECKPOINT_PREFIXES) -> tuple[int, ...]:
    """The widths of the CLIP token embeddings in a checkpoint, in key order (empty: none)."""
    if path.suffix.lower() not in (".safetensors", ".gguf"):
        return ()
    shapes = _tensor_shapes(path)
    keys = sorted(
        k
        for k in shapes
        if k.endswith(TOKEN_EMBEDDING) and (not prefixes or k.startswith(prefixes))
    )
    return tuple(shapes[k][-1] for k in keys if len(shapes[k]) == 2)


def _single_file_widths(config: ModelConfig, path: Path) -> tuple[int, ...]:
    widths = file_widths(path)
    if widths:
        return widths
    options = config.parsed_options()
    if any(options.get(key) for key in OTHER_ENCODERS):
        return ()  # SD3, FLUX, ...: a T5 or LLM encoder too, which no embedding fits
    separate = [str(options[key]) for key in SEPARATE_CLIPS if options.get(key)]
    found: list[int] = []
    for value in separate:
        found += file_widths(config.resolve_path(value), ())[:1]
    return tuple(found)


def text_widths(config: ModelConfig) -> tuple[int, ...] | None:
    """The widths of `config`'s text encoders (nothing is loaded or downloaded); None when they
    cannot be known (a hub model not in the cache, an unreadable file)."""
    try:
        source = model_source(config)
        if source.kind == "hub":
            revision = config.parsed_options().get("revision")
            cached = cached_pipeline(source.location, str(revision) if revision else None)
            return None if isinstance(cached, str) else folder_widths(cached.snapshot)
        if source.kind == "folder":
            return folder_widths(source.path)
        return _single_file_widths(config, source.path)
    except LocalimgError as exc:
        log.debug("%s: no text encoder widths (%s)", config.name, exc.message)
    except Exception as exc:  # an unreadable header: SafetensorError, gguf's ValueError, OSError
        log.info("%s: cannot read its text encoder widths (%s)", config.name, exc)
    return None
