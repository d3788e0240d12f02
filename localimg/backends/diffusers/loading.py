"""Loading a diffusers pipeline: device and dtype, the pipeline class, single-file class guess,
model_index.json, and hub failures in words.

Loading goes through diffusers' own `from_pretrained` (hub ids through huggingface_hub's cache, or
local folders) and `from_single_file` (.safetensors/.ckpt). torch and diffusers are imported only
inside functions.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localimg._util.system import cpu_has_bf16
from localimg.backends.base import RuntimeSettings
from localimg.backends.diffusers import gguf_files, processors, quantize
from localimg.backends.diffusers.families import FAMILIES, check_needs
from localimg.backends.diffusers.options import DTYPES, DiffusersOptions
from localimg.config import ModelConfig, ModelSource
from localimg.errors import (
    BackendNotInstalled,
    ConfigError,
    LocalimgError,
    ModelUnavailable,
)

if TYPE_CHECKING:
    import torch

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


def choose_device(settings: RuntimeSettings, config: ModelConfig) -> str:
    import torch

    cuda_ok = torch.cuda.is_available()
    mps_ok = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    wanted = settings.device
    if wanted and wanted != "auto":
        kind = wanted.split(":")[0]
        available = {"cpu": True, "cuda": cuda_ok, "mps": mps_ok}
        if kind not in available:
            raise ConfigError(f"unknown device {wanted!r}; use auto, cpu, cuda, cuda:N or mps")
        if not available[kind]:
            raise ConfigError(f"device {wanted!r} was asked for but is not available here")
        return wanted
    if config.use_cuda is False:
        return "cpu"
    if config.use_cuda and not cuda_ok:
        log.warning(
            "%s asks for CUDA, which is not available here: running on %s",
            config.where,
            "mps" if mps_ok else "cpu",
        )
    if cuda_ok:
        return "cuda"
    return "mps" if mps_ok else "cpu"


def choose_dtype(device: str, config: ModelConfig, options: DiffusersOptions) -> torch.dtype:
    import torch

    if options.dtype:
        dtype: torch.dtype = getattr(torch, DTYPES[options.dtype])
        return dtype
    if not config.f16:
        return torch.float32
    if device.startswith(("cuda", "mps")):
        return torch.float16
    if cpu_has_bf16():
        log.info("%s: f16 on a CPU with native bfloat16 (AVX512-BF16/AMX): bfloat16", config.where)
        return torch.bfloat16
    log.warning(
        "%s: f16 is set but this CPU has neither float16 nor native bfloat16 arithmetic "
        '(AVX512-BF16/AMX): using float32; set `options: ["dtype:bfloat16"]` to force bfloat16',
        config.where,
    )
    return torch.float32


def pipeline_class(pipeline_type: str) -> Any:
    import diffusers

    name = PIPELINE_TYPES.get(pipeline_type, pipeline_type)
    cls = getattr(diffusers, name, None)
    if cls is None or not (
        isinstance(cls, type)
        and (issubclass(cls, diffusers.DiffusionPipeline) or name.startswith("AutoPipeline"))
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


def dtype_key() -> str:
    """diffusers renamed `torch_dtype` to `dtype` (and warns on the old name); use what it takes."""
    from diffusers.utils import deprecation_utils

    return "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"


# Warnings that importing diffusers prints once torchao (quantization:int8) is installed, about
# parts localimg never uses: torchao's CUDA kernels missing on a CPU build, tensor classes of
# torchao-serialized checkpoints, and torch's notice about an enum torchao registers.
IMPORT_NOISE_LOGGERS = (
    "torchao",
    "diffusers.quantizers.torchao.torchao_quantizer",
    "torch.utils._pytree",
)


def quiet_library_progress() -> None:
    """diffusers/transformers draw their own tqdm bars while loading; localimg shows its own.
    Also silences import-time warnings that say nothing about the user's model (before the
    first diffusers import, which is what prints them)."""
    import logging

    for name in IMPORT_NOISE_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.disable_progress_bar()
    try:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    except ImportError:
        pass


def bridge_clip_text_model(pipe: Any) -> None:
    """Let diffusers' clip_skip code find `text_encoder.text_model` under transformers 5.

    transformers 5 flattened CLIPTextModel (final_layer_norm moved up a level) while diffusers'
    encode_prompt still reads `text_encoder.text_model.final_layer_norm` when clip_skip is set.
    The alias is stored outside torch's module registry, so weights are not duplicated.
    """
    for name in ("text_encoder", "text_encoder_2"):
        encoder = getattr(pipe, name, None)
        if encoder is None or "text_model" in vars(encoder) or hasattr(encoder, "text_model"):
            continue
        if hasattr(encoder, "final_layer_norm"):
            object.__setattr__(encoder, "text_model", encoder)


HUB_PROBE_TIMEOUT = 2.0  # seconds for the one connection attempt that tells whether the hub is up
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT) -> bool:
    """Whether the hub (HF_ENDPOINT) accepts a connection; False when declared offline.

    Unreachable, huggingface_hub retries every request with back-off (about 27 s and a screen of
    retry warnings, per file) before the cache lookup fails anyway; one short probe lets localimg
    load from the cache only, and say at once what is wrong when the model is not there. Behind a
    proxy the endpoint cannot be probed directly, so the library decides, as before.
    """
    import os
    import socket
    from urllib.parse import urlsplit

    from huggingface_hub import constants as hf_constants

    if hf_constants.HF_HUB_OFFLINE:
        return False
    if any(os.environ.get(name) for name in PROXY_VARIABLES):
        return True
    url = urlsplit(hf_constants.ENDPOINT)
    if not url.hostname:
        return True
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        log.info("the hub at %s cannot be reached: using the local cache only", url.netloc)
        return False


def model_index(
    source: ModelSource, revision: str | None, local_only: bool = False
) -> dict[str, Any]:
    """model_index.json of a folder or hub repo (downloading it checks the repo is reachable;
    `local_only`: from the Hugging Face cache, without asking the hub)."""
    if source.kind == "folder":
        path = source.path / "model_index.json"
        if not path.is_file():
            raise ModelUnavailable(
                f"{source.location} is not a diffusers model folder (no model_index.json)"
            )
    else:
        from huggingface_hub import hf_hub_download

        path = Path(
            hf_hub_download(
                source.location,
                "model_index.json",
                revision=revision,
                local_files_only=local_only,
            )
        )
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def hub_error(source: ModelSource, exc: Exception) -> LocalimgError:
    """Turn a hub/loading failure into an error that says what to do."""
    from huggingface_hub import errors as hf_errors

    where = source.location
    if isinstance(exc, hf_errors.GatedRepoError):
        return ModelUnavailable(f"{where} is gated: accept its license on the hub and set HF_TOKEN")
    if isinstance(exc, hf_errors.RepositoryNotFoundError):
        return ModelUnavailable(f"hub repo {where!r} does not exist (or is private: set HF_TOKEN)")
    if isinstance(exc, hf_errors.RevisionNotFoundError):
        return ModelUnavailable(f"{where}: revision not found")
    if isinstance(exc, hf_errors.LocalEntryNotFoundError | hf_errors.OfflineModeIsEnabled):
        return ModelUnavailable(
            f"{where} is not in the local Hugging Face cache and the hub cannot be reached "
            "(offline?). Connect once so it downloads, set HF_ENDPOINT to a mirror, or use a "
            "local model: --model /path/to/folder-or-file.safetensors"
        )
    if isinstance(exc, hf_errors.EntryNotFoundError):
        return ModelUnavailable(f"{where}: a file the pipeline needs is missing: {exc}")
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ModelUnavailable(f"cannot load {where}: {first}")


def load_pipeline(
    pipeline_type: str,
    source: ModelSource,
    options: DiffusersOptions,
    dtype: Any,
    config: ModelConfig | None,
) -> Any:
    """The pipeline `pipeline_type` names, from a single file, a folder or a hub repo."""
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
    if gguf_files.is_gguf(source):
        return load_gguf(pipeline_type, source, options, config, common)
    if pipeline_type == "FluxTransformer2DModel":
        return load_flux_transformer(source, options, dtype, common)
    if source.kind == "file":
        name = PIPELINE_TYPES.get(pipeline_type, pipeline_type)
        if pipeline_type in AUTO_TYPES:
            name = single_file_class(source.path)
        cls = pipeline_class(name)
        if not hasattr(cls, "from_single_file"):
            raise ConfigError(
                f"pipeline_type {pipeline_type!r} cannot load a single file; use a diffusers "
                "folder or hub id, or a pipeline type such as StableDiffusionPipeline"
            )
        if options.config:
            local = config.resolve_path(options.config) if config else None
            common["config"] = str(local) if local and local.exists() else options.config
        if options.original_config:
            common["original_config"] = options.original_config
        return cls.from_single_file(str(source.path), **common)
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


def load_gguf(
    pipeline_type: str,
    source: ModelSource,
    options: DiffusersOptions,
    config: ModelConfig | None,
    common: dict[str, Any],
) -> Any:
    """A GGUF transformer file in the pipeline of its base repo (gguf_files.py)."""
    base = gguf_files.base_of(options, config)
    base_source = ModelSource("folder" if Path(base).is_dir() else "hub", base)
    index = model_index(base_source, options.revision, bool(common.get("local_files_only")))
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


def apply_loras(pipe: Any, config: ModelConfig) -> None:
    """The YAML's LoRA adapters, each loaded under its own name and set at its scale."""
    loras = config.loras()
    if not loras:
        return
    if not hasattr(pipe, "load_lora_weights"):
        raise ConfigError(f"{config.where}: this pipeline does not support LoRA adapters")
    names, scales = [], []
    for index, (file, scale) in enumerate(loras):
        path = config.resolve_path(file)
        if not path.exists():
            raise ModelUnavailable(f"{config.where}: LoRA file {file!r} not found ({path})")
        name = f"lora{index}"
        try:
            if path.is_dir():
                pipe.load_lora_weights(str(path), adapter_name=name)
            else:
                pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=name)
        except ImportError as exc:
            raise BackendNotInstalled(f"LoRA needs peft: pip install peft ({exc})") from None
        except (ValueError, KeyError, RuntimeError, OSError) as exc:
            raise ConfigError(f"{config.where}: cannot load LoRA {file!r}: {exc}") from None
        names.append(name)
        scales.append(scale)
    pipe.set_adapters(names, adapter_weights=scales)
