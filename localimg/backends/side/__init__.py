"""Side models: upscalers and control preprocessors, known to the engine through `SideModel`.

Other parts import from this package, never from its modules.
"""

from localimg.backends.side.base import SIDE_KINDS, Preprocessor, SideModel, Upscaler
from localimg.backends.side.canny import CannyPreprocessor
from localimg.backends.side.depth import DEFAULT_MODEL as DEFAULT_DEPTH_MODEL
from localimg.backends.side.depth import MODEL_ENV as DEPTH_MODEL_ENV
from localimg.backends.side.depth import DepthPreprocessor
from localimg.backends.side.preprocessors import MODULES, preprocessor_for
from localimg.backends.side.registry import SideFactory, SideRegistry, default_registry
from localimg.backends.side.resize import ResizeUpscaler
from localimg.backends.side.upscale_models import (
    UPSCALE_FOLDER,
    UPSCALER_SUFFIXES,
    describe_file,
    register_upscale_models,
    upscaler_files,
)

__all__ = [
    "DEFAULT_DEPTH_MODEL",
    "DEPTH_MODEL_ENV",
    "MODULES",
    "SIDE_KINDS",
    "UPSCALER_SUFFIXES",
    "UPSCALE_FOLDER",
    "CannyPreprocessor",
    "DepthPreprocessor",
    "Preprocessor",
    "ResizeUpscaler",
    "SideFactory",
    "SideModel",
    "SideRegistry",
    "Upscaler",
    "default_registry",
    "describe_file",
    "preprocessor_for",
    "register_upscale_models",
    "upscaler_files",
]
