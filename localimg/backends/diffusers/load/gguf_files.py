"""GGUF transformers on the diffusers backend: `parameters.model: flux1-dev-Q8_0.gguf`.

city96's and others' GGUF files hold one DiT transformer (FLUX.1 / Kontext, FLUX.2, Qwen-Image,
Chroma, Z-Image, Wan, ...) quantized like llama.cpp's models (Q8_0, Q5_K, Q4_K, ...). diffusers
loads them through the transformer class's `from_single_file` with a `GGUFQuantizationConfig`:
the weights stay quantized in memory (about 1.06 bytes per weight at Q8_0, 0.56 at Q4_K) and each
linear layer dequantizes its own weights to `compute_dtype` (the pipeline's dtype) as it runs.

The rest of the pipeline (text encoders, VAE, scheduler) and the transformer's config come from
the diffusers repo or folder named by `options: ["base_model:..."]` (or `config:`, the key
single files already use); its model_index.json names the transformer class and the pipeline
class. The `gguf` package must be installed (the diffusers extra has it).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from localimg.backends.diffusers.options import DiffusersOptions
from localimg.config import ModelConfig, ModelSource
from localimg.errors import BackendNotInstalled, ConfigError

log = logging.getLogger(__name__)

DENOISER_SLOTS = ("transformer", "unet")


def is_gguf(source: ModelSource) -> bool:
    return source.kind == "file" and source.path.suffix.lower() == ".gguf"


def base_of(options: DiffusersOptions, config: ModelConfig | None) -> str:
    """The diffusers repo or folder the other components come from (base_model or config,
    which must agree when both are given); a local path is resolved against the models dir."""
    given = {v for v in (options.base_model, options.config) if v}
    if len(given) > 1:
        raise ConfigError(
            f"options: base_model {options.base_model!r} and config {options.config!r} disagree; "
            "a GGUF transformer takes its pipeline from one diffusers repo: set one of them"
        )
    if not given:
        raise ConfigError(
            "a .gguf transformer file needs the diffusers repo its other components (text "
            'encoders, VAE) come from: options: ["base_model:black-forest-labs/FLUX.1-dev"] '
            "(a hub id, or a local diffusers folder)"
        )
    base = given.pop()
    if config is not None:
        local = config.resolve_path(base)
        if local.exists():
            return str(local)
    return base


def base_source(base: str) -> ModelSource:
    """base_of's answer as a source: a local diffusers folder, else a hub repo."""
    return ModelSource("folder" if Path(base).is_dir() else "hub", base)


def transformer_class(index: dict[str, Any], base: str) -> tuple[str, str]:
    """(slot, class name) of the base pipeline's denoiser, checked single-file loadable."""
    from diffusers.loaders.single_file_model import SINGLE_FILE_LOADABLE_CLASSES

    if "transformer_2" in index and index.get("transformer_2", [None, None])[1]:
        raise ConfigError(
            f"{base} has two transformers (Wan 2.2 A14B's high- and low-noise experts); a "
            "single .gguf file holds one: use a base with one transformer, or the "
            "stablediffusion-ggml backend"
        )
    for slot in DENOISER_SLOTS:
        entry = index.get(slot)
        if isinstance(entry, list) and len(entry) == 2 and entry[1]:
            name = str(entry[1])
            if name not in SINGLE_FILE_LOADABLE_CLASSES:
                loadable = sorted(n for n in SINGLE_FILE_LOADABLE_CLASSES if "Transformer" in n)
                raise ConfigError(
                    f"{base}'s {slot} is a {name}, which diffusers cannot load from a GGUF "
                    f"file; GGUF works for {', '.join(loadable)}"
                )
            return slot, name
    raise ConfigError(f"{base} has no transformer or unet to load the .gguf file into")


def load_gguf_pipeline(
    source: ModelSource,
    pipeline_cls: Any,
    index: dict[str, Any],
    base: str,
    dtype: Any,
    common: dict[str, Any],
) -> Any:
    """The base repo's pipeline with its denoiser read from the GGUF file, kept quantized."""
    import diffusers

    try:
        import gguf  # noqa: F401  (diffusers checks too, with a less helpful message)
    except ImportError:
        raise BackendNotInstalled(
            "a .gguf model on the diffusers backend needs the gguf package: pip install gguf"
        ) from None
    slot, name = transformer_class(index, base)
    cls = getattr(diffusers, name)
    own = {k: v for k, v in common.items() if k == "local_files_only"}
    if "revision" in common:
        own["config_revision"] = common["revision"]
    denoiser = cls.from_single_file(
        str(source.path),
        quantization_config=diffusers.GGUFQuantizationConfig(compute_dtype=dtype),
        config=base,
        subfolder=slot,
        **own,
        **{k: v for k, v in common.items() if k in ("dtype", "torch_dtype")},
    )
    log.info("%s: %s from %s, the rest from %s", Path(source.path).name, name, slot, base)
    return pipeline_cls.from_pretrained(base, **{slot: denoiser}, **common)
