"""The stablediffusion-ggml backend: stable-diffusion.cpp through stable-diffusion-cpp-python.

It loads what stable-diffusion.cpp loads (SD1.x, SD2.x, SDXL, SD3/3.5, FLUX, ...) from .gguf,
.safetensors or .ckpt, with optional separate text encoders, VAE or TAESD files, all named in the
YAML's `options:` the way LocalAI's ggml backend names them. The native library's defects are
contained in `native.py`; loading in `loading.py`; sampler and schedule names in `schedulers.py`;
request → call keywords in `call_args.py`; step caches in `caching.py` (knobs: `cache_knobs.py`);
the YAML's options in `options.py`; prompt LoRA tags in `lora.py`; ControlNet in `control.py`.
The library is imported only inside methods, so `localimg --help` never loads it.
"""

from __future__ import annotations

import gc
import logging
import threading
from pathlib import Path
from typing import Any, ClassVar

from localimg._util.system import physical_cores
from localimg.backends.base import (
    BackendDefaults,
    Capabilities,
    ProgressCallback,
    RuntimeSettings,
)
from localimg.backends.ggml import (
    cache_knobs,
    caching,
    call_args,
    control,
    hires,
    native,
    previews,
    schedulers,
)
from localimg.backends.ggml.families import Family, family_of
from localimg.backends.ggml.loading import check_device, open_model
from localimg.backends.ggml.lora import lora_dir, lora_tags, prompt_with_loras
from localimg.backends.ggml.options import FILE_OPTIONS, OPTION_KEYS, GgmlOptions, parse_options
from localimg.backends.ggml.previews import StepPreviews, previews_to
from localimg.config import ModelConfig
from localimg.errors import BackendError, Cancelled, ConfigError, InvalidRequest, LocalimgError
from localimg.prompts.lora_files import note_lora_hashes
from localimg.request_parts import HIRES_DEFAULT_DENOISE
from localimg.requests import ImageRequest, ImageResult, ProgressEvent

log = logging.getLogger(__name__)

