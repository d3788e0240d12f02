"""Side models: upscalers and control preprocessors, known to the engine through `SideModel`.

Other parts import from this package, never from its modules.
"""

from localimg.backends.side.base import SIDE_KINDS, Preprocessor, SideModel, Upscaler
from localimg.backends.side.registry import SideFactory, SideRegistry, default_registry
from localimg.backends.side.resize import ResizeUpscaler

__all__ = [
    "SIDE_KINDS",
    "Preprocessor",
    "ResizeUpscaler",
    "SideFactory",
    "SideModel",
    "SideRegistry",
    "Upscaler",
    "default_registry",
]
