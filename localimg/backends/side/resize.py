"""The weight-free upscalers: Pillow's resampling filters (lanczos, bicubic, nearest).

They are what A1111 offers as its plain upscalers: no model to load and no memory to count, but
named and called like an ESRGAN upscaler, so a request can pick any of them the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from PIL import Image

FILTERS = {
    "lanczos": Image.Resampling.LANCZOS,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}


@dataclass
class ResizeUpscaler:
    """An upscaler that resamples with one of Pillow's filters (FILTERS)."""

    name: str
    kind: str = field(default="upscaler", init=False)
    estimated_bytes: int = field(default=0, init=False)  # no weights; the output is the caller's
    where: str = field(default="ram", init=False)

    def __post_init__(self) -> None:
        if self.name not in FILTERS:
            raise ValueError(f"no resampling filter {self.name!r}; known: {', '.join(FILTERS)}")

    def load(self) -> None:
        """Nothing to read."""

    def unload(self) -> None:
        """Nothing to free."""

    def upscale(
        self,
        image: Image.Image,
        scale: float,
        progress: Callable[[int, int], None] | None = None,
    ) -> Image.Image:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        resized = image.resize(size, FILTERS[self.name])
        if progress is not None:
            progress(1, 1)  # one "tile": the whole image
        return resized
