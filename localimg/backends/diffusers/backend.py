"""The diffusers backend: Hugging Face pipelines on torch (CUDA, MPS or CPU).

Loading goes through diffusers' own `from_pretrained` (hub ids through huggingface_hub's cache, or
local folders) and `from_single_file` (.safetensors/.ckpt). torch and diffusers are imported only
inside methods, so importing this module (and `localimg --help`) stays fast.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from localimg._util.system import cpu_has_bf16, physical_cores
from localimg.backends.base import BackendDefaults, ProgressCallback, RuntimeSettings
from localimg.backends.diffusers import schedulers, tasks
from localimg.backends.diffusers.batch_invariance import (
    BatchGrouping,
    make_linear_layers_batch_invariant,
)
from localimg.config import ModelConfig, ModelSource, model_source
from localimg.config.options import OPTION_ALIASES
from localimg.errors import (
    BackendError,
    BackendNotInstalled,
    Cancelled,
    ConfigError,
    InvalidRequest,
    LocalimgError,
    ModelUnavailable,
)
from localimg.requests import ImageRequest, ImageResult, ProgressEvent

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

DEFAULT_PIPELINE = "AutoPipelineForText2Image"
DEFAULT_STEPS = 30  # LocalAI's documented default

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
AUTO_TYPES = frozenset({"AutoPipelineForText2Image", "DiffusionPipeline", "VideoDiffusionPipeline"})
FLUX_BASE_REPO = "black-forest-labs/FLUX.1-dev"

# Call arguments localimg sets itself: an option or extra field may not set them directly.
RESERVED_CALL_ARGS = frozenset(
    {
        "self",
        "prompt",
        "generator",
        "callback_on_step_end",
        "callback_on_step_end_tensor_inputs",
        "output_type",
        "return_dict",
        "num_images_per_prompt",
        "callback",
        "callback_steps",
        "kwargs",
        "args",
    }
)
# Request fields that `diffusers.enable_parameters` can switch off (LocalAI's gate).
GATED = ("negative_prompt", "num_inference_steps", "clip_skip", "image", "mask_image")

DTYPES = {
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float32": "float32",
    "fp32": "float32",
}


class DiffusersOptions(BaseModel):
    """`options:` keys the diffusers backend consumes at load time."""

    model_config = ConfigDict(extra="forbid")

    dtype: Literal["float16", "fp16", "half", "bfloat16", "bf16", "float32", "fp32"] | None = None
    variant: str | None = None  # e.g. fp16: the repo's half-precision weight files
    revision: str | None = None
    config: str | None = None  # single files: a diffusers folder or hub id with the configs
    original_config: str | None = None
    base_model: str | None = None  # FluxTransformer2DModel: the repo with the other components
    attention_slicing: bool = False
    vae_tiling: bool = False
    vae_slicing: bool = False
    cpu_offload: bool = False
    channels_last: bool = False  # NHWC weights for the UNet/VAE convolutions (faster on many CPUs)
    compile: bool = False  # torch.compile the denoiser: the first generation pays a warm-up


OPTION_KEYS = frozenset(DiffusersOptions.model_fields)


def _parse_options(config: ModelConfig) -> DiffusersOptions:
    raw = {k: v for k, v in config.parsed_options().items() if k in OPTION_KEYS}
    try:
        return DiffusersOptions.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        raise ConfigError(
            f"{config.where}: options: {key}: {err['msg']} (got {err.get('input')!r})"
        ) from None


def _choose_device(settings: RuntimeSettings, config: ModelConfig) -> str:
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


def _choose_dtype(device: str, config: ModelConfig, options: DiffusersOptions) -> torch.dtype:
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


def _pipeline_class(pipeline_type: str) -> Any:
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


def _single_file_class(path: Path) -> str:
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


def _cpp_compiler() -> str | None:
    """The C++ compiler torch.compile's CPU code generator would use, if there is one."""
    import os
    import shutil

    for name in (os.environ.get("CXX"), "g++", "clang++"):
        if name and shutil.which(name):
            return name
    return None


