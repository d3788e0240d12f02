"""Previews of a running stable-diffusion.cpp generation, through its preview callback.

stable-diffusion.cpp (the one in stable-diffusion-cpp-python 0.4.7) makes a preview of the
denoised latents at every sampler step while a preview callback is set: `proj` (a latent-to-RGB
projection, per family, at latent size: almost free) or `tae` (a decode with the TAESD decoder).
Its `preview_interval` is stored but not read, so the preview is made at every step; localimg keeps
the ones at the steps the request asked for (backends/previews.py) and drops the rest. So `tae` is
used only where every step is previewed anyway (and the model has a TAESD), else `proj`.

The wrapper's own `preview_callback` is not used: its C callback object dies with the call while
the library keeps the pointer (the progress callback's defect, see native.py), and its image
conversion frees buffers the library frees itself. Here one callback lives for the process,
copies the pixels, and the preview state is set before and cleared after every call (under
native.NATIVE_LOCK), so a call without previews pays nothing.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from localimg.backends.previews import preview_size

log = logging.getLogger(__name__)

PreviewHandler = Callable[[int, Any], None]

_state: dict[str, Any] = {"callback": None, "handler": None}


def _on_preview(step: int, count: int, frames: Any, is_noisy: bool, _data: Any) -> None:
    handler = _state["handler"]
    if handler is None or count < 1 or not frames or is_noisy:
        return
    try:
        from PIL import Image

        frame = frames[0]
        width, height, channels = int(frame.width), int(frame.height), int(frame.channel)
        if channels not in (3, 4) or width < 1 or height < 1:
            return
        pixels = ctypes.string_at(frame.data, width * height * channels)
        image = Image.frombytes("RGBA" if channels == 4 else "RGB", (width, height), pixels)
        handler(int(step), image.convert("RGB"))
    except Exception:  # never let an exception cross into C
        log.exception("preview handler failed")


def _dispatcher(sd: Any) -> Any:
    if _state["callback"] is None:
        _state["callback"] = sd.sd_preview_callback(_on_preview)
    return _state["callback"]


def _mode(sd: Any, name: str) -> int:
    from stable_diffusion_cpp import stable_diffusion as wrapper

    return int(wrapper.PREVIEW_MAP[name])


@contextmanager
def previews_to(sd: Any, handler: PreviewHandler | None, method: str) -> Iterator[None]:
    """During the block, hand each step's preview (step from 1, a PIL image) to `handler`.

    With no handler the library's preview callback is cleared, so nothing is computed. Call
    under native.NATIVE_LOCK: the callback is process-global.
    """
    if handler is None:
        sd.sd_set_preview_callback(None, _mode(sd, "none"), 1, True, False, ctypes.c_void_p(0))
        yield
        return
    _state["handler"] = handler
    sd.sd_set_preview_callback(
        _dispatcher(sd), _mode(sd, method), 1, True, False, ctypes.c_void_p(0)
    )
    try:
        yield
    finally:
        _state["handler"] = None
        sd.sd_set_preview_callback(None, _mode(sd, "none"), 1, True, False, ctypes.c_void_p(0))


def preview_method(taesd_path: str | None, every_step: bool) -> str:
    """`tae` where the model has a TAESD and every step is previewed anyway, else `proj`.

    The library previews every step while previews are on: a TAESD decode per step costs
    several percent of an SD1.5-size step, too much to pay 20 times for 3 previews, while its
    projection costs next to nothing.
    """
    return "tae" if taesd_path and every_step else "proj"


class StepPreviews:
    """The previews one image asked for: kept at the wanted steps, attached to their step event."""

    def __init__(self, count: int, steps: int, width: int, height: int) -> None:
        from localimg.backends.previews import preview_steps

        self.wanted = preview_steps(steps, count)
        self.size = preview_size(width, height)
        self.ready: dict[int, Any] = {}

    @property
    def handler(self) -> PreviewHandler | None:
        return self.keep if self.wanted else None

    def keep(self, step: int, image: Any) -> None:
        # Second-order samplers evaluate a step twice, the first time numbered -step: the
        # later (positive) one replaces it, and a last step evaluated once keeps its only one.
        step = abs(step)
        if step in self.wanted:
            if image.size != self.size:
                from PIL import Image

                image = image.resize(self.size, Image.Resampling.BILINEAR)
            self.ready[step] = image

    def take(self, step: int) -> Any:
        """The preview made at `step` (once), or None."""
        return self.ready.pop(step, None)
