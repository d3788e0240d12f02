"""Upscaler files stable-diffusion.cpp cannot run (SwinIR, HAT, DAT, SPAN, Real-ESRGAN compact,
RealESRGAN_x2plus's pixel-unshuffle RRDB, ...) through spandrel and torch, where the `upscale`
extra is installed.

spandrel reads the architecture and factor from the file; the image is cut into tiles (with an
overlap, blended back) so memory follows the tile, like the native path. torch and spandrel are
imported only when such a model loads.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localimg.backends.base import RuntimeSettings
from localimg.backends.side.scaling import TileProgress, upscale_with_model
from localimg.errors import BackendNotInstalled, ModelUnavailable

if TYPE_CHECKING:
    from PIL import Image

DEFAULT_TILE = 256
OVERLAP = 32


def available() -> bool:
    """Whether spandrel is installed (checked without importing it or torch)."""
    return importlib.util.find_spec("spandrel") is not None


class SpandrelUpscaler:
    """An upscaler file loaded by spandrel's ModelLoader, run tile by tile with torch."""

    kind = "upscaler"

    def __init__(
        self, name: str, path: Path, runtime: RuntimeSettings, tile: int = DEFAULT_TILE
    ) -> None:
        self.name = name
        self.path = path
        self.runtime = runtime
        self.tile = tile
        self._model: Any = None
        self.factor = 1

    @property
    def device(self) -> str:
        if self.runtime.device:
            return self.runtime.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    @property
    def where(self) -> str:
        return "vram" if (self.runtime.device or "").startswith("cuda") else "ram"

    @property
    def estimated_bytes(self) -> int:
        return self.path.stat().st_size * 2 + 256 * 2**20  # f32 weights + a tile's activations

    def load(self) -> None:
        try:
            from spandrel import ModelLoader
        except ImportError as exc:
            raise BackendNotInstalled(
                f"the upscaler {self.name!r} needs spandrel ({exc}): "
                "pip install 'localimg[upscale]'"
            ) from None
        try:
            descriptor = ModelLoader(device=self.device).load_from_file(str(self.path))
        except Exception as exc:  # spandrel's UnsupportedModelError, torch's load errors
            raise ModelUnavailable(
                f"spandrel cannot load the upscaler {self.path}: {exc}", param="upscaler"
            ) from None
        descriptor.eval()
        self._model = descriptor
        self.factor = int(descriptor.scale)

    def unload(self) -> None:
        self._model = None
        if self.where == "vram":
            import torch

            torch.cuda.empty_cache()

    def upscale(
        self, image: Image.Image, scale: float, progress: TileProgress | None = None
    ) -> Image.Image:
        return upscale_with_model(image, scale, self.factor, self.run, self.tile, progress)

    def _padded(self, part: Any) -> Any:
        """A tile padded (edge pixels repeated) to the size multiple the architecture needs
        (a pixel-unshuffle model reads even sizes); the output is cropped back."""
        import torch.nn.functional as functional

        requirements = getattr(self._model, "size_requirements", None)
        multiple = int(getattr(requirements, "multiple_of", 1) or 1)
        minimum = int(getattr(requirements, "minimum", 0) or 0)
        height, width = part.shape[2], part.shape[3]
        pad_h = max(minimum, -(-height // multiple) * multiple) - height
        pad_w = max(minimum, -(-width // multiple) * multiple) - width
        if pad_h or pad_w:
            return functional.pad(part, (0, pad_w, 0, pad_h), mode="replicate")
        return part

    def run(self, image: Image.Image, progress: TileProgress | None = None) -> Image.Image:
        """One pass of the model, tile by tile, the overlaps averaged."""
        import numpy as np
        import torch
        from PIL import Image

        if self._model is None:
            raise RuntimeError(f"the upscaler {self.name!r} is not loaded")
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        tensor = torch.from_numpy(pixels).permute(2, 0, 1)[None].to(self.device)
        height, width = pixels.shape[:2]
        f = self.factor
        out = torch.zeros((1, 3, height * f, width * f), device=self.device)
        weight = torch.zeros_like(out)
        overlap = min(OVERLAP, self.tile // 4)
        step = self.tile - overlap
        boxes = [
            (y, x)
            for y in range(0, max(1, height - overlap), step)
            for x in range(0, max(1, width - overlap), step)
        ]
        total = len(boxes)
        with torch.inference_mode():
            for done, (y, x) in enumerate(boxes, 1):
                part = tensor[:, :, y : y + self.tile, x : x + self.tile]
                h, w = part.shape[2] * f, part.shape[3] * f
                result = self._model(self._padded(part))[:, :, :h, :w]
                out[:, :, y * f : y * f + h, x * f : x * f + w] += result
                weight[:, :, y * f : y * f + h, x * f : x * f + w] += 1
                if progress is not None:
                    progress(done, total)
        merged = (out / weight.clamp(min=1)).clamp(0, 1)[0].permute(1, 2, 0).cpu().numpy()
        return Image.fromarray((merged * 255.0).round().astype(np.uint8))