DEFAULT_STEPS = 20  # stable-diffusion.cpp's own default
# Request modes this backend serves; which of them a model does depends on its family
# (families.py, call_args.py): images, reference edits (FLUX.2, Kontext, Qwen-Image-Edit), Wan
# video.
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
    # checked at generation time (families.py, call_args.py), since the family is known once
    # loaded.
    # A latent hires fix runs in the library, both passes in one call (hires.py).
    capabilities: ClassVar[Capabilities] = Capabilities(
        batch=False, cache_methods=cache_knobs.METHODS, latent_hires=True
    )

    def __init__(self, settings: RuntimeSettings) -> None:
        self.settings = settings
        self.model: Any = None
        self.config: ModelConfig | None = None
        self.options = GgmlOptions()
        self.family = ""
        self.traits: Family = family_of("", [])
        self.threads = 1
        self.yaml_loras: list[tuple[Path, float]] = []
        self.control_net: str | None = None  # the ControlNet file the context was built with
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
            schedulers.resolve(request.scheduler)
        for side in ("width", "height"):
            value = getattr(request, side)
            if value is not None and value % 8:
                raise InvalidRequest(
                    f"{side} {value} is not a multiple of 8 (stable-diffusion.cpp models take "
                    "multiples of 64 for SD1/SD2/SDXL, 8 for FLUX.1/SD3/Qwen-Image/Z-Image/Anima, "
                    "16 for FLUX.2, ERNIE-Image and Wan)",
                    param="size",
                )
        cls._check_extra(request.extra)
        caching.check_request_cache(request.cache, request.cache_options, config)
        lora_tags(request.prompt, lora_dir(config, options))
        control.check_units(request.controls)
        for unit in request.controls:
            if ref := unit.net or config.default_control_net:
                control.control_file(ref, config)
        hires.check_request(request)

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
                schedulers.resolve(str(value), param="sampler")
            elif not isinstance(value, int | float) or isinstance(value, bool):
                raise InvalidRequest(f"{key} must be a number, got {value!r}", param=key)

    # -- loading ----------------------------------------------------------------------------

    @classmethod
    def precision(cls, config: ModelConfig, settings: RuntimeSettings) -> dict[str, Any]:
        """stable-diffusion.cpp runs where it was built to, and keeps each weight's type from the
        file unless `wtype` converts them on load (`f16` does not change a ggml model)."""
        wtype = parse_options(config).wtype
        return {
            "device": "as built (CPU, or CUDA/Metal/Vulkan when compiled for them)",
            "dtype": wtype or "as stored in the file",
            "reason": f"options wtype:{wtype} converts the weights on load"
            if wtype
            else "the file's weight types (options wtype:f16 converts them on load)",
            "variant": None,
        }

    @classmethod
    def weight_files(cls, config: ModelConfig) -> list[Path]:
        """Every weight file the YAML names (the model and each *_path option) that exists: what
        a memory estimate must count for a ggml model, whose text encoders are separate files."""
        options = parse_options(config)
        names = [config.model] if config.model else []
        names += [getattr(options, key) for key in FILE_OPTIONS if getattr(options, key)]
        paths = [config.resolve_path(name) for name in names]
        return [path for path in paths if path.is_file()]

    def load(self, config: ModelConfig, progress: ProgressCallback) -> None:
        check_device(self.settings.device)
        options = parse_options(config)
        self.threads = (
            self.settings.threads or options.threads or config.threads or physical_cores()
        )
        self.config, self.options = config, options
        net = control.yaml_control_file(config)
        self._open(net, progress)
        if net is not None:
            try:
                control.check_family(self.traits)
            except InvalidRequest as exc:
                self.unload()
                raise ConfigError(f"{config.where}: control_net: {exc.message}") from None

    def _open(self, net: str | None, progress: ProgressCallback) -> None:
        """Load the YAML's model in a new context, built with the ControlNet file `net`."""
        assert self.config is not None
        loaded = open_model(self.config, self.options, self.threads, progress, net)
        self.family, self.traits = loaded.traits.name, loaded.traits
        self.yaml_loras, self.control_net = loaded.yaml_loras, net
        self._sd, self.model = loaded.sd, loaded.model
        self._defaults = self._compute_defaults()

    def _use_control_net(self, net: str, progress: ProgressCallback) -> None:
        """Reload the model with ControlNet `net` unless it is the one loaded. If that load
        fails, the model is loaded back as it was (for the next request) and the error raised."""
        if net == self.control_net:
            return
        assert self.config is not None
        log.info("reloading %s with ControlNet %s", self.config.name, Path(net).name)
        previous = self.control_net
        self.unload()
        try:
            self._open(net, progress)
        except LocalimgError:
            self._open(previous, progress)
            raise

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

    def generate(
        self, request: ImageRequest, progress: ProgressCallback, cancel: threading.Event
    ) -> ImageResult:
        if self.model is None or self._sd is None:
            raise BackendError("the model is not loaded")
        self._check_extra(request.extra)
        self._check_size(request)
        assert self.config is not None
        mode = call_args.resolve_mode(request, self.traits)
        call_args.check(request, self.traits, self.options, mode)
        control.check_units(request.controls)
        net, unit = control.wanted(request.controls, self.config)
        if net is not None:
            control.check_family(self.traits)
            self._use_control_net(net, progress)
        method, schedule = call_args.sampling(request, self.options)
        prompt = prompt_with_loras(request.prompt, self.config, self.options, self.yaml_loras)
        base = call_args.common(request, self.options, prompt, method, schedule)
        base.update(caching.call_keywords(request.cache, request.cache_options, self.traits))
        label = schedulers.label(
            method or schedulers.default_method(self._sd, self.model), schedule
        )
        hires.check_family(request, self.traits)
        if self.traits.video:
            if request.previews:
                raise InvalidRequest(
                    "previews (partial images) of a stable-diffusion.cpp video are not supported; "
                    "ask for 0 or use the diffusers backend",
                    param="previews",
                )
            return self._video(request, base, label, progress, cancel)
        call = call_args.image_call(request, self.options, mode, base)
        call.update(control.call_keywords(unit, call["width"], call["height"]))
        call.update(hires.call_keywords(request, self.traits))
        total = self._counter(request, mode).total * request.n
        size = (call.get("hires_width", call["width"]), call.get("hires_height", call["height"]))
        images: list[Any] = []
        for index, seed in enumerate(request.seeds):
            if cancel.is_set():
                raise Cancelled("the request was cancelled")
            counter = self._counter(request, mode)
            shows = StepPreviews(request.previews, counter.total, *size)
            images.append(self._one(call, seed, index, counter, total, progress, shows))
            progress(
                ProgressEvent(
                    "decode", step=(index + 1) * counter.total, total=total, image_index=index
                )
            )
        result = ImageResult(images=images, seeds=request.seeds, scheduler=label)
        note_lora_hashes([result], request.prompt, lora_dir(self.config, self.options))
        return result

    @staticmethod
    def _counter(request: ImageRequest, mode: str) -> hires.StepCounter:
        """One image's step counter: the first pass's steps, and the hires pass's if any."""
        first = call_args.steps_run(request, mode, DEFAULT_STEPS)
        fix = request.hires
        if fix is None:
            return hires.StepCounter(first)
        second = hires.second_pass_steps(
            fix.steps or request.steps or DEFAULT_STEPS, fix.denoise or HIRES_DEFAULT_DENOISE
        )
        return hires.StepCounter(first, second)

    def _video(
        self,
        request: ImageRequest,
        base: dict[str, Any],
        label: str,
        progress: ProgressCallback,
        cancel: threading.Event,
    ) -> ImageResult:
        """One Wan video: generate_video's frames, with the steps of both experts as progress."""
        call = call_args.video_call(
            request, self.options, base, call_args.high_noise_sampling(self.options)
        )
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
        output = native.native_call(
            self._sd, lambda: self.model.generate_video(seed=seed, **call), on_step, "frames"
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
        counter: hires.StepCounter,
        total: int,
        progress: ProgressCallback,
        shows: StepPreviews,
    ) -> Any:
        before = index * counter.total

        def on_step(step: int, steps: int) -> None:
            # The same callback reports tensor loading (LoRA files) and VAE tiles; only the
            # sampler's steps have a pass's step count, and they only go forward.
            done = counter.step(step, steps)
            if done is None:
                return
            progress(
                ProgressEvent(
                    "step",
                    step=before + done,
                    total=total,
                    image_index=index,
                    preview=shows.take(done),
                )
            )

        def on_preview(step: int, image: Any) -> None:
            # Each pass numbers its previews from 1: count them over both passes.
            sign = -1 if step < 0 else 1
            shows.keep(sign * (counter.offset + abs(step)), image)

        handler = on_preview if shows.handler is not None else None
        method = previews.preview_method(
            self.options.taesd_path, len(shows.wanted) >= counter.total
        )
        output = native.native_call(
            self._sd,
            lambda: self.model.generate_image(seed=seed, **call),
            on_step,
            "image",
            previews_to(self._sd, handler, method),
        )
        return plain_image(output[0])

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
            **({"controlnet": Path(self.control_net).name} if self.control_net else {}),
        }


def plain_image(image: Any) -> Any:
    """An image of the library as plain RGB: it returns RGBA with an opaque alpha, and attaches
    every call argument to `info` (ctypes arrays: not picklable across the worker pipe)."""
    rgb = image.convert("RGB")
    rgb.info = {}
    return rgb
