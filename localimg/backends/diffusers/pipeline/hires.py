"""The diffusers backend's hires fix with a latent upscaler (A1111's "Latent" modes), in one call.

Per image: the first pass at the asked size with `output_type="latent"`; its latents resized by
`torch.nn.functional.interpolate` (A1111's mode: bilinear, nearest, nearest-exact, bicubic, with
or without antialias) to the final size over the VAE's scale factor; then the family's img2img
pipeline (a `from_pipe` sibling over the loaded modules, tasks.py) given those latents as `image`
at the hires denoise. SD, SDXL and SD3 img2img pipelines take latents whose channel count is the
VAE's as they are; a family whose first pass gives other latents (packed FLUX-style sequences)
has its first pass decoded, resized and encoded again by its img2img pipeline instead. Families
without an img2img pipeline (reference edits, video) are refused before any step runs.

A pixel upscaler never reaches here: the engine's slot runs those two passes (engine/hires.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from localimg.backends.base import ProgressCallback
from localimg.errors import InvalidRequest
from localimg.request_parts import LATENT_UPSCALERS
from localimg.requests import ImageRequest, ImageResult, ProgressEvent, hires_second_pass

if TYPE_CHECKING:
    from PIL.Image import Image

# PIL's filter for each latent mode, where the latents cannot be resized themselves.
PIXEL_FILTERS = {"nearest": 0, "nearest-exact": 0, "bilinear": 2, "bicubic": 3}


def placeholder(request: ImageRequest) -> Image:
    """A blank image at the hires size: the second pass's request needs an input image."""
    from PIL import Image as PILImage

    hires = request.hires
    assert hires is not None
    return PILImage.new("RGB", (hires.width or 8, hires.height or 8))


def pass_steps(request: ImageRequest) -> tuple[int, int]:
    """Steps of the first pass, and those the second runs (img2img: int(steps * denoise))."""
    hires = request.hires
    assert hires is not None
    second = hires.steps or 0
    return request.steps or 1, min(second, int(second * (hires.denoise or 0)))


def packed(pipe: Any) -> bool:
    """Whether a pipeline's latents are packed sequences (FLUX-style), not a latent image."""
    return hasattr(pipe, "_pack_latents")


