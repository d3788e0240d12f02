"""Side models: the models a pipeline does not contain but a request may use around it.

An upscaler enlarges a finished image (ESRGAN weights through stable-diffusion.cpp or spandrel,
or a plain resampling filter); a control preprocessor turns an input image into the map a
ControlNet reads (canny edges, depth, pose). They take memory like pipelines do, so the engine
loads, keeps, evicts and unloads them the same way, knowing them only through `SideModel`; each
kind adds one small call of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from PIL import Image


@runtime_checkable
class SideModel(Protocol):
    """What the engine needs of any side model: who it is, its memory, load and unload."""

    @property
    def kind(self) -> str:
        """One of SIDE_KINDS: which call the model answers."""
        ...

    @property
    def name(self) -> str:
        """How requests name it ("lanczos", "4x-UltraSharp"): unique within its kind."""
        ...

    @property
    def estimated_bytes(self) -> int:
        """Memory it takes once loaded (0 for a filter with no weights), read before it loads
        so the memory budget can make room or refuse."""
        ...

    @property
    def where(self) -> str:
        """Which budget those bytes count against: "ram", or "vram" on a GPU."""
        ...

    def load(self) -> None:
        """Read the weights (blocking); called once, before the first call of its kind."""
        ...

    def unload(self) -> None:
        """Give the memory back; `load` may be called again later."""
        ...


@runtime_checkable
class Upscaler(SideModel, Protocol):
    """kind "upscaler": a bigger image from an image."""

    def upscale(
        self,
        image: Image.Image,
        scale: float,
        progress: Callable[[int, int], None] | None = None,
    ) -> Image.Image:
        """`image` enlarged `scale` times (each side rounded to whole pixels); `progress` is
        called with (tiles done, tiles in all) as a model works through the image."""
        ...


@runtime_checkable
class Preprocessor(SideModel, Protocol):
    """kind "preprocessor": the control map a ControlNet reads, made from an input image."""

    def preprocess(
        self,
        image: Image.Image,
        resolution: int | None,
        threshold_a: float | None,
        threshold_b: float | None,
    ) -> Image.Image:
        """The control image (edges, depth, pose...) for `image`, at its size.

        `resolution` is the short side the detector works at (A1111's `processor_res`; None: the
        preprocessor's default), `threshold_a`/`threshold_b` its two knobs (A1111's sliders:
        canny's low and high thresholds; None: the defaults). A knob out of range raises
        InvalidRequest naming it; a preprocessor without knobs ignores them.
        """
        ...


# Each kind and the protocol its models follow (the registry checks what a factory makes).
SIDE_KINDS: dict[str, type] = {"upscaler": Upscaler, "preprocessor": Preprocessor}
