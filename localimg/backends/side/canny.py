"""The canny preprocessor: OpenCV's edge detector, as sd-webui-controlnet's `canny` module.

No weights: loading costs nothing and it never counts against the memory budget, but it is a side
model like the others, so a request names it the same way. threshold_a and threshold_b are the
low and high hysteresis thresholds (1..255, A1111's defaults 100 and 200).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from localimg.backends.side.preprocessors import (
    at_size,
    check_resolution,
    check_threshold,
    working_copy,
)

if TYPE_CHECKING:
    from PIL import Image

LOW_DEFAULT, HIGH_DEFAULT = 100, 200


@dataclass
class CannyPreprocessor:
    """White edges on black, from cv2.Canny at the working resolution."""

    name: str = "canny"
    kind: str = field(default="preprocessor", init=False)
    estimated_bytes: int = field(default=0, init=False)
    where: str = field(default="ram", init=False)

    def load(self) -> None:
        """Nothing to read."""

    def unload(self) -> None:
        """Nothing to free."""

    def preprocess(
        self,
        image: Image.Image,
        resolution: int | None,
        threshold_a: float | None,
        threshold_b: float | None,
    ) -> Image.Image:
        import cv2
        import numpy as np
        from PIL import Image as PILImage

        low = check_threshold("threshold_a", threshold_a, LOW_DEFAULT, 1, 255)
        high = check_threshold("threshold_b", threshold_b, HIGH_DEFAULT, 1, 255)
        work = working_copy(image, check_resolution(resolution))
        edges = cv2.Canny(np.asarray(work), low, high)
        return at_size(PILImage.fromarray(edges), image.size, sharp=True)
