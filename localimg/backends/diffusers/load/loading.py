"""Loading a diffusers pipeline: the pipeline class a YAML names, the class of a single file,
and the three ways in: a folder or hub repo, a single file, a GGUF or standalone FLUX transformer
set into the pipeline of a base repo.

Loading goes through diffusers' own `from_pretrained` (hub ids through huggingface_hub's cache, or
local folders) and `from_single_file` (.safetensors/.ckpt). Where it runs and in what precision
is precision.py; the hub's reachability, model_index.json and failures are hub.py. torch and
diffusers are imported only inside functions.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from localimg.backends.diffusers.families import FAMILIES, check_needs
from localimg.backends.diffusers.load import (
    gguf_files,
    modular,
    processors,
    quantize,
    streamed_weights,
)
from localimg.backends.diffusers.load.hub import hub_reachable, model_index
from localimg.backends.diffusers.load.library import dtype_key
from localimg.backends.diffusers.options import DiffusersOptions
from localimg.config import ModelConfig, ModelSource, model_source
from localimg.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_PIPELINE = "AutoPipelineForText2Image"

# LocalAI's `pipeline_type` names → the diffusers class that loads them.
PIPELINE_TYPES: dict[str, str] = {
    "StableDiffusionPipeline": "StableDiffusionPipeline",
    "StableDiffusionImg2ImgPipeline": "StableDiffusionImg2ImgPipeline",
    "StableDiffusionDepth2ImgPipeline": "StableDiffusionDepth2ImgPipeline",
    "DiffusionPipeline": "DiffusionPipeline",
    "StableDiffusionXLPipeline": "StableDiffusionXLPipeline",
    "StableVideoDiffusionPipeline": "StableVideoDiffusionPipeline",
    "AutoPipelineForText2Image": "AutoPipelineForText2Image",
    "VideoDiffusionPipeline": "DiffusionPipeline",  # text-to-video repos resolve their own class
    "StableDiffusion3Pipeline": "StableDiffusion3Pipeline",
    "FluxPipeline": "FluxPipeline",
    "FluxTransformer2DModel": "FluxPipeline",  # a standalone FLUX transformer + a base repo
    "SanaPipeline": "SanaPipeline",
    # The families of families.py, by their own class names.
    "ZImagePipeline": "ZImagePipeline",
    "ZImageImg2ImgPipeline": "ZImageImg2ImgPipeline",
    "ZImageInpaintPipeline": "ZImageInpaintPipeline",
    "Flux2Pipeline": "Flux2Pipeline",
    "Flux2KleinPipeline": "Flux2KleinPipeline",
    "QwenImagePipeline": "QwenImagePipeline",
    "QwenImageEditPlusPipeline": "QwenImageEditPlusPipeline",
    "QwenImageEditPipeline": "QwenImageEditPipeline",
    "FluxKontextPipeline": "FluxKontextPipeline",
    "ChromaPipeline": "ChromaPipeline",
    "WanPipeline": "WanPipeline",
    "WanImageToVideoPipeline": "WanImageToVideoPipeline",
    # and every other class of the family table (the families of 2026), by its own name
    **{name: name for name in FAMILIES},
}
# Repo classes that are text-to-image pipelines themselves: AutoPipelineForText2Image loads them
# as they are, so localimg can too (and skip importing the auto-pipeline tables).
TEXT_TO_IMAGE_CLASSES = frozenset(
    {
        "StableDiffusionPipeline",
        "StableDiffusionXLPipeline",
        "StableDiffusion3Pipeline",
        "FluxPipeline",
        "SanaPipeline",
    }
)
# Repo classes loaded as themselves when no pipeline_type is given: the text-to-image ones above
# and the families (families.py), whose edit and video pipelines AutoPipelineForText2Image would
# refuse or turn into another class.
OWN_CLASSES = TEXT_TO_IMAGE_CLASSES | frozenset(FAMILIES)
AUTO_TYPES = frozenset({"AutoPipelineForText2Image", "DiffusionPipeline", "VideoDiffusionPipeline"})
FLUX_BASE_REPO = "black-forest-labs/FLUX.1-dev"


def pipeline_class(pipeline_type: str) -> Any:
    import diffusers

    name = PIPELINE_TYPES.get(pipeline_type, pipeline_type)
    cls = getattr(diffusers, name, None)
    if cls is None or not (
        isinstance(cls, type)
        and (
            issubclass(cls, diffusers.DiffusionPipeline)
            or name in modular.MODULAR_CLASSES  # the modular ones localimg drives
            or name.startswith("AutoPipeline")
        )
    ):
        raise ConfigError(
            f"unknown pipeline_type {pipeline_type!r}; use one of {', '.join(PIPELINE_TYPES)} "
            "or the name of another diffusers pipeline class"
        )
    return cls


def single_file_class(path: Path) -> str:
    """Guess the pipeline of an original-layout checkpoint from its tensor names."""
    keys: list[str] = []
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            keys = list(handle.keys())
    prefixes = (
        "conditioner.embedders.1",
        "model.diffusion_model.joint_blocks",
        "double_blocks.",
        "model.diffusion_model.double_blocks.",
    )
    found = {p for p in prefixes if any(k.startswith(p) for k in keys)}
    if "conditioner.embedders.1" in found:
        return "StableDiffusionXLPipeline"
    if "model.diffusion_model.joint_blocks" in found:
        return "StableDiffusion3Pipeline"
    if found & {"double_blocks.", "model.diffusion_model.double_blocks."}:
        return "FluxPipeline"
    return "StableDiffusionPipeline"


def class_to_load(config: ModelConfig, options: DiffusersOptions, *, hub: bool) -> str | None:
    """The pipeline class loading will use, known before loading so the precision can follow the
    family (load/precision.py). None where it cannot be known: a hub repo not in the cache when
    `hub` is False or the hub is unreachable, a file or folder that is not there."""
    pipeline_type = config.diffusers.pipeline_type or DEFAULT_PIPELINE
    if pipeline_type == "FluxTransformer2DModel":
        return "FluxPipeline"
    if pipeline_type not in AUTO_TYPES:
        return PIPELINE_TYPES.get(pipeline_type, pipeline_type)
    try:
        source = model_source(config)
        if gguf_files.is_gguf(source):
            source = gguf_files.base_source(gguf_files.base_of(options, config))
        if source.kind == "file":
            return single_file_class(source.path)
        local_only = source.kind == "hub" and not (hub and hub_reachable())
        try:  # a classic pipeline's index first: a classic repo then costs no modular probe
            own = model_index(source, options.revision, local_only).get("_class_name")
        except Exception:  # none: perhaps a modular repo (load/modular.py)
            own = None
        if own:
            return str(own)
        return modular.modular_class(pipeline_type, source, options.revision, local_only, True)
    except Exception as exc:  # loading itself reports what is wrong; this is only a guess
        log.debug("%s: the pipeline class is not known before loading: %s", config.where, exc)
        return None


def load_pipeline(
    pipeline_type: str,
    source: ModelSource,
    options: DiffusersOptions,
    dtype: Any,
    config: ModelConfig | None,
) -> Any:
    """The pipeline `pipeline_type` names, from a single file, a folder or a hub repo; in half
    precision with each tensor read and cast alone (streamed_weights.py)."""
    import torch

    with streamed_weights.streaming(dtype in (torch.float16, torch.bfloat16)):
        return _load_pipeline(pipeline_type, source, options, dtype, config)


def _load_pipeline(
    pipeline_type: str,
    source: ModelSource,
    options: DiffusersOptions,
    dtype: Any,
    config: ModelConfig | None,
) -> Any:
    import diffusers

    common: dict[str, Any] = {dtype_key(): dtype}
    if options.revision:
        common["revision"] = options.revision
    local_config = bool(options.config) and bool(
        config and config.resolve_path(str(options.config)).exists()
    )
    uses_hub = source.kind == "hub" or pipeline_type == "FluxTransformer2DModel"
    if (uses_hub or (source.kind == "file" and not local_config)) and not hub_reachable():
        common["local_files_only"] = True  # every later lookup from the cache, without retries
    local_only = bool(common.get("local_files_only"))
    auto = pipeline_type in AUTO_TYPES
    found = modular.modular_class(pipeline_type, source, options.revision, local_only, auto)
    if found:  # a diffusers modular pipeline (load/modular.py)
        return modular.load_modular(found, source, dtype, common, options)
    if gguf_files.is_gguf(source):
        return load_gguf(pipeline_type, source, options, config, common)
    if pipeline_type == "FluxTransformer2DModel":
        return load_flux_transformer(source, options, dtype, common)
    if source.kind == "file":
        return load_single_file(pipeline_type, source, options, config, common)
    index = model_index(source, options.revision, bool(common.get("local_files_only")))
    quantization = quantize.load_time_config(options, dtype, index)
    if quantization is not None:
        common["quantization_config"] = quantization
    if "safety_checker" in index:
        common["safety_checker"] = None
        common["requires_safety_checker"] = False
    if options.variant:
        common["variant"] = options.variant
    own = index.get("_class_name")
    if pipeline_type == DEFAULT_PIPELINE and own in OWN_CLASSES:
        # What AutoPipelineForText2Image would pick, without importing every pipeline
        # diffusers has (auto_pipeline.py costs ~9 s of imports on a 2-core CPU).
        cls = pipeline_class(str(own))
    elif pipeline_type in AUTO_TYPES and "AutoPipelineForText2Image" not in dir(diffusers):
        cls = diffusers.DiffusionPipeline  # a diffusers without AutoPipelines
        # (`dir`, not `hasattr`: asking the lazy module for the attribute imports it)
    else:
        cls = pipeline_class(pipeline_type)
    check_needs(cls.__name__)
    if own and pipeline_type in AUTO_TYPES:  # the repo's own class is what loads
        check_needs(str(own))
    loads = str(own) if own and pipeline_type in AUTO_TYPES else cls.__name__
    common.update(processors.replacement_components(loads, source.location, common))
    return cls.from_pretrained(source.location, **common)


def load_single_file(
    pipeline_type: str,
    source: ModelSource,
    options: DiffusersOptions,
    config: ModelConfig | None,
    common: dict[str, Any],
) -> Any:
    """One checkpoint file through the pipeline class's from_single_file (its type read from
    the file's keys when the YAML leaves it automatic)."""
    name = PIPELINE_TYPES.get(pipeline_type, pipeline_type)
    if pipeline_type in AUTO_TYPES:
        name = single_file_class(source.path)
    cls = pipeline_class(name)
    if not hasattr(cls, "from_single_file"):
        raise ConfigError(
            f"pipeline_type {pipeline_type!r} cannot load a single file; use a diffusers "
            "folder or hub id, or a pipeline type such as StableDiffusionPipeline"
        )
    common = dict(common)
    if options.config:
        local = config.resolve_path(options.config) if config else None
        common["config"] = str(local) if local and local.exists() else options.config
    if options.original_config:
        common["original_config"] = options.original_config
    return cls.from_single_file(str(source.path), **common)


