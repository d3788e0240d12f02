"""The diffusers backend: Hugging Face pipelines on torch (CUDA, MPS or CPU).

Loading is in load/ (loading.py: the pipeline; precision.py: device and dtype; hub.py: the hub),
the YAML's options in options.py, placement and speed options in speed.py, request → call
keywords in pipeline/call_args.py (the model families' own rules in families.py), the scheduler
of each call in sampling/, step caches in cache/, previews and the tiny VAE in decode/; this
module is the backend the engine drives. torch and diffusers are imported only inside methods, so
importing this module (and `localimg --help`) stays fast.
"""

from __future__ import annotations

import inspect
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, ClassVar

from localimg._util.hub_errors import first_line
from localimg._util.system import physical_cores
from localimg.backends.base import BackendDefaults, Capabilities, ProgressCallback, RuntimeSettings
from localimg.backends.diffusers import families
from localimg.backends.diffusers.cache import cache_setup
from localimg.backends.diffusers.decode import tiny_vae
from localimg.backends.diffusers.decode.previews import StepPreviews
from localimg.backends.diffusers.load import embeddings, gguf_files, lora_adapters, quantize
from localimg.backends.diffusers.load.hub import hub_error
from localimg.backends.diffusers.load.library import (
    bridge_clip_text_model,
    quiet_library_progress,
)
from localimg.backends.diffusers.load.loading import DEFAULT_PIPELINE, load_pipeline
from localimg.backends.diffusers.load.precision import (
    choose_dtype,
    plan,
    precision_report,
    weight_itemsize,
)
from localimg.backends.diffusers.options import (
    OPTION_KEYS,
    DiffusersOptions,
    check_enabled_parameters,
    parse_options,
)
from localimg.backends.diffusers.pipeline import call_args, controlnet, tasks
from localimg.backends.diffusers.pipeline.batch_invariance import BatchGrouping
from localimg.backends.diffusers.pipeline.hires import LatentHires
from localimg.backends.diffusers.pipeline.run import run_call
from localimg.backends.diffusers.sampling import schedulers
from localimg.backends.diffusers.sampling.sampling import Sampling
from localimg.backends.diffusers.speed import attention_kind, denoiser_of, place, speed_up
from localimg.config import ModelConfig, model_source
from localimg.config.options import OPTION_ALIASES, is_cache_key
from localimg.errors import (
    BackendError,
    BackendNotInstalled,
    InvalidRequest,
    LocalimgError,
    ModelUnavailable,
)
from localimg.requests import ImageRequest, ImageResult, ProgressEvent

log = logging.getLogger(__name__)

DEFAULT_STEPS = 30  # LocalAI's documented default


@dataclass(frozen=True)
class Prepared:
    """What generate and generate_batch prepare alike before their pipeline call."""

    pipe: Any  # the loaded pipeline or the sibling that serves the request's task
    params: dict[str, inspect.Parameter]  # that pipeline's call signature
    kwargs: dict[str, Any]  # the call's keywords (call_args.py), without seeds or callbacks
    label: str  # the scheduler's label, for the result's metadata
    steps: int
    infotext: dict[str, str] = field(default_factory=dict)  # ControlNet units (A1111's fields)