def resize_latents(latents: Any, request: ImageRequest, pipe: Any) -> Any:
    """The first pass's latents at the final size, by A1111's latent mode; None when they are
    not an image of the VAE's latent channels (packed sequences): decode and resize instead."""
    import torch.nn.functional as functional

    hires = request.hires
    assert hires is not None
    vae = getattr(pipe, "vae", None)
    channels = getattr(getattr(vae, "config", None), "latent_channels", None)
    if getattr(latents, "ndim", 0) != 4 or channels is None or latents.shape[1] != channels:
        return None
    factor = int(getattr(pipe, "vae_scale_factor", 8))
    size = ((hires.height or 8) // factor, (hires.width or 8) // factor)
    mode, antialias = LATENT_UPSCALERS.get(hires.upscaler or "latent", ("bilinear", False))
    if mode in ("nearest", "nearest-exact"):
        return functional.interpolate(latents, size=size, mode=mode)
    return functional.interpolate(
        latents, size=size, mode=mode, align_corners=False, antialias=antialias
    )


class LatentHires:
    """Mixed into the diffusers backend: the latent hires fix and the img2img check the engine's
    slot runs before a pixel upscaler's first pass (`check_hires`)."""

    # Provided by the backend class (backend.py).
    _prepare: Callable[..., Any]
    _caches: Any
    _defaults: Any

    def check_hires(self, request: ImageRequest) -> None:
        """Refuse, before any step runs, a hires fix on a model without an img2img pipeline."""
        self._second_pass(request)

    def _second_pass(self, request: ImageRequest) -> Any:
        second = hires_second_pass(request, placeholder(request), request.seed or 0)
        try:
            prepared = self._prepare(second)
        except InvalidRequest as exc:
            raise InvalidRequest(
                f"the hires fix needs an img2img pipeline for its second pass: {exc}",
                param="hires",
            ) from None
        if "image" not in prepared.params or "strength" not in prepared.params:
            raise InvalidRequest(
                f"the hires fix needs an img2img pipeline for its second pass; "
                f"{type(prepared.pipe).__name__} takes no image to denoise again",
                param="hires",
            )
        return prepared

    def generate_hires(
        self, request: ImageRequest, progress: ProgressCallback, cancel: threading.Event
    ) -> ImageResult:
        """Both passes of a latent hires fix, image by image."""
        from dataclasses import replace

        import torch

        from localimg.backends.diffusers.decode.previews import StepPreviews
        from localimg.backends.diffusers.pipeline.run import run_call

        hires = request.hires
        assert hires is not None
        second = self._second_pass(request)  # the refusal comes before the first step
        first = self._prepare(replace(request, hires=None))
        steps, each = pass_steps(request)
        total = request.n * (steps + each)
        passes = (
            (
                first,
                StepPreviews(
                    first.pipe, request.previews, steps, request.width or 0, request.height or 0
                ),
            ),
            (
                second,
                StepPreviews(
                    second.pipe, request.previews, each, hires.width or 0, hires.height or 0
                ),
            ),
        )
        images: list[Any] = []
        oom = f"out of memory at {hires.width}x{hires.height}: try a smaller hires size"
        for index, seed in enumerate(request.seeds):
            base = index * (steps + each)
            image: Any = None
            for number, (prepared, shows) in enumerate(passes):
                offset, count = (base, steps) if number == 0 else (base + steps, each)
                call = dict(prepared.kwargs)
                call["generator"] = torch.Generator("cpu").manual_seed(seed)
                call["callback_on_step_end"] = self._on_step(
                    (offset, count, total, index), number == 0, shows, progress, cancel
                )
                if number == 0:
                    call["output_type"] = "pil" if packed(prepared.pipe) else "latent"
                else:
                    call["image"] = image
                cache = self._caches.plan_for(prepared.pipe, request)
                context = self._caches.applied(prepared.pipe, cache, request)
                output = run_call(prepared.pipe, call, oom, cancel, context)
                image = output.images
                if number == 0:
                    image = self._upscaled(image, request, prepared, call, cancel)
            progress(
                ProgressEvent("decode", step=base + steps + each, total=total, image_index=index)
            )
            images.extend(image)
        return ImageResult(images=images, seeds=request.seeds, scheduler=second.label)

    def _upscaled(
        self, latents: Any, request: ImageRequest, prepared: Any, call: dict[str, Any], cancel: Any
    ) -> Any:
        """The first pass's output at the final size: its latents resized, or (a family whose
        latents are packed sequences) its image resized in pixels by the mode's filter."""
        hires = request.hires
        assert hires is not None
        if call.get("output_type") == "pil":
            mode = LATENT_UPSCALERS.get(hires.upscaler or "latent", ("bilinear", False))[0]
            size = (hires.width or 8, hires.height or 8)
            return [image.resize(size, PIXEL_FILTERS.get(mode, 2)) for image in latents]
        resized = resize_latents(latents, request, prepared.pipe)
        if resized is None:
            raise InvalidRequest(
                f"{type(prepared.pipe).__name__} gives latents the latent hires fix cannot "
                "resize; use a pixel upscaler (lanczos)",
                param="hires_upscaler",
            )
        return resized

    @staticmethod
    def _on_step(
        where: tuple[int, int, int, int],
        first: bool,
        shows: Any,
        progress: ProgressCallback,
        cancel: threading.Event,
    ) -> Callable[..., Any]:
        from localimg.backends.diffusers.pipeline import tasks

        offset, count, total, index = where

        def on_step(p: Any, step: int, _t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            # An img2img scheduler keeps every timestep while the loop runs the last `count`.
            done = tasks.steps_done(p, step, count) if first else min(step + 1, count)
            preview = shows.at(index, done, tensors)
            event = ProgressEvent(
                "step", step=offset + done, total=total, image_index=index, preview=preview
            )
            progress(event)
            if cancel.is_set():
                p._interrupt = True
            return tensors

        return on_step
