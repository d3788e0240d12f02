"""What every backend provides, and the settings the engine hands it.

A backend turns a fully merged `ImageRequest` into images. It never sees HTTP or CLI objects, and
the front ends never import it: the engine loads it by name through the registry.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

if TYPE_CHECKING:
    from localimg.config import ModelConfig
    from localimg.requests import ImageRequest, ImageResult, ProgressEvent

ProgressCallback = Callable[["ProgressEvent"], None]


@dataclass(frozen=True)
class RuntimeSettings:
    """Machine-level choices that are not part of a model's YAML."""

    device: str | None = None  # None: the YAML's `cuda`, else the best available device
    threads: int | None = None  # None: physical cores


@dataclass(frozen=True)
class BackendDefaults:
    """What a loaded model uses for fields neither the request nor the YAML set."""

    width: int
    height: int
    steps: int
    # None: the model guides by its own schedule unless the request or the YAML sets a scale
    # (Ideogram 4); the merged request then keeps cfg_scale None.
    cfg_scale: float | None
    size_multiple: int = 8
    # The loaded model reads input images as references (FLUX.1 Kontext, Qwen-Image-Edit, FLUX.2):
    # merge then leaves them at their own size instead of fitting them to the output as img2img.
    reference_edits: bool = False


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do beyond the Protocol, so the engine asks this, never a backend's name
    or whether it happens to have a method."""

    batch: bool = False  # can run several queued requests in one call (generate_batch)
    # Step-cache methods the backend knows (ImageRequest.cache). Which of them a loaded model can
    # use depends on its architecture: the backend refuses the others naming those that work.
    cache_methods: tuple[str, ...] = ()
    # Runs a hires fix with a latent upscaler itself, in one generate call (request.hires). A
    # pixel upscaler never reaches a backend as hires: the engine's slot runs the two passes.
    latent_hires: bool = False


def capabilities_of(cls: type[Any]) -> Capabilities:
    """The class's `capabilities`; a plugin class written before they existed has none, which
    means none of the optional abilities (the one place their absence is tolerated)."""
    found = getattr(cls, "capabilities", None)
    return found if isinstance(found, Capabilities) else Capabilities()


def weight_itemsize_of(cls: type[Any], config: ModelConfig, where: str) -> int | None:
    """Bytes per float weight once `config` is loaded on `where` ("vram" or "ram"), for the memory
    estimate; None (the default, for backends without the hook) means as stored on disk."""
    hook = getattr(cls, "weight_itemsize", None)
    if hook is None:
        return None
    size: int | None = hook(config, where)
    return size


def precision_of(
    cls: type[Any], config: ModelConfig, settings: RuntimeSettings
) -> dict[str, Any] | None:
    """The device and dtype `config` would run with on this machine, and why (`device`, `dtype`,
    `reason`, `variant`), decided offline without loading; None for backends without the hook."""
    hook = getattr(cls, "precision", None)
    if hook is None:
        return None
    found: dict[str, Any] = hook(config, settings)
    return found


def weight_files_of(cls: type[Any], config: ModelConfig) -> list[Path] | None:
    """Every weight file loading `config` reads, for the memory estimate, when the backend knows
    more than `parameters.model` (stable-diffusion.cpp's text encoders and VAE are files of their
    own, named by options); None (the default, for backends without the hook): the model only."""
    hook = getattr(cls, "weight_files", None)
    if hook is None:
        return None
    files: list[Path] = hook(config)
    return files


class Backend(Protocol):
    """The interface the engine drives. One instance holds one loaded model."""

    name: ClassVar[str]
    requirements: ClassVar[tuple[str, ...]]  # importable modules; missing → "not installed"
    extra: ClassVar[str]  # the pip extra that installs them
    # `options:` keys the backend consumes itself (at load time or as settings); every other
    # option is a generation keyword that the merged request carries in `extra`.
    option_keys: ClassVar[frozenset[str]]

    # Optional, read through capabilities_of (default Capabilities()):
    #     capabilities: ClassVar[Capabilities]
    # and, with batch=True, the generate_batch of BatchBackend (below).
    # Optional classmethod, read through weight_itemsize_of (default None, as stored):
    #     weight_itemsize(config, where) -> int | None
    # Optional classmethod, read through precision_of (default None: not known):
    #     precision(config, settings) -> dict[str, Any]
    # Optional classmethod, read through weight_files_of (default None: the model's own files):
    #     weight_files(config) -> list[Path]

    def __init__(self, settings: RuntimeSettings) -> None: ...

    def load(self, config: ModelConfig, progress: ProgressCallback) -> None: ...

    @property
    def defaults(self) -> BackendDefaults: ...

    @classmethod
    def check_request(cls, request: ImageRequest, config: ModelConfig) -> None:
        """Refuse, before any work is queued, what this backend cannot do (InvalidRequest)."""
        ...

    def generate(
        self, request: ImageRequest, progress: ProgressCallback, cancel: threading.Event
    ) -> ImageResult: ...

    def unload(self) -> None: ...

    def describe(self) -> dict[str, str]:
        """Facts for `models list` and `/v1/models` (device, dtype, pipeline)."""
        ...


@runtime_checkable
class BatchBackend(Backend, Protocol):
    """A Backend that can run several merged requests in one call (capabilities batch=True).

    The engine checks a loaded backend against this protocol before it hands it a batch, so a
    plugin that declares batch without the method fails with a clear error, and the call is typed.
    """

    def generate_batch(
        self,
        requests: list[ImageRequest],
        progress: list[ProgressCallback],
        cancel: threading.Event,
    ) -> list[ImageResult]:
        """Generate every request in one call; the results in the requests' order."""
        ...