class DiffusersBackend(LatentHires):
    """One loaded diffusers pipeline."""

    name: ClassVar[str] = "diffusers"
    requirements: ClassVar[tuple[str, ...]] = ("torch", "diffusers", "transformers")
    extra: ClassVar[str] = "diffusers"
    option_keys: ClassVar[frozenset[str]] = OPTION_KEYS
    # generate_batch runs several merged text-to-image requests in one pipeline call; the step
    # caches are diffusers' hooks (cache/caching.py), each where the loaded pipeline can use it
    capabilities: ClassVar[Capabilities] = Capabilities(
        batch=True, cache_methods=cache_setup.METHODS, latent_hires=True
    )

    def __init__(self, settings: RuntimeSettings) -> None:
        self.settings = settings
        self.pipe: Any = None
        self.config: ModelConfig | None = None
        self.device = "cpu"
        self.dtype: Any = None
        self._call_params: dict[str, inspect.Parameter] = {}
        self._kind = "txt2img"  # what the loaded pipeline does (tasks.pipeline_kind)
        self._siblings: dict[str, Any] = {}  # other tasks over the same modules (from_pipe)
        self._sampling = Sampling(None, None, "")
        self._family: families.Family | None = None
        self._options = DiffusersOptions()
        self._defaults = BackendDefaults(width=512, height=512, steps=DEFAULT_STEPS, cfg_scale=7.5)
        self._compiled = False
        self._decoder = "full"  # or where the tiny autoencoder came from (decode/tiny_vae.py)
        self._grouping = BatchGrouping()  # replaced on load (pipeline/batch_invariance.py)
        self._caches = cache_setup.Caches()  # which step caches each pipeline can use
        self.prompt_loras = lora_adapters.PromptLoras()  # <lora:name:weight> tags' adapters
        self.controls = controlnet.ControlPipelines()  # ControlNets and their pipelines

    weight_itemsize = staticmethod(weight_itemsize)
    precision = staticmethod(precision_report)

    # -- requests ---------------------------------------------------------------------------

    @classmethod
    def check_request(cls, request: ImageRequest, config: ModelConfig) -> None:
        """Refuse before queueing: unknown scheduler, gated parameters, sizes not multiple of 8."""
        if request.scheduler is not None:
            schedulers.lookup(request.scheduler)
        cache_setup.check_request(request, config)
        lora_adapters.check_request(request, config)
        for side in ("width", "height"):
            value = getattr(request, side)
            if value is not None and value % 8:
                raise InvalidRequest(
                    f"{side} {value} is not a multiple of 8, which diffusers models need "
                    f"(try {value // 8 * 8 or 8} or {value // 8 * 8 + 8})",
                    param="size",
                )
        check_enabled_parameters(request, config)
        controlnet.check_request(request, config)

    # -- loading ----------------------------------------------------------------------------

    def load(self, config: ModelConfig, progress: ProgressCallback) -> None:
        import torch

        options = parse_options(config)
        self.config = config
        precision = plan(self.settings, config)
        self.device = precision.device
        self.dtype = choose_dtype(precision, config)
        threads = self.settings.threads or config.threads or physical_cores()
        torch.set_num_threads(threads)
        source = model_source(config)
        pipeline_type = config.diffusers.pipeline_type or DEFAULT_PIPELINE
        if config.diffusers.scheduler_type:
            schedulers.lookup(config.diffusers.scheduler_type, param="scheduler_type")
        self._options = options
        quantize.check(options, gguf_files.is_gguf(source), self.device)
        quiet_library_progress()
        try:
            pipe = load_pipeline(pipeline_type, source, options, self.dtype, config)
        except LocalimgError:
            raise
        except ImportError as exc:
            raise BackendNotInstalled(f"{config.where}: {exc}") from None
        except Exception as exc:
            if source.kind == "hub":
                raise hub_error(source, exc) from None
            first = first_line(exc)
            hint = ""
            if source.kind == "file" and not options.config:
                hint = (
                    " (a single file needs its model family's configs: from the hub once, or "
                    'offline from options: ["config:/path/to/a/diffusers/folder"])'
                )
            raise ModelUnavailable(f"cannot load {source.location}: {first}{hint}") from None
        if getattr(pipe, "safety_checker", None) is not None:
            pipe.safety_checker = None
        bridge_clip_text_model(pipe)
        self.prompt_loras = lora_adapters.PromptLoras.load(pipe, config)
        embeddings.load_embeddings(pipe, config)  # textual inversions of embeddings/
        self._decoder = tiny_vae.swap_in(pipe, options, config, self.dtype)
        self._grouping = place(pipe, options, self.device)
        quantize.quantize(pipe, options, self.dtype)  # after place: see load/quantize.py
        self._compiled = speed_up(pipe, options, self.device)
        if hasattr(pipe, "set_progress_bar_config"):
            pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe
        self._call_params = dict(inspect.signature(pipe.__call__).parameters)
        self._kind = tasks.pipeline_kind(pipe)
        self._siblings = {}
        self._family = families.family_of(pipe)
        try:
            self._sampling = Sampling(
                getattr(pipe, "scheduler", None),
                config.diffusers.scheduler_type,
                type(pipe).__name__,
            )
        except InvalidRequest as exc:
            raise InvalidRequest(
                f"{config.where}: scheduler_type: {exc.message}", param="scheduler_type"
            ) from None
        self._defaults = self._compute_defaults(pipe)
        extras = {
            k: v
            for k, v in config.parsed_options().items()
            # the step cache's options go to cache_setup, not to the pipeline
            if k not in OPTION_KEYS and k not in OPTION_ALIASES and not is_cache_key(k)
        }
        self._check_extra(extras, where=f"{config.where}: options")
        self._caches = cache_setup.Caches(self._compiled)
        self._caches.check_yaml(pipe, config)

    def _compute_defaults(self, pipe: Any) -> BackendDefaults:
        scale = int(getattr(pipe, "vae_scale_factor", 8) or 8)
        sample = getattr(pipe, "default_sample_size", None)
        if sample is None:
            denoiser = denoiser_of(pipe)
            sample = getattr(getattr(denoiser, "config", None), "sample_size", None)
        side = int(sample) * scale if isinstance(sample, int) else 512
        guidance = self._call_params.get("guidance_scale") or self._call_params.get(
            "max_guidance_scale"  # video diffusion: guidance ramps up to this value
        )
        cfg: float | None = (
            float(guidance.default)
            if guidance is not None and isinstance(guidance.default, int | float)
            else 7.5
        )
        multiple = max(8, scale * (2 if getattr(pipe, "transformer", None) is not None else 1))
        width = height = side
        family = self._family
        if family is not None:
            multiple = families.size_multiple(family, pipe)
            own = families.default_cfg(family, pipe, self._call_params)  # 0 too (Krea 2 turbo)
            cfg = None if family.cfg_schedule else (own if own is not None else cfg)
            width, height = family.default_size or (side, side)
        return BackendDefaults(
            width=width,
            height=height,
            steps=DEFAULT_STEPS,
            cfg_scale=cfg,
            size_multiple=multiple,
            reference_edits=bool(family is not None and family.references),
        )

    @property
    def defaults(self) -> BackendDefaults:
        return self._defaults

    # -- generation -------------------------------------------------------------------------

    def _pipe_for(self, request: ImageRequest) -> tuple[Any, str]:
        """The pipeline that serves the request's task (see pipeline/tasks.py) and that task."""
        family = self._family
        edit = families.choose_mode(family, request) if family is not None else None
        if edit is not None or (family is not None and family.references):
            return self.pipe, edit or "txt2img"  # the edit pipeline does both
        if family is None:
            families.refuse_references(type(self.pipe).__name__, request)
        mode = (
            "img2vid"
            if family is not None and families.video_from_image(family, self.pipe, request)
            else tasks.choose_mode(request, self._kind)
        )
        if tasks.serves(mode, self._kind):
            return self.pipe, mode
        key = tasks.DERIVED.get(mode, mode)
        if key not in self._siblings:
            self._siblings[key] = tasks.derive(self.pipe, mode, self._kind, family)
        return self._siblings[key], mode

    def _check_extra(self, extra: dict[str, Any], where: str) -> None:
        call_args.check_extra(extra, where, self.pipe, self._call_params)

    def _call_kwargs(self, request: ImageRequest, pipe: Any, params: Any) -> dict[str, Any]:
        generation = call_args.generation_settings(request, self._options)
        return call_args.call_kwargs(
            request, pipe, params, self._defaults.size_multiple, generation
        )

    def _prepare(self, request: ImageRequest, batch: bool = False) -> Prepared:
        """The pipeline, keywords and scheduler of a request (for a batch: of its first one)."""
        if self.pipe is None:
            raise BackendError("the model is not loaded")
        pipe, mode = self._pipe_for(request)
        if batch and request.controls:
            raise InvalidRequest("requests with ControlNet units cannot be batched")
        models = self.config.models_path if self.config is not None else None
        controlled = self.controls.prepare(self.pipe, mode, request, models)
        pipe = controlled.pipe if controlled is not None else pipe
        # The loaded pipeline's signature was read at load time; a sibling's on first use.
        params = self._call_params if pipe is self.pipe else tasks.call_params(pipe)
        if batch and (mode != "txt2img" or "num_frames" in params or "prompt" not in params):
            raise InvalidRequest("only text-to-image requests can be batched")
        kwargs = self._call_kwargs(request, pipe, params)
        kwargs.update(controlled.kwargs if controlled is not None else {})
        label = self._set_scheduler(request, pipe)
        steps = request.steps or 1
        if getattr(pipe, "scheduler", None) is not None:
            schedulers.check_steps(pipe.scheduler, steps, label)
        infotext = controlled.infotext if controlled is not None else {}
        return Prepared(pipe, params, kwargs, label, steps, infotext)

    @lora_adapters.with_prompt_loras
    def generate(
        self, request: ImageRequest, progress: ProgressCallback, cancel: threading.Event
    ) -> ImageResult:
        import torch

        if request.hires is not None:  # a latent one: a pixel upscaler's is the engine's
            return self.generate_hires(request, progress, cancel)
        prepared = self._prepare(request)
        pipe, params, steps = prepared.pipe, prepared.params, prepared.steps
        total = steps * request.n
        cache = self._caches.plan_for(pipe, request)
        images: list[Any] = []
        shows = StepPreviews(pipe, request.previews, steps, request.width or 0, request.height or 0)
        for index, seed in enumerate(request.seeds):

            def on_step(
                p: Any, step: int, _t: Any, tensors: dict[str, Any], index: int = index
            ) -> dict[str, Any]:
                done = tasks.steps_done(p, step, steps)
                preview = shows.at(index, done, tensors)
                progress(
                    ProgressEvent(
                        "step",
                        step=index * steps + done,
                        total=total,
                        image_index=index,
                        preview=preview,
                    )
                )
                if cancel.is_set():
                    p._interrupt = True
                return tensors

            call = dict(prepared.kwargs)
            call["generator"] = torch.Generator("cpu").manual_seed(seed)
            if "callback_on_step_end" in params:
                call["callback_on_step_end"] = on_step
            elif request.previews:
                raise InvalidRequest(
                    f"{type(pipe).__name__} has no step-end callback to make previews from; "
                    "ask for previews 0",
                    param="previews",
                )
            elif "callback" in params:  # older pipelines (text-to-video): stop by raising
                call["callback"] = tasks.legacy_callback(pipe, on_step, cancel)
                call["callback_steps"] = 1
            oom = (
                f"out of memory at {request.width}x{request.height}: try a smaller size, "
                "f16, or options vae_tiling / attention_slicing / cpu_offload"
            )
            output = run_call(pipe, call, oom, cancel, self._caches.applied(pipe, cache, request))
            progress(
                ProgressEvent("decode", step=(index + 1) * steps, total=total, image_index=index)
            )
            images.extend(tasks.output_images(output, request))
        fps = (request.fps or tasks.default_fps(params)) if "num_frames" in params else None
        seeds = tasks.image_seeds(request.seeds, len(images), fps is not None)
        result = ImageResult(images=images, seeds=seeds, scheduler=prepared.label, fps=fps)
        result.infotext.update(prepared.infotext)
        return call_args.with_ignored(result, request, pipe, params)

    @lora_adapters.with_prompt_loras_batch
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

        first = requests[0]
        prepared = self._prepare(first, batch=True)
        pipe, kwargs, steps = prepared.pipe, prepared.kwargs, prepared.steps
        prompts: list[str] = []
        negatives: list[str] = []
        generators = []
        for request in requests:
            for seed in request.seeds:
                prompts.append(request.prompt)
                negatives.append(request.negative_prompt or "")
                generators.append(torch.Generator("cpu").manual_seed(seed))
        call_args.set_batch_prompts(kwargs, prompts)  # plain text: weights never batch
        if any(r.negative_prompt is not None for r in requests):
            kwargs["negative_prompt"] = negatives
        kwargs["generator"] = generators

        def on_step(p: Any, step: int, _t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            for emit in progress:
                emit(ProgressEvent("step", step=tasks.steps_done(p, step, steps), total=steps))
            if cancel.is_set():
                p._interrupt = True
            return tensors

        if "callback_on_step_end" in prepared.params:
            kwargs["callback_on_step_end"] = on_step
        cache = self._caches.plan_for_batch(pipe, requests)
        oom = (
            f"out of memory for a batch of {len(prompts)} at {first.width}x{first.height}: "
            "lower --max-batch"
        )
        grouped = self._grouping.images_per_call(pipe, len(prompts))
        output = run_call(
            pipe, kwargs, oom, cancel, grouped, self._caches.applied(pipe, cache, first)
        )
        results = []
        images = list(output.images)
        for request, emit in zip(requests, progress, strict=True):
            count = len(request.seeds)
            mine, images = images[:count], images[count:]
            emit(ProgressEvent("decode", step=steps, total=steps))
            results.append(ImageResult(images=mine, seeds=request.seeds, scheduler=prepared.label))
        return results

    def _set_scheduler(self, request: ImageRequest, pipe: Any) -> str:
        """Install the request's scheduler (or the model's) with its flow shift; its label."""
        shift = call_args.generation_settings(request, self._options).get("shift")
        return self._sampling.install(pipe, request.scheduler, shift)

    def unload(self) -> None:
        """Drop the pipeline; the slot then collects the garbage, empties CUDA's cache and trims
        the heap (memory.release_free_memory), in that order, so the cache is emptied after the
        tensors are really freed."""
        self._siblings = {}
        self._caches = cache_setup.Caches()
        self.controls.clear()
        self.pipe = None

    def describe(self) -> dict[str, str]:
        return {
            "device": self.device,
            "dtype": str(self.dtype).removeprefix("torch."),
            "pipeline": type(self.pipe).__name__ if self.pipe is not None else "",
            "family": self._family.name if self._family is not None else "",
            "attention": attention_kind(self.pipe) if self.pipe is not None else "",
            "compiled": "yes" if self._compiled else "no",
            "cache": self._caches.describe(self.pipe),
            "weights": self._weights_kind(),
            "vae": "full" if self._decoder == "full" else f"taesd ({self._decoder})",
            "controlnets": self.controls.describe(),
        }

    def _weights_kind(self) -> str:
        """How the weights are stored: gguf, int8, fp8 or the dtype's name."""
        if self.config is not None and gguf_files.is_gguf(model_source(self.config)):
            return "gguf"
        return self._options.quantization or str(self.dtype).removeprefix("torch.")