def _denoiser(pipe: Any) -> Any:
    """The UNet or transformer (tested with `is None`: a compiled module has no truth value)."""
    unet = getattr(pipe, "unet", None)
    return unet if unet is not None else getattr(pipe, "transformer", None)


def _attention_kind(pipe: Any) -> str:
    """Return "sdpa" when every attention layer uses torch's scaled_dot_product_attention."""
    denoiser = _denoiser(pipe)
    processors = getattr(denoiser, "attn_processors", None)
    if not processors:
        return ""
    names = {type(p).__name__ for p in processors.values()}
    if names <= {"AttnProcessor2_0", "FluxAttnProcessor", "FluxAttnProcessor2_0"}:
        return "sdpa"
    return ",".join(sorted(names))


@contextlib.contextmanager
def _pipeline_errors(pipe: Any, out_of_memory: str) -> Iterator[None]:
    """Turn what a pipeline call raises into localimg errors (one place for every call site)."""
    import torch

    try:
        yield
    except torch.OutOfMemoryError:
        raise BackendError(out_of_memory) from None
    except ValueError as exc:
        raise InvalidRequest(f"{type(pipe).__name__}: {exc}") from None
    except RuntimeError as exc:
        raise BackendError(f"generation failed: {exc}") from None


def _dtype_key() -> str:
    """diffusers renamed `torch_dtype` to `dtype` (and warns on the old name); use what it takes."""
    from diffusers.utils import deprecation_utils

    return "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"


def _quiet_library_progress() -> None:
    """diffusers/transformers draw their own tqdm bars while loading; localimg shows its own."""
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.disable_progress_bar()
    try:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    except ImportError:
        pass


def _bridge_clip_text_model(pipe: Any) -> None:
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


def _model_index(source: ModelSource, revision: str | None) -> dict[str, Any]:
    """model_index.json of a folder or hub repo (downloading it checks the repo is reachable)."""
    if source.kind == "folder":
        path = source.path / "model_index.json"
        if not path.is_file():
            raise ModelUnavailable(
                f"{source.location} is not a diffusers model folder (no model_index.json)"
            )
    else:
        from huggingface_hub import hf_hub_download

        path = Path(hf_hub_download(source.location, "model_index.json", revision=revision))
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _hub_error(source: ModelSource, exc: Exception) -> LocalimgError:
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


