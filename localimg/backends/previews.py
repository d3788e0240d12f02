"""Which steps of a generation get a preview, the same rule for every backend.

A request asking for N previews of an S-step generation gets them after the steps
round(i * S / (N + 1)) for i = 1..N: evenly spaced, none at the very start, the last one about
S / (N + 1) steps before the end (OpenAI's partial images: the final image follows them). With
N >= S there is one after every step. Steps count from 1, per image (a request of n images gets N
previews of each).
"""

from __future__ import annotations

import math

# A preview's long side at most: previews cross the worker pipe and the SSE stream, and the
# final image follows anyway.
PREVIEW_MAX_SIDE = 512


def preview_steps(steps: int, count: int) -> frozenset[int]:
    """The 1-based steps after which a preview is made (empty when count or steps is 0)."""
    if count <= 0 or steps <= 0:
        return frozenset()
    if count >= steps:
        return frozenset(range(1, steps + 1))
    # The points are at least one step apart (count < steps), so rounding keeps them distinct.
    return frozenset(max(1, math.floor(i * steps / (count + 1) + 0.5)) for i in range(1, count + 1))


def preview_size(width: int, height: int) -> tuple[int, int]:
    """The output size scaled down so its long side is at most PREVIEW_MAX_SIDE."""
    width, height = max(1, width), max(1, height)
    scale = min(1.0, PREVIEW_MAX_SIDE / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))
