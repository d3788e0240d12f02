"""Any scale from a model with one factor: model passes, then lanczos for the rest.

A x2 model asked for x4 runs twice; asked for x3 it runs twice (x4) and lanczos brings the
result down to x3, as A1111 does: the model runs until the image is at least the asked size,
so the last step only ever shrinks (sharper than enlarging a x2 result by 1.5). A scale at or
below 1 runs no pass: lanczos alone. Progress counts tiles over every pass; each pass's count is
the library's own once it reports, and estimated from the tile size before.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

TileProgress = Callable[[int, int], None]
# One model pass: an image and a per-pass (done, total) callback → the image times the factor.
RunPass = Callable[["Image.Image", TileProgress], "Image.Image"]
OVERLAP = 0.25  # stable-diffusion.cpp's tile overlap for upscaling


def target_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """`size` times `scale`, each side rounded to whole pixels (at least 1)."""
    return (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))


def passes(scale: float, factor: int) -> int:
    """How many model passes reach at least `scale` (0 when scale ≤ 1)."""
    if scale <= 1:
        return 0
    return max(1, math.ceil(math.log(scale, factor) - 1e-9))


def tiles_along(length: int, tile: int) -> int:
    """The tiles along one side, as stable-diffusion.cpp's tiling counts them: steps of the
    tile less its overlap, one more where it fits without the overlap passing half a tile."""
    if length <= tile:
        return 1
    overlap = int(tile * OVERLAP)
    step = tile - overlap
    count = (length - overlap) // step
    overshoot = ((count + 1) * step + overlap) % length
    if overshoot != step and overshoot <= count * (tile // 2 - overlap):
        count += 1
    return max(2, count)


def tiles(size: tuple[int, int], tile: int) -> int:
    """The tiles one pass cuts an image of `size` into (a progress total before the library
    reports its own)."""
    return tiles_along(size[0], tile) * tiles_along(size[1], tile)


def upscale_with_model(
    image: Image.Image,
    scale: float,
    factor: int,
    run: RunPass,
    tile: int,
    progress: TileProgress | None = None,
) -> Image.Image:
    """`image` times `scale`: `passes` model runs, then a lanczos resize to the exact size."""
    from PIL import Image

    target = target_size(image.size, scale)
    count = passes(scale, factor)
    sizes = [(image.width * factor**k, image.height * factor**k) for k in range(count)]
    totals = [tiles(size, tile) for size in sizes]
    done_before = 0
    current = image
    for index in range(count):

        def on_tile(done: int, total: int, index: int = index, before: int = done_before) -> None:
            if total > 0:
                totals[index] = total
            if progress is not None:
                progress(before + min(done, totals[index]), sum(totals))

        current = run(current, on_tile)
        done_before += totals[index]
        if progress is not None:
            progress(done_before, sum(totals))
    if current.size != target:
        current = current.resize(target, Image.Resampling.LANCZOS)
    if count == 0 and progress is not None:
        progress(1, 1)
    return current