class DiffusersBackend:
    """One loaded diffusers pipeline."""

    name: ClassVar[str] = "diffusers"
    requirements: ClassVar[tuple[str, ...]] = ("torch", "diffusers", "transformers")
    extra: ClassVar[str] = "diffusers"
    option_keys: ClassVar[frozenset[str]] = OPTION_KEYS

    def __init__(self, settings: RuntimeSettings) -> None:
        self.settings = settings
        self.pipe: Any = None
        self.config: ModelConfig | None = None
        self.device = "cpu"
        self.dtype: Any = None
        self._call_params: dict[str, inspect.Parameter] = {}
        self._kind = "txt2img"  # what the loaded pipeline does (tasks.pipeline_kind)
        self._siblings: dict[str, Any] = {}  # other tasks over the same modules (from_pipe)
        self._scheduler_config: Any = None
        self._default_scheduler: Any = None
        self._defaults = BackendDefaults(width=512, height=512, steps=DEFAULT_STEPS, cfg_scale=7.5)
        self._compiled = False
        self._grouping = BatchGrouping()  # replaced on load (backends/batch_invariance.py)

    # -- requests ---------------------------------------------------------------------------

    @classmethod
    def check_request(cls, request: ImageRequest, config: ModelConfig) -> None:
        """Refuse before queueing: unknown scheduler, gated parameters, sizes not multiple of 8."""
        if request.scheduler is not None:
            schedulers.lookup(request.scheduler)
        for side in ("width", "height"):
            value = getattr(request, side)
            if value is not None and value % 8:
                raise InvalidRequest(
                    f"{side} {value} is not a multiple of 8, which diffusers models need "
                    f"(try {value // 8 * 8 or 8} or {value // 8 * 8 + 8})",
                    param="size",
                )
        enabled = config.enabled_parameters
        if enabled is None:
            return
        asked = {
            "negative_prompt": request.negative_prompt is not None or "|" in request.prompt,
            "num_inference_steps": request.steps is not None,
            "clip_skip": request.clip_skip is not None,
            "image": request.init_image is not None,
            "mask_image": request.mask is not None,
        }
        for gate in GATED:
            if asked[gate] and gate not in enabled:
                raise InvalidRequest(
                    f"model {config.name!r} does not accept {gate}: add it to "
                    f"diffusers.enable_parameters in {config.where} "
                    f"(now {config.diffusers.enable_parameters!r})",
                    param=gate,
                )

    # -- loading ----------------------------------------------------------------------------

    def load(self, config: ModelConfig, progress: ProgressCallback) -> None:
        import torch

        options = _parse_options(config)
        self.config = config
        self.device = _choose_device(self.settings, config)
        self.dtype = _choose_dtype(self.device, config, options)
        threads = self.settings.threads or config.threads or physical_cores()
        torch.set_num_threads(threads)
        source = model_source(config)
        pipeline_type = config.diffusers.pipeline_type or DEFAULT_PIPELINE
        if config.diffusers.scheduler_type:
            schedulers.lookup(config.diffusers.scheduler_type, param="scheduler_type")
        _quiet_library_progress()
        try:
            pipe = self._load_pipeline(pipeline_type, source, options)
        except LocalimgError:
            raise
        except ImportError as exc:
            raise BackendNotInstalled(f"{config.where}: {exc}") from None
        except Exception as exc:
            if source.kind == "hub":
                raise _hub_error(source, exc) from None
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            hint = ""
            if source.kind == "file" and not options.config:
                hint = (
                    " (a single file needs its model family's configs: from the hub once, or "
                    'offline from options: ["config:/path/to/a/diffusers/folder"])'
                )
            raise ModelUnavailable(f"cannot load {source.location}: {first}{hint}") from None
        if getattr(pipe, "safety_checker", None) is not None:
            pipe.safety_checker = None
        _bridge_clip_text_model(pipe)
        self._apply_loras(pipe, config)
        self._place(pipe, options)
        if hasattr(pipe, "set_progress_bar_config"):
            pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe
        self._call_params = dict(inspect.signature(pipe.__call__).parameters)
        self._kind = tasks.pipeline_kind(pipe)
        self._siblings = {}
        scheduler = getattr(pipe, "scheduler", None)
        self._default_scheduler = scheduler
        self._scheduler_config = scheduler.config if scheduler is not None else None
        if config.diffusers.scheduler_type and scheduler is not None:
            self._default_scheduler = schedulers.build(
                config.diffusers.scheduler_type, self._scheduler_config
            )
        self._defaults = self._compute_defaults(pipe)
        extras = {
            k: v
            for k, v in config.parsed_options().items()
            if k not in OPTION_KEYS and k not in OPTION_ALIASES
        }
        self._check_extra(extras, where=f"{config.where}: options")

    def _load_pipeline(
        self, pipeline_type: str, source: ModelSource, options: DiffusersOptions
    ) -> Any:
        import diffusers

        common: dict[str, Any] = {_dtype_key(): self.dtype}
        if options.revision:
            common["revision"] = options.revision
        if pipeline_type == "FluxTransformer2DModel":
            return self._load_flux_transformer(source, options, common)
        if source.kind == "file":
            name = PIPELINE_TYPES.get(pipeline_type, pipeline_type)
            if pipeline_type in AUTO_TYPES:
                name = _single_file_class(source.path)
            cls = _pipeline_class(name)
            if not hasattr(cls, "from_single_file"):
                raise ConfigError(
                    f"pipeline_type {pipeline_type!r} cannot load a single file; use a diffusers "
                    "folder or hub id, or a pipeline type such as StableDiffusionPipeline"
                )
            if options.config:
                local = self.config.resolve_path(options.config) if self.config else None
                common["config"] = str(local) if local and local.exists() else options.config
            if options.original_config:
                common["original_config"] = options.original_config
            return cls.from_single_file(str(source.path), **common)
        index = _model_index(source, options.revision)
        if "safety_checker" in index:
            common["safety_checker"] = None
            common["requires_safety_checker"] = False
        if options.variant:
            common["variant"] = options.variant
        own = index.get("_class_name")
        if pipeline_type == DEFAULT_PIPELINE and own in TEXT_TO_IMAGE_CLASSES:
            # What AutoPipelineForText2Image would pick, without importing every pipeline
            # diffusers has (auto_pipeline.py costs ~9 s of imports on a 2-core CPU).
            cls = _pipeline_class(str(own))
        elif pipeline_type in AUTO_TYPES and "AutoPipelineForText2Image" not in dir(diffusers):
            cls = diffusers.DiffusionPipeline  # a diffusers without AutoPipelines
            # (`dir`, not `hasattr`: asking the lazy module for the attribute imports it)
        else:
            cls = _pipeline_class(pipeline_type)
        return cls.from_pretrained(source.location, **common)

    def _load_flux_transformer(
        self, source: ModelSource, options: DiffusersOptions, common: dict[str, Any]
    ) -> Any:
        import diffusers

        if source.kind == "file":
            transformer = diffusers.FluxTransformer2DModel.from_single_file(
                str(source.path), **{_dtype_key(): self.dtype}
            )
        else:
            transformer = diffusers.FluxTransformer2DModel.from_pretrained(
                source.location, subfolder="transformer", **{_dtype_key(): self.dtype}
            )
        base = options.base_model or FLUX_BASE_REPO
        return diffusers.FluxPipeline.from_pretrained(base, transformer=transformer, **common)

    def _apply_loras(self, pipe: Any, config: ModelConfig) -> None:
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
                    pipe.load_lora_weights(
                        str(path.parent), weight_name=path.name, adapter_name=name
                    )
            except ImportError as exc:
                raise BackendNotInstalled(f"LoRA needs peft: pip install peft ({exc})") from None
            except (ValueError, KeyError, RuntimeError, OSError) as exc:
                raise ConfigError(f"{config.where}: cannot load LoRA {file!r}: {exc}") from None
            names.append(name)
            scales.append(scale)
        pipe.set_adapters(names, adapter_weights=scales)

    def _place(self, pipe: Any, options: DiffusersOptions) -> None:
        if options.cpu_offload:
            if not self.device.startswith("cuda"):
                raise ConfigError("options: cpu_offload needs a CUDA GPU")
            pipe.enable_model_cpu_offload()
        else:
            pipe.to(self.device)
        if options.attention_slicing:
            pipe.enable_attention_slicing()
        vae = getattr(pipe, "vae", None)
        if options.vae_tiling:
            if vae is None or not hasattr(vae, "enable_tiling"):
                raise ConfigError("options: vae_tiling is not supported by this pipeline's VAE")
            vae.enable_tiling()
        if options.vae_slicing:
            if vae is None or not hasattr(vae, "enable_slicing"):
                raise ConfigError("options: vae_slicing is not supported by this pipeline's VAE")
            vae.enable_slicing()
        self._grouping = make_linear_layers_batch_invariant(pipe)  # before compile traces it
        self._speed_up(pipe, options)

    def _speed_up(self, pipe: Any, options: DiffusersOptions) -> None:
        """channels_last and torch.compile (options), each applied or refused, never ignored."""
        import torch

        denoiser_name = "unet" if getattr(pipe, "unet", None) is not None else "transformer"
        denoiser = getattr(pipe, denoiser_name, None)
        if options.channels_last:
            convolutional = [
                m
                for m in (getattr(pipe, "unet", None), getattr(pipe, "vae", None))
                if isinstance(m, torch.nn.Module)
            ]
            if not convolutional:
                raise ConfigError("options: channels_last needs a pipeline with a UNet or a VAE")
            for module in convolutional:
                module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self._compiled = False
        if options.compile:
            if not isinstance(denoiser, torch.nn.Module):
                raise ConfigError("options: compile needs a pipeline with a UNet or transformer")
            if options.cpu_offload:
                raise ConfigError("options: compile cannot be combined with cpu_offload")
            if self.device == "cpu" and not _cpp_compiler():
                raise ConfigError(
                    "options: compile on the CPU needs a C++ compiler (g++ or clang++, or $CXX)"
                )
            setattr(pipe, denoiser_name, torch.compile(denoiser))
            self._compiled = True

    def _compute_defaults(self, pipe: Any) -> BackendDefaults:
        scale = int(getattr(pipe, "vae_scale_factor", 8) or 8)
        sample = getattr(pipe, "default_sample_size", None)
        if sample is None:
            denoiser = _denoiser(pipe)
            sample = getattr(getattr(denoiser, "config", None), "sample_size", None)
        side = int(sample) * scale if isinstance(sample, int) else 512
        guidance = self._call_params.get("guidance_scale") or self._call_params.get(
            "max_guidance_scale"  # video diffusion: guidance ramps up to this value
        )
        cfg = (
            guidance.default
            if guidance is not None and isinstance(guidance.default, int | float)
            else 7.5
        )
        multiple = max(8, scale * (2 if getattr(pipe, "transformer", None) is not None else 1))
        return BackendDefaults(
            width=side,
            height=side,
            steps=DEFAULT_STEPS,
            cfg_scale=float(cfg),
            size_multiple=multiple,
        )

    @property
    def defaults(self) -> BackendDefaults:
        return self._defaults

    # -- generation -------------------------------------------------------------------------

    def _pipe_for(self, request: ImageRequest) -> tuple[Any, str]:
        """The pipeline that serves the request's task (see tasks.py) and that task."""
        mode = tasks.choose_mode(request, self._kind)
        if tasks.serves(mode, self._kind):
            return self.pipe, mode
        key = tasks.DERIVED.get(mode, mode)
        if key not in self._siblings:
            self._siblings[key] = tasks.derive(self.pipe, mode, self._kind)
        return self._siblings[key], mode

    def _check_extra(
        self, extra: dict[str, Any], where: str, pipe: Any = None, params: Any = None
    ) -> None:
        pipe = pipe if pipe is not None else self.pipe
        params = params if params is not None else self._call_params
        allowed = sorted(k for k in params if k not in RESERVED_CALL_ARGS)
        for key in extra:
            if key in RESERVED_CALL_ARGS:
                raise InvalidRequest(
                    f"{where}: {key!r} is set by localimg and cannot be given", param=key
                )
            if key not in params:
                raise InvalidRequest(
                    f"{where}: {type(pipe).__name__} does not accept {key!r}; it accepts: "
                    + ", ".join(allowed),
                    param=key,
                )

    def _call_kwargs(
        self, request: ImageRequest, pipe: Any = None, params: Any = None
    ) -> dict[str, Any]:
        pipe = pipe if pipe is not None else self.pipe
        params = params if params is not None else self._call_params
        pipeline = type(pipe).__name__
        assert request.width and request.height and request.steps
        multiple = self._defaults.size_multiple
        if request.width % multiple or request.height % multiple:
            raise InvalidRequest(
                f"size {request.width}x{request.height}: this model needs both sides to be "
                f"multiples of {multiple}",
                param="size",
            )
        kwargs: dict[str, Any] = {"num_inference_steps": request.steps}
        if "prompt" in params:
            kwargs["prompt"] = request.prompt
        elif request.prompt:
            raise InvalidRequest(f"{pipeline} takes no text prompt", param="prompt")
        wanted: dict[str, Any] = {
            "negative_prompt": request.negative_prompt,
            "clip_skip": request.clip_skip or None,
            "image": request.init_image,
            "mask_image": request.mask,
            "strength": request.strength,
        }
        for key, value in wanted.items():
            if value is None:
                continue
            if key not in params:
                raise InvalidRequest(f"{pipeline} does not support {key}", param=key)
            kwargs[key] = value
        for key, value in (("width", request.width), ("height", request.height)):
            if key in params:
                kwargs[key] = value
        if "guidance_scale" in params:
            kwargs["guidance_scale"] = request.cfg_scale
        elif "max_guidance_scale" in params:
            kwargs["max_guidance_scale"] = request.cfg_scale
        kwargs.update(self._video_kwargs(request, pipeline, params))
        self._check_denoising_steps(request, params)
        self._check_extra(dict(request.extra), where="extra parameters", pipe=pipe, params=params)
        kwargs.update(request.extra)
        return kwargs

    @staticmethod
    def _check_denoising_steps(request: ImageRequest, params: Any) -> None:
        """img2img runs steps x strength steps; zero would fail deep inside diffusers."""
        if "strength" not in params or request.init_image is None or not request.steps:
            return
        strength = request.strength if request.strength is not None else params["strength"].default
        if isinstance(strength, int | float) and int(request.steps * strength) < 1:
            raise InvalidRequest(
                f"{request.steps} steps at strength {strength:g} leave no denoising step "
                "(steps x strength must be at least 1): raise steps or strength",
                param="steps",
            )

    @staticmethod
    def _video_kwargs(request: ImageRequest, pipeline: str, params: Any) -> dict[str, Any]:
        """num_frames and fps for a video pipeline; refused by an image pipeline."""
        video = "num_frames" in params
        kwargs: dict[str, Any] = {}
        if video:
            kwargs["output_type"] = "pil"
            if request.n > 1:
                raise InvalidRequest(
                    f"{pipeline} makes one video per request; n must be 1", param="n"
                )
        for key, value in (("num_frames", request.num_frames), ("fps", request.fps)):
            if value is None:
                continue
            if not video:
                raise InvalidRequest(
                    f"{pipeline} makes images; {key} applies to video models only", param=key
                )
            if key in params:  # SVD conditions on fps (an integer); others only encode with it
                kwargs[key] = round(value)
        return kwargs

    def generate(
        self, request: ImageRequest, progress: ProgressCallback, cancel: threading.Event
    ) -> ImageResult:
        import torch

        if self.pipe is None:
            raise BackendError("the model is not loaded")
        pipe, _mode = self._pipe_for(request)
        # The loaded pipeline's signature was read at load time; a sibling's on first use.
        params = self._call_params if pipe is self.pipe else tasks.call_params(pipe)
        kwargs = self._call_kwargs(request, pipe, params)
        label = self._set_scheduler(request.scheduler, pipe)
        steps = request.steps or 1
        if getattr(pipe, "scheduler", None) is not None:
            schedulers.check_steps(pipe.scheduler, steps, label)
        total = steps * request.n
        images: list[Any] = []
        for index, seed in enumerate(request.seeds):

            def on_step(
                p: Any, step: int, _t: Any, tensors: dict[str, Any], index: int = index
            ) -> dict[str, Any]:
                progress(
                    ProgressEvent(
                        "step", step=index * steps + step + 1, total=total, image_index=index
                    )
                )
                if cancel.is_set():
                    p._interrupt = True
                return tensors

            call = dict(kwargs)
            call["generator"] = torch.Generator("cpu").manual_seed(seed)
            if "callback_on_step_end" in params:
                call["callback_on_step_end"] = on_step
            elif "callback" in params:  # older pipelines (text-to-video): stop by raising
                call["callback"] = tasks.legacy_callback(pipe, on_step, cancel)
                call["callback_steps"] = 1
            oom = (
                f"out of memory at {request.width}x{request.height}: try a smaller size, "
                "f16, or options vae_tiling / attention_slicing / cpu_offload"
            )
            try:
                with _pipeline_errors(pipe, oom), torch.inference_mode():
                    output = pipe(**call)
            except tasks.Interrupted:
                raise Cancelled("the request was cancelled") from None
            if cancel.is_set():
                raise Cancelled("the request was cancelled")
            progress(
                ProgressEvent("decode", step=(index + 1) * steps, total=total, image_index=index)
            )
            frames = tasks.first_video(output)
            images.extend(frames if frames is not None else output.images)
        fps = None
        if "num_frames" in params:
            fps = request.fps or tasks.default_fps(params)
        return ImageResult(images=images, seeds=request.seeds, scheduler=label, fps=fps)

    def generate_batch(
        self,
        requests: list[ImageRequest],
        progress: list[ProgressCallback],
        cancel: threading.Event,
    ) -> list[ImageResult]:
        """Several merged text-to-image requests in one pipeline call (see batching.py).

        Every image gets its own prompt, negative prompt and seeded generator, as it would alone;
        the results are split back per request in order.
        """
        import torch

        if self.pipe is None:
            raise BackendError("the model is not loaded")
        first = requests[0]
        pipe, mode = self._pipe_for(first)
        params = tasks.call_params(pipe)
        if mode != "txt2img" or "num_frames" in params or "prompt" not in params:
            raise InvalidRequest("only text-to-image requests can be batched")
        kwargs = self._call_kwargs(first, pipe, params)
        label = self._set_scheduler(first.scheduler, pipe)
        steps = first.steps or 1
        if getattr(pipe, "scheduler", None) is not None:
            schedulers.check_steps(pipe.scheduler, steps, label)
        prompts: list[str] = []
        negatives: list[str] = []
        generators = []
        for request in requests:
            for seed in request.seeds:
                prompts.append(request.prompt)
                negatives.append(request.negative_prompt or "")
                generators.append(torch.Generator("cpu").manual_seed(seed))
        kwargs["prompt"] = prompts
        if any(r.negative_prompt is not None for r in requests):
            kwargs["negative_prompt"] = negatives
        kwargs["generator"] = generators

        def on_step(p: Any, step: int, _t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            for emit in progress:
                emit(ProgressEvent("step", step=step + 1, total=steps))
            if cancel.is_set():
                p._interrupt = True
            return tensors

        if "callback_on_step_end" in params:
            kwargs["callback_on_step_end"] = on_step
        oom = (
            f"out of memory for a batch of {len(prompts)} at {first.width}x{first.height}: "
            "lower --max-batch"
        )
        grouped = self._grouping.images_per_call(pipe, len(prompts))
        with _pipeline_errors(pipe, oom), torch.inference_mode(), grouped:
            output = pipe(**kwargs)
        if cancel.is_set():
            raise Cancelled("the request was cancelled")
        results = []
        images = list(output.images)
        for request, emit in zip(requests, progress, strict=True):
            count = len(request.seeds)
            mine, images = images[:count], images[count:]
            emit(ProgressEvent("decode", step=steps, total=steps))
            results.append(ImageResult(images=mine, seeds=request.seeds, scheduler=label))
        return results

    def _set_scheduler(self, name: str | None, pipe: Any = None) -> str:
        """Install the request's scheduler (or the model's), return its display name."""
        pipe = pipe if pipe is not None else self.pipe
        if self._scheduler_config is None:
            if name:
                raise InvalidRequest("this pipeline has no scheduler to choose", param="scheduler")
            return ""
        if name:
            pipe.scheduler = schedulers.build(name, self._scheduler_config)
            return schedulers.lookup(name).label
        pipe.scheduler = self._default_scheduler
        if self.config and self.config.diffusers.scheduler_type:
            return schedulers.lookup(self.config.diffusers.scheduler_type).label
        return type(self._default_scheduler).__name__

    def unload(self) -> None:
        """Drop the pipeline; the slot then collects the garbage, empties CUDA's cache and trims
        the heap (memory.release_free_memory), in that order, so the cache is emptied after the
        tensors are really freed."""
        self._siblings = {}
        self.pipe = None

    def describe(self) -> dict[str, str]:
        return {
            "device": self.device,
            "dtype": str(self.dtype).removeprefix("torch."),
            "pipeline": type(self.pipe).__name__ if self.pipe is not None else "",
            "attention": _attention_kind(self.pipe) if self.pipe is not None else "",
            "compiled": "yes" if self._compiled else "no",
        }