def load_gguf(
    pipeline_type: str,
    source: ModelSource,
    options: DiffusersOptions,
    config: ModelConfig | None,
    common: dict[str, Any],
) -> Any:
    """A GGUF transformer file in the pipeline of its base repo (gguf_files.py)."""
    base = gguf_files.base_of(options, config)
    index = model_index(
        gguf_files.base_source(base), options.revision, bool(common.get("local_files_only"))
    )
    if pipeline_type in AUTO_TYPES or pipeline_type == "FluxTransformer2DModel":
        cls = pipeline_class(str(index.get("_class_name") or ""))
    else:
        cls = pipeline_class(pipeline_type)
    check_needs(cls.__name__)
    dtype = common[dtype_key()]
    common = {**common, **processors.replacement_components(cls.__name__, base, common)}
    return gguf_files.load_gguf_pipeline(source, cls, index, base, dtype, common)


def load_flux_transformer(
    source: ModelSource, options: DiffusersOptions, dtype: Any, common: dict[str, Any]
) -> Any:
    """A standalone FLUX transformer, set into the pipeline of a base repo."""
    import diffusers

    own = {k: v for k, v in common.items() if k in (dtype_key(), "local_files_only")}
    if source.kind == "file":
        transformer = diffusers.FluxTransformer2DModel.from_single_file(str(source.path), **own)
    else:
        transformer = diffusers.FluxTransformer2DModel.from_pretrained(
            source.location, subfolder="transformer", **own
        )
    base = options.base_model or FLUX_BASE_REPO
    return diffusers.FluxPipeline.from_pretrained(base, transformer=transformer, **common)
