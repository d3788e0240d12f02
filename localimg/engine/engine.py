"""The engine: model name → config → loaded backend, one job at a time per model.

The CLI and the server both call `Engine.submit` (or its blocking form `Engine.generate`). Each
model gets a slot with a bounded queue and a single runner, because a pipeline is neither
thread-safe nor able to share its device with a second generation. `merge_request` is the single
place where request values, YAML values and backend defaults are combined. Side models
(upscalers, control preprocessors) are called through the engine too (`Engine.upscale`,
`Engine.preprocess`, and `submit` for a request's ControlNet units: controls.py), so they share
the pipelines' memory budget, keep-alive and LRU eviction (side_models.py).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from localimg._util.malloc_arenas import use_one_arena
from localimg.backends import canonical_name, get_backend_class
from localimg.backends.side import (
    SideRegistry,
    Upscaler,
    default_registry,
    register_upscale_models,
)
from localimg.config import ModelConfig, default_model_ref, resolve_model
from localimg.engine import hires
from localimg.engine.controls import prepare_controls, preprocessor_name, run_preprocessor
from localimg.engine.events import EngineEvents
from localimg.engine.job import Job, ProgressListener
from localimg.engine.lifecycle import Lifecycle
from localimg.engine.settings import EngineSettings
from localimg.engine.side_models import SideModels
from localimg.engine.slots import InProcessSlot, Slot
from localimg.errors import InvalidRequest, LocalimgError
from localimg.requests import (
    ImageRequest,
    ImageResult,
)

if TYPE_CHECKING:
    from PIL import Image

SlotFactory = Callable[[ModelConfig, "EngineSettings"], Slot]
MAX_UPSCALE = 8.0  # the largest scale Engine.upscale accepts


class Engine:
    """Resolves model references, owns one slot per model and hands out jobs; holds the side
    models (upscalers, control preprocessors) that requests use around the pipelines."""

    def __init__(
        self,
        settings: EngineSettings | None = None,
        slot_factory: SlotFactory | None = None,
        side_registry: SideRegistry | None = None,
    ) -> None:
        self.settings = settings or EngineSettings()
        # Before this engine's threads allocate: a generation off the main thread would
        # otherwise run slower on an arena of its own (_util/malloc_arenas.py).
        use_one_arena()
        # Side models by (kind, name), made from the registry on first use (side_models.py).
        registry = side_registry or default_registry(depth=self.settings.depth_model)
        self.side = SideModels(registry, self.settings.runtime)
        register_upscale_models(registry, self.settings.models_path)  # upscale_models/ files
        self._slot_factory: SlotFactory = slot_factory or InProcessSlot
        self._slots: dict[str, Slot] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        # Job outcomes, loads, rejections and worker restarts of every slot (events.py).
        self.events = EngineEvents()
        self.lifecycle = Lifecycle(
            lambda: self.slots,
            keep_alive=self.settings.keep_alive,
            max_loaded=self.settings.max_loaded_models,
            budget=self.settings.memory_budget,
            runtime=self.settings.runtime,
            side=lambda: self.side.entries,
        )
        self.side.before_load = self.lifecycle.admit_side
        self.lifecycle.start()

    def resolve(self, ref: str | None) -> ModelConfig:
        """The config for a model reference (None: the default model)."""
        models_path = self.settings.models_path
        return resolve_model(ref or default_model_ref(models_path), models_path)

    def slot_for(self, config: ModelConfig) -> Slot:
        with self._lock:
            slot = self._slots.get(config.name)
            if slot is None:
                slot = self._slot_factory(config, self.settings)
                slot.before_load = self.lifecycle.admit
                slot.before_grow = self.lifecycle.admit_more
                if isinstance(slot, InProcessSlot):  # a worker's parent too (not a Ray slot)
                    slot.upscale = self.upscale  # a hires fix's pixel upscaler (hires.py)
                slot.events = self.events
                self._slots[config.name] = slot
            return slot

    @property
    def slots(self) -> dict[str, Slot]:
        with self._lock:
            return dict(self._slots)

    def submit(
        self,
        model: str | None,
        request: ImageRequest,
        progress: ProgressListener | None = None,
    ) -> Job:
        """Validate and queue a request; raises at once for a bad request or a full queue.

        ControlNet units are prepared first, on the caller's thread (`prepare_controls`): the
        job, and a worker process's copy of it, holds their maps."""
        config = self.resolve(model)
        canonical_name(config.backend)
        backend_cls = get_backend_class(config.backend)
        request = self.prepare_controls(request)
        backend_cls.check_request(request, config)
        hires.check_request(request, config, backend_cls, self.side.registry.names("upscaler"))
        job = Job(id=f"job-{next(self._ids)}", model=config.name, request=request)
        if progress is not None:
            job.listeners.append(progress)
        self.slot_for(config).submit(job)
        return job

    def queue_position(self, job: Job) -> int | None:
        """Where a job waits in its model's queue (0: next), None once it runs or is done."""
        slot = self.slots.get(job.model)
        return slot.queue_position(job) if slot is not None else None

    def generate(
        self,
        model: str | None,
        request: ImageRequest,
        progress: ProgressListener | None = None,
        timeout: float | None = None,
    ) -> ImageResult:
        """Submit and wait. Ctrl-C cancels the job and lets the slot finish cleanly."""
        job = self.submit(model, request, progress)
        try:
            return job.result(timeout)
        except KeyboardInterrupt:
            job.cancel()
            raise
        except LocalimgError:
            raise

    def upscale(
        self,
        image: Image.Image,
        upscaler: str = "lanczos",
        scale: float = 2.0,
        progress: Callable[[int, int], None] | None = None,
    ) -> Image.Image:
        """`image` enlarged `scale` times (above 0, at most 8) by the named upscaler, on the
        caller's thread; `progress(done, total)` follows a model's tiles.

        The upscaler is a side model: loaded on first use (room made for it under the memory
        budget, as for a pipeline), kept for the next call, evicted or reaped like a pipeline.
        A model runs as many passes as reach the scale, lanczos resizes the rest
        (backends/side/scaling.py). ModelNotFound names the known upscalers.
        """
        if not 0 < scale <= MAX_UPSCALE:
            raise InvalidRequest(
                f"scale must be a number above 0 and at most {MAX_UPSCALE:g}, not {scale:g}",
                param="scale",
            )
        with self.side.use("upscaler", upscaler) as model:
            upscaling = cast(Upscaler, model)  # the registry checked its kind
            if progress is None:
                return upscaling.upscale(image, scale)
            return upscaling.upscale(image, scale, progress)

    def upscaler_names(self) -> list[str]:
        """The upscalers a request may name: the resampling filters, then the models of
        `upscale_models/` (as of the engine's start or its last `refresh_upscalers`)."""
        return self.side.registry.listing("upscaler")

    def refresh_upscalers(self) -> list[str]:
        """Scan `upscale_models/` again (a file added or removed); a removed file's loaded
        model is unloaded. The names, as `upscaler_names`."""
        register_upscale_models(self.side.registry, self.settings.models_path)
        self.side.forget_missing("upscaler")
        return self.upscaler_names()

    def prepare_controls(self, request: ImageRequest) -> ImageRequest:
        """`request` with each ControlNet unit's preprocessor run: its map in place of its image,
        preprocess "none" (controls.py). InvalidRequest names the preprocessors for an unknown
        name."""
        return prepare_controls(self.side, request)

    def preprocessor_name(self, module: str) -> str | None:
        """The preprocessor `module` names (A1111's names too; None: "none", no preprocessing);
        InvalidRequest naming the available ones for anything else. Loads nothing."""
        return preprocessor_name(self.side, module)

    def preprocess(
        self,
        image: Image.Image,
        module: str = "none",
        resolution: int | None = None,
        threshold_a: float | None = None,
        threshold_b: float | None = None,
    ) -> Image.Image:
        """The control map the preprocessor `module` makes of `image` (A1111's detect), on the
        caller's thread, the preprocessor loaded like any side model; "none" gives the image."""
        name = preprocessor_name(self.side, module)
        return run_preprocessor(self.side, name, image, resolution, threshold_a, threshold_b)

    def load(self, model: str | None) -> Slot:
        """Load a model now (blocking), making room for it as a request would; its slot."""
        slot = self.slot_for(self.resolve(model))
        slot.load()
        return slot

    def unload(self, name: str) -> bool:
        """Unload a model now (after its running job); False if it has no slot."""
        slot = self.slots.get(name)
        if slot is None:
            return False
        slot.unload()
        return True

    def close(self, release_memory: bool = True) -> None:
        """Stop every slot and unload its model; `release_memory=False` when the process exits."""
        self.lifecycle.stop()
        with self._lock:
            slots, self._slots = list(self._slots.values()), {}
        for slot in slots:
            slot.close(release_memory)
        self.side.close()
