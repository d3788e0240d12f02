"""The depth preprocessor: a monocular depth estimator through transformers' pipeline.

By default Depth Anything V2 Small (`DEFAULT_MODEL`, about 100 MB), what sd-webui-controlnet's
`depth_anything_v2` module runs; any transformers depth-estimation model works (DPT, Depth
Anything, ...), named by the engine's `depth_model` setting or the LOCALIMG_DEPTH_MODEL
environment variable, as a local folder or a hub id. The weights load on first use and are kept,
evicted and counted in the memory budget like a pipeline's. The map is near = bright, the
convention depth ControlNets were trained on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localimg.backends.base import RuntimeSettings
from localimg.backends.side.preprocessors import PARAM, at_size, check_resolution, working_copy
from localimg.errors import BackendNotInstalled, ModelNotFound

if TYPE_CHECKING:
    from PIL import Image

DEFAULT_MODEL = "depth-anything/Depth-Anything-V2-Small-hf"
MODEL_ENV = "LOCALIMG_DEPTH_MODEL"
WEIGHT_SUFFIXES = (".safetensors", ".bin")
# What a model whose weights are not on disk yet is taken to need (Depth Anything V2 Small in
# float32, rounded up): the estimate is read before loading, which may download.
UNKNOWN_BYTES = 120 * 2**20


def depth_model(setting: str | None = None) -> str:
    """The depth model to load: the setting, else LOCALIMG_DEPTH_MODEL, else DEFAULT_MODEL."""
    return setting or os.environ.get(MODEL_ENV, "").strip() or DEFAULT_MODEL


def weight_bytes(model: str) -> int | None:
    """The size of `model`'s weight files: a local folder's, or a hub id's in the local cache
    (never the network); None when they are not on disk."""
    folder = Path(model).expanduser()
    if not folder.is_dir():
        try:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(model, "config.json")
        except Exception:  # an id huggingface_hub refuses, or no huggingface_hub
            return None
        if not isinstance(found, str):
            return None
        folder = Path(found).parent
    sizes = [p.stat().st_size for p in folder.iterdir() if p.name.endswith(WEIGHT_SUFFIXES)]
    return sum(sizes) or None


class DepthPreprocessor:
    """A depth map from a transformers depth-estimation pipeline."""

    kind = "preprocessor"

    def __init__(self, model: str, runtime: RuntimeSettings, name: str = "depth") -> None:
        self.name = name
        self.model = model
        self.runtime = runtime
        self._pipe: Any = None

    @property
    def device(self) -> str:
        """The runtime's device, else CUDA when there is one, else the CPU."""
        if self.runtime.device:
            return self.runtime.device
        try:
            import torch
        except ImportError:
            return "cpu"
        return "cuda" if torch.cuda.is_available() else "cpu"

    @property
    def where(self) -> str:
        return "vram" if self.device.startswith("cuda") else "ram"

    @property
    def estimated_bytes(self) -> int:
        return weight_bytes(self.model) or UNKNOWN_BYTES

    def load(self) -> None:
        try:
            from transformers import pipeline
        except ImportError as exc:
            raise BackendNotInstalled(
                f"the depth preprocessor needs transformers and torch ({exc}): "
                "pip install 'localimg[diffusers]'"
            ) from None
        try:
            self._pipe = pipeline("depth-estimation", model=self.model, device=self.device)
        except (OSError, ValueError) as exc:
            raise ModelNotFound(
                f"the depth model {self.model!r} cannot be loaded ({exc}); set {MODEL_ENV} to a "
                "local folder or a hub id of a transformers depth-estimation model",
                param=PARAM,
            ) from None

    def unload(self) -> None:
        self._pipe = None
        if self.where == "vram":
            import torch

            torch.cuda.empty_cache()

    def preprocess(
        self,
        image: Image.Image,
        resolution: int | None,
        threshold_a: float | None,
        threshold_b: float | None,
    ) -> Image.Image:
        """The depth map of `image` (its thresholds have no meaning here and are ignored)."""
        if self._pipe is None:
            raise RuntimeError("the depth preprocessor is not loaded")
        work = working_copy(image, check_resolution(resolution))
        found = self._pipe(work)
        depth: Image.Image = found["depth"]
        return at_size(depth, image.size, sharp=False)
