"""Small helpers the backend tests share: a noisy input picture, a slot's backend, a refusal.

They lived in test_diffusers_families.py and other test modules imported them from there, which
made one test module depend on another; here they are plain helpers any test can use.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from PIL import Image

from localimg.engine import Engine
from localimg.errors import InvalidRequest


def noise(index: int, side: int) -> Image.Image:
    """A random picture: tiny VAEs keep its detail through img2img (a flat colour washes out)."""
    rng = np.random.default_rng(index)
    return Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8))


def backend_of(engine: Engine, name: str) -> Any:
    """The backend object loaded in `name`'s in-process slot (to inspect its pipeline)."""
    return engine.slots[name].backend  # type: ignore[attr-defined]


def refused(call: Callable[[], Any], *words: str) -> str:
    """`call()` raises InvalidRequest whose message holds every word; returns the message."""
    with pytest.raises(InvalidRequest) as err:
        call()
    for word in words:
        assert word in err.value.message, err.value.message
    return err.value.message
