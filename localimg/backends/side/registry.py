"""Which side models exist: a factory per (kind, name), asked for a model when one is needed.

A factory, not a model, is registered, so knowing a side model costs nothing until a request
uses it; the engine keeps what the factory made (engine/side_models.py). The built-in registry
holds the resampling upscalers and the ControlNet preprocessors (canny, depth); ESRGAN files in
`upscale_models/` are registered the same way.
"""

from __future__ import annotations

from collections.abc import Callable

from localimg.backends.base import RuntimeSettings
from localimg.backends.side.base import SIDE_KINDS, SideModel
from localimg.backends.side.canny import CannyPreprocessor
from localimg.backends.side.depth import DepthPreprocessor, depth_model
from localimg.backends.side.resize import FILTERS, ResizeUpscaler
from localimg.errors import ModelNotFound

SideFactory = Callable[[RuntimeSettings], SideModel]


class SideRegistry:
    """Side-model factories by kind and name."""

    def __init__(self) -> None:
        self._factories: dict[tuple[str, str], SideFactory] = {}
        self._files: dict[str, set[str]] = {}  # by kind: the names replace_files registered

    def register(self, kind: str, name: str, factory: SideFactory) -> None:
        """Make `name` of `kind` available; a later registration of the same name replaces it."""
        if kind not in SIDE_KINDS:
            raise ValueError(f"no side-model kind {kind!r}; known: {', '.join(SIDE_KINDS)}")
        self._factories[(kind, name)] = factory

    def names(self, kind: str) -> list[str]:
        """The names of `kind`, sorted."""
        return sorted(name for k, name in self._factories if k == kind)

    def builtin_names(self, kind: str) -> list[str]:
        """The names of `kind` not registered from files, in registration order."""
        files = self._files.get(kind, set())
        return [name for k, name in self._factories if k == kind and name not in files]

    def file_names(self, kind: str) -> list[str]:
        """The names of `kind` registered from files (replace_files), sorted."""
        return sorted(self._files.get(kind, set()))

    def listing(self, kind: str) -> list[str]:
        """The names of `kind` as a user reads them: built-ins first (for upscalers the
        resampling filters), then the files' models, each sorted."""
        return sorted(self.builtin_names(kind)) + self.file_names(kind)

    def replace_files(self, kind: str, factories: dict[str, SideFactory]) -> None:
        """Make `factories` the file-backed models of `kind`: the ones an earlier call
        registered and this one does not are forgotten (a folder scanned again)."""
        for name in self._files.get(kind, set()) - set(factories):
            self._factories.pop((kind, name), None)
        for name, factory in factories.items():
            self.register(kind, name, factory)
        self._files[kind] = set(factories)

    def resolve(self, kind: str, name: str) -> str:
        """The registered name `name` means: itself, else the one that differs only in case
        (requests and YAML files are written by hand: "Lanczos", "4x-ultrasharp")."""
        if (kind, name) in self._factories:
            return name
        folded = name.casefold()
        for known_kind, known in self._factories:
            if known_kind == kind and known.casefold() == folded:
                return known
        return name

    def create(self, kind: str, name: str, runtime: RuntimeSettings) -> SideModel:
        """A new, unloaded model; ModelNotFound (listing the known names) for an unknown one."""
        name = self.resolve(kind, name)
        factory = self._factories.get((kind, name))
        if factory is None:
            known = ", ".join(self.listing(kind)) or "none"
            raise ModelNotFound(f"no {kind} named {name!r}; known: {known}", param=kind)
        model = factory(runtime)
        if not isinstance(model, SIDE_KINDS[kind]) or model.kind != kind:
            raise TypeError(f"the factory of {kind} {name!r} made a {type(model).__name__}")
        return model


def default_registry(depth: str | None = None) -> SideRegistry:
    """A registry of the built-in side models: the resampling upscalers and the ControlNet
    preprocessors; `depth` is the depth model (None: LOCALIMG_DEPTH_MODEL, else the default)."""
    registry = SideRegistry()
    for name in FILTERS:
        registry.register("upscaler", name, resize_factory(name))
    registry.register("preprocessor", "canny", lambda runtime: CannyPreprocessor())
    model = depth_model(depth)
    registry.register("preprocessor", "depth", lambda runtime: DepthPreprocessor(model, runtime))
    return registry


def resize_factory(name: str) -> SideFactory:
    """The factory of one resampling upscaler (it needs nothing from the runtime)."""

    def make(runtime: RuntimeSettings) -> SideModel:
        return ResizeUpscaler(name)

    return make
