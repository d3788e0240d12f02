"""The stablediffusion-ggml backend: stable-diffusion.cpp through stable-diffusion-cpp-python.

It loads what stable-diffusion.cpp loads (SD1.x, SD2.x, SDXL, SD3/3.5, FLUX, ...) from .gguf,
.safetensors or .ckpt, with optional separate text encoders, VAE or TAESD files, all named in the
YAML's `options:` the way LocalAI's ggml backend names them. The native library's defects are
contained in `native.py`; sampler names in `samplers.py`; the YAML's options in `options.py`;
prompt LoRA tags in `lora.py`. The library is imported only inside methods, so `localimg --help`
never loads it.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, ClassVar

from localimg._util.system import physical_cores
from localimg.backends.base import (
    BackendDefaults,
    Capabilities,
    ProgressCallback,
    RuntimeSettings,
)
from localimg.backends.ggml import caching, calls, native, previews, samplers
from localimg.backends.ggml.families import Family, family_of, guidance_embed
from localimg.backends.ggml.lora import lora_dir, lora_tags
from localimg.backends.ggml.options import (
    FILE_OPTIONS,
    OPTION_KEYS,
    GgmlOptions,
    parse_options,
)
from localimg.backends.ggml.previews import StepPreviews, previews_to
from localimg.config import ModelConfig
from localimg.errors import (
    BackendError,
    Cancelled,
    ConfigError,
    InvalidRequest,
    ModelUnavailable,
)
from localimg.requests import ImageRequest, ImageResult, ProgressEvent

log = logging.getLogger(__name__)

DEFAULT_STEPS = 20  # stable-diffusion.cpp's own default
# Request modes this backend serves; which of them a model does depends on its family
# (families.py, calls.py): images, reference edits (FLUX.2, Kontext, Qwen-Image-Edit), Wan video.
MODES = (None, "txt2img", "img2img", "inpaint", "edit", "txt2vid", "img2vid")
# Keys a request's `extra` may carry: per-generation settings of this backend.
EXTRA_KEYS = frozenset({"sampler", "guidance", "eta"})


class GgmlBackend:
    """One model loaded in stable-diffusion.cpp."""

    name: ClassVar[str] = "stablediffusion-ggml"
    requirements: ClassVar[tuple[str, ...]] = ("stable_diffusion_cpp",)
    extra: ClassVar[str] = "ggml"
    option_keys: ClassVar[frozenset[str]] = OPTION_KEYS
    # No batching: one native context runs one image (or video) at a time under NATIVE_LOCK.
    # What each loaded model makes (images, reference edits, Wan videos) is per family and is
    # checked at generation time (families.py, calls.py), since the family is known once loaded.
    capabilities: ClassVar[Capabilities] = Capabilities(batch=False, cache_methods=caching.METHODS)

    def __init__(self, settings: RuntimeSettings) -> None:
        self.settings = settings
        self.model: Any = None
        self.config: ModelConfig | None = None
        self.options = GgmlOptions()
        self.family = ""
        self.traits: Family = family_of("", [])
        self.threads = 1
        self.yaml_loras: list[tuple[Path, float]] = []
        self._sd: Any = None
        self._defaults = BackendDefaults(
            width=512, height=512, steps=DEFAULT_STEPS, cfg_scale=7.0, size_multiple=64
        )

    # -- requests ---------------------------------------------------------------------------

    @classmethod
    def check_request(cls, request: ImageRequest, config: ModelConfig) -> None:
        """Refuse before queueing what stable-diffusion.cpp cannot do or would silently change."""
        options = parse_options(config)
        if request.mode not in MODES:
            raise InvalidRequest(
                f"the stablediffusion-ggml backend does not do {request.mode}; it does "
                "txt2img, img2img, inpaint, edit (reference images) and, with Wan models, "
                "txt2vid and img2vid",
                param="mode",
            )
        if request.strength is not None and request.init_image is None:
            raise InvalidRequest("strength needs an input image (img2img)", param="strength")
        if request.scheduler is not None and request.scheduler != options.scheduler:
            samplers.resolve(request.scheduler)
        for side in ("width", "height"):
            value = getattr(request, side)
            if value is not None and value % 8:
                raise InvalidRequest(
                    f"{side} {value} is not a multiple of 8 (stable-diffusion.cpp models take "
                    "multiples of 64 for SD1/SD2/SDXL, 8 for FLUX.1/SD3/Qwen-Image/Z-Image, "
                    "16 for FLUX.2 and Wan)",
                    param="size",
                )
        cls._check_extra(request.extra)
        caching.check_request_cache(request.cache, request.cache_options, config)
        lora_tags(request.prompt, lora_dir(config, options))

    @staticmethod
    def _check_extra(extra: Any) -> None:
        for key, value in dict(extra).items():
            if key not in EXTRA_KEYS:
                raise InvalidRequest(
                    f"stablediffusion-ggml does not take {key!r}; it takes: "
                    + ", ".join(sorted(EXTRA_KEYS)),
                    param=key,
                )
            if key == "sampler":
                samplers.resolve(str(value), param="sampler")
            elif not isinstance(value, int | float) or isinstance(value, bool):
                raise InvalidRequest(f"{key} must be a number, got {value!r}", param=key)

    # -- loading ----------------------------------------------------------------------------

    @classmethod
    def weight_files(cls, config: ModelConfig) -> list[Path]:
        """Every weight file the YAML names (the model and each *_path option) that exists: what
        a memory estimate must count for a ggml model, whose text encoders are separate files."""
        options = parse_options(config)
        names = [config.model] if config.model else []
        names += [getattr(options, key) for key in FILE_OPTIONS if getattr(options, key)]
        paths = [config.resolve_path(name) for name in names]
        return [path for path in paths if path.is_file()]

    def _file(self, config: ModelConfig, key: str, value: str) -> str:
        path = config.resolve_path(value)
        if not path.is_file():
            raise ModelUnavailable(f"{config.where}: {key}: file {value!r} not found ({path})")
        return str(path)

    def _check_device(self) -> None:
        device = self.settings.device
        if device in (None, "", "auto"):
            return
        raise ConfigError(
            f"device {device!r}: stable-diffusion.cpp runs on the backend it was built for "
            "(CPU, or CUDA/Metal/Vulkan through CMAKE_ARGS when installing); use --device auto"
        )

    def load(self, config: ModelConfig, progress: ProgressCallback) -> None:
        self._check_device()
        options = parse_options(config)
        if not config.model:
            raise ConfigError(f"{config.where}: parameters.model is missing (a .gguf/.safetensors)")
        model_file = self._file(config, "parameters.model", config.model)
        files = {
            key: self._file(config, key, getattr(options, key))
            for key in FILE_OPTIONS
            if getattr(options, key)
        }
        folder = lora_dir(config, options)
        if options.lora_dir and not folder.is_dir():
            raise ModelUnavailable(f"{config.where}: lora_dir {str(folder)!r} is not a folder")
        self.yaml_loras = []
        for file, scale in config.loras():
            path = config.resolve_path(file)
            if not path.is_file():
                raise ModelUnavailable(f"{config.where}: LoRA file {file!r} not found ({path})")
            self.yaml_loras.append((path, scale))
        if config.f16 and not options.wtype:
            log.warning(
                "%s: f16 does not change a ggml model (its weights keep the file's types); "
                "set options wtype:f16 to convert them on load",
                config.where,
            )
        self.threads = (
            self.settings.threads or options.threads or config.threads or physical_cores()
        )
        sd = native.install()
        cls = native.leak_free_class(sd)
        kwargs: dict[str, Any] = {
            ("diffusion_model_path" if options.diffusion_model else "model_path"): model_file,
            **files,
            "lora_model_dir": str(folder),
            "n_threads": self.threads,
            "wtype": options.wtype or "default",
            "keep_clip_on_cpu": options.keep_clip_on_cpu,
            "keep_vae_on_cpu": options.keep_vae_on_cpu,
            "diffusion_flash_attn": options.diffusion_flash_attn,
            "flash_attn": options.flash_attn,
            "offload_params_to_cpu": options.offload_params_to_cpu,
            # vae:full with a TAESD: the full VAE decodes and the TAESD only makes previews.
            "tae_preview_only": options.vae == "full" and bool(options.taesd_path),
            "verbose": True,  # never False: it redirects the whole process's stdout/stderr
        }
        progress(ProgressEvent("load", message=f"loading {Path(model_file).name}"))
        begin = time.monotonic()
        with native.NATIVE_LOCK, native.capturing() as lines:
            try:
                with native.stdout_to_stderr():
                    model = cls(**kwargs)
            except (ValueError, OSError) as exc:
                raise ModelUnavailable(f"{config.where}: cannot load {model_file}: {exc}") from None
            finally:
                native.quiet_wrapper()
                native.reset_progress(sd)
            if not native.context_ok(model):
                native.discard_failed(model)
                errors = [text for level, text in lines if level >= 2]
                reason = errors[-1] if errors else "stable-diffusion.cpp could not load it"
                raise ModelUnavailable(
                    f"{config.where}: cannot load {model_file} (is it a complete Stable "
                    f"Diffusion / FLUX model file?): {reason}"
                )
        texts = [text for _, text in lines]
        version = next((t.split("Version:", 1)[1].strip() for t in texts if "Version:" in t), "")
        traits = family_of(version, texts, options.reference_edit, guidance_embed(texts))
        try:
            calls.check_options(traits, options, config.where)
            caching.check_config_cache(config, traits)
        except ConfigError:
            native.close(model)
            raise
        self.family, self.traits = traits.name, traits
        log.info("loaded %s (%s) in %.2fs", model_file, traits.label, time.monotonic() - begin)
        self._sd, self.model, self.config, self.options = sd, model, config, options
        self._defaults = self._compute_defaults()

    def _compute_defaults(self) -> BackendDefaults:
        traits = self.traits
        return BackendDefaults(
            width=traits.width or traits.side,
            height=traits.height or traits.side,
            steps=DEFAULT_STEPS,
            cfg_scale=traits.cfg_scale,
            size_multiple=traits.size_multiple,
            reference_edits=traits.references > 0,
        )

    @property
    def defaults(self) -> BackendDefaults:
        return self._defaults

    # -- generation -------------------------------------------------------------------------

    def _sampling(self, request: ImageRequest) -> tuple[str | None, str | None]:
        """(sample method, schedule): request > YAML options > the library's defaults (None)."""
        method: str | None = None
        schedule = self.options.scheduler
        if self.options.sampler:
            chosen = samplers.resolve(self.options.sampler, param="sampler")
            method, schedule = chosen.method, schedule or chosen.schedule
        # The engine copies the YAML's `scheduler` option into request.scheduler: that one is the
        # schedule already applied; anything else the request names is resolved here.
        if request.scheduler is not None and request.scheduler != self.options.scheduler:
            chosen = samplers.resolve(request.scheduler)
            method = chosen.method or method
            schedule = chosen.schedule or schedule
        extra_sampler = request.extra.get("sampler")
        if extra_sampler is not None:
            chosen = samplers.resolve(str(extra_sampler), param="sampler")
            method = chosen.method or method
            schedule = chosen.schedule or schedule
        return method, schedule

    def _check_size(self, request: ImageRequest) -> None:
        multiple = self._defaults.size_multiple
        width, height = request.width or 0, request.height or 0
        if width % multiple or height % multiple:

            def near(v: int) -> str:
                low = max(multiple, v // multiple * multiple)
                return f"{low} or {low + multiple}" if low != v else str(v)

            raise InvalidRequest(
                f"size {width}x{height}: this {self.traits.label} model takes sides that are "
                f"multiples of {multiple} (width {near(width)}, height {near(height)}); "
                "stable-diffusion.cpp would otherwise return a different size",
                param="size",
            )

    def _prompt_with_loras(self, request: ImageRequest) -> str:
        """The prompt with every LoRA (YAML + tags) as a tag naming its absolute file."""
        assert self.config is not None
        prompt, tagged = lora_tags(request.prompt, lora_dir(self.config, self.options))
        tags = []
        for path, weight in [*self.yaml_loras, *tagged]:
            text = str(path)
            if ":" in text or ">" in text:
                raise InvalidRequest(
                    f"LoRA path {text!r} contains ':' or '>', which stable-diffusion-cpp-python "
                    "cannot pass on; move the file to a folder without them",
                    param="prompt",
                )
            tags.append(f"<lora:{text}:{weight:g}>")
        return " ".join([prompt, *tags]).strip()

    def _steps_run(self, request: ImageRequest, mode: str) -> int:
        """Denoising steps stable-diffusion.cpp runs: fewer for img2img with strength < 1."""
        steps = request.steps or DEFAULT_STEPS
        strength = request.strength if request.strength is not None else 0.75
        if mode == "edit" or request.init_image is None or strength >= 1:
            return steps
        t_enc = int(steps * strength)
        if t_enc == steps:
            t_enc -= 1
        return t_enc + 1

    def generate(
        self, request: ImageRequest, progress: ProgressCallback, cancel: threading.Event
    ) -> ImageResult:
        if self.model is None or self._sd is None:
            raise BackendError("the model is not loaded")
        self._check_extra(request.extra)
        self._check_size(request)
        mode = calls.resolve_mode(request, self.traits)
        calls.check(request, self.traits, self.options, mode)
        method, schedule = self._sampling(request)
        base = calls.common(
            request, self.options, self._prompt_with_loras(request), method, schedule
        )
        base.update(caching.call_keywords(request.cache, request.cache_options, self.traits))
        label = samplers.label(method or self._default_method(), schedule)
        if self.traits.video:
            if request.previews:
                raise InvalidRequest(
                    "previews (partial images) of a stable-diffusion.cpp video are not supported; "
                    "ask for 0 or use the diffusers backend",
                    param="previews",
                )
            return self._video(request, base, label, progress, cancel)
        call = calls.image_call(request, self.options, mode, base)
        per_image = self._steps_run(request, mode)
        total = per_image * request.n
        images: list[Any] = []
        for index, seed in enumerate(request.seeds):
            if cancel.is_set():
                raise Cancelled("the request was cancelled")
            shows = StepPreviews(request.previews, per_image, call["width"], call["height"])
            images.append(self._one(call, seed, index, per_image, total, progress, shows))
            progress(
                ProgressEvent(
                    "decode", step=(index + 1) * per_image, total=total, image_index=index
                )
            )
        return ImageResult(images=images, seeds=request.seeds, scheduler=label)

    def _high_noise_sampling(self) -> tuple[str | None, str | None]:
        """The Wan 2.2 high-noise expert's (sample method, schedule) from the YAML, if set."""
        method = schedule = None
        if self.options.high_noise_sampler:
            chosen = samplers.resolve(self.options.high_noise_sampler, param="high_noise_sampler")
            method, schedule = chosen.method, chosen.schedule
        return method, self.options.high_noise_scheduler or schedule

    def _video(
        self,
        request: ImageRequest,
        base: dict[str, Any],
        label: str,
        progress: ProgressCallback,
        cancel: threading.Event,
    ) -> ImageResult:
        """One Wan video: generate_video's frames, with the steps of both experts as progress."""
        call = calls.video_call(request, self.options, base, self._high_noise_sampling())
        steps = request.steps or DEFAULT_STEPS
        if self.options.high_noise_diffusion_model_path and self.options.high_noise_steps:
            steps += self.options.high_noise_steps  # else the experts split the steps
        phase = {"offset": 0, "steps": 0, "last": 0}

        def on_step(step: int, of: int) -> None:
            # Each expert reports its own steps from 1; tile and loader reports are skipped.
            if not 0 < step <= of:
                return
            if of != phase["steps"] or step <= phase["last"]:
                if step != 1:
                    return
                phase["offset"] += phase["steps"] if phase["last"] else 0
                phase["steps"] = of
            phase["last"] = step
            done = phase["offset"] + step
            if done <= steps:
                progress(ProgressEvent("step", step=done, total=steps))

        if cancel.is_set():
            raise Cancelled("the request was cancelled")
        seed = request.seeds[0]
        output = self._native_call(
            lambda: self.model.generate_video(seed=seed, **call), on_step, "frames"
        )
        frames = [plain_image(frame) for frame in output]
        progress(ProgressEvent("decode", step=steps, total=steps))
        fps = request.fps or self.traits.fps
        return ImageResult(images=frames, seeds=[seed], scheduler=label, fps=fps)

    def _one(
        self,
        call: dict[str, Any],
        seed: int,
        index: int,
        per_image: int,
        total: int,
        progress: ProgressCallback,
        shows: StepPreviews,
    ) -> Any:
        last = [0]

        def on_step(step: int, steps: int) -> None:
            # The same callback reports tensor loading (LoRA files) and VAE tiles; only the
            # sampler's steps have the step count asked for, and they only go forward.
            if steps != per_image or not 0 < step <= steps or step <= last[0]:
                return
            last[0] = step
            progress(
                ProgressEvent(
                    "step",
                    step=index * per_image + step,
                    total=total,
                    image_index=index,
                    preview=shows.take(step),
                )
            )

        method = previews.preview_method(self.options.taesd_path, len(shows.wanted) >= per_image)
        output = self._native_call(
            lambda: self.model.generate_image(seed=seed, **call),
            on_step,
            "image",
            previews_to(self._sd, shows.handler, method),
        )
        return plain_image(output[0])

    def _native_call(
        self,
        run: Callable[[], list[Any]],
        on_step: Callable[..., None],
        what: str,
        *contexts: AbstractContextManager[Any],
    ) -> list[Any]:
        """One library call under the native lock, its progress (and preview) callbacks set."""
        with native.NATIVE_LOCK, native.progress_to(on_step), contextlib.ExitStack() as stack:
            for context in contexts:
                stack.enter_context(context)
            try:
                output = run()
            except (ValueError, RuntimeError) as exc:
                raise BackendError(f"stable-diffusion.cpp failed: {exc}") from None
            finally:
                native.reset_progress(self._sd)
        if not output:
            raise BackendError(f"stable-diffusion.cpp returned no {what} (see the log)")
        return list(output)

    def _default_method(self) -> str:
        value = int(self._sd.sd_get_default_sample_method(self.model.model))
        names = {int(v): k for k, v in _sample_method_map(self._sd).items() if v is not None}
        return names.get(value, "default")

    def unload(self) -> None:
        model, self.model = self.model, None
        if model is not None:
            native.close(model)
        del model
        gc.collect()

    def describe(self) -> dict[str, str]:
        return {
            "device": "ggml",
            "dtype": self.options.wtype or "as in the file",
            "pipeline": f"stable-diffusion.cpp {self.family}".strip()
            + (f" ({self.traits.label})" if self.traits.label != self.family else ""),
            "threads": str(self.threads),
        }


def _sample_method_map(sd: Any) -> dict[str, Any]:
    from stable_diffusion_cpp import stable_diffusion as wrapper

    table: dict[str, Any] = wrapper.SAMPLE_METHOD_MAP
    return table


def plain_image(image: Any) -> Any:
    """An image of the library as plain RGB: it returns RGBA with an opaque alpha, and attaches
    every call argument to `info` (ctypes arrays: not picklable across the worker pipe)."""
    rgb = image.convert("RGB")
    rgb.info = {}
    return rgb
