"""A1111's hires fix with a pixel upscaler, run by the engine's slot over two backend calls.

A latent upscaler runs inside a backend that says so (`Capabilities.latent_hires`): the latents
of the first pass are resized and denoised again in one generate call. Every other upscaler
(lanczos, bicubic, nearest, a model in `upscale_models/`) is a side model the engine holds, so
the slot runs the fix: pass 1 is the request without its hires fix at the first size; each image
is upscaled to the final size through the engine's side models; pass 2 is one img2img request per
image at the hires denoise, steps, size, prompts and that image's seed. ControlNet units steer
the first pass only: their maps are drawn for the first size, and the second pass keeps the
composition anyway (it starts from the upscaled image).

In a worker process the child runs pass 1 (it has the model, not the upscalers) and hands it back
with the merged request; the parent upscales and sends the pass-2 requests to the child as jobs
of their own. Progress counts steps over both passes; the result is the merged request's (hires
set, the first pass's size), its images the second pass's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from localimg.backends.base import capabilities_of
from localimg.engine.job import Job, ProgressListener
from localimg.engine.merge import text_to_image
from localimg.errors import Cancelled, InvalidRequest
from localimg.request_parts import HIRES_LATENT, LATENT_UPSCALERS, HiresFix, is_latent_upscaler
from localimg.requests import ImageRequest, ImageResult, ProgressEvent, hires_second_pass

if TYPE_CHECKING:
    from PIL.Image import Image

    from localimg.config import ModelConfig

# The engine's upscale call: image, upscaler name, scale → the enlarged image.
Upscale = Callable[["Image", str, float], "Image"]
# One pass through the slot (in process, or a worker's child): a job → its result.
RunPass = Callable[[Job], ImageResult]


def upscaler_of(request: ImageRequest, config: ModelConfig) -> str | None:
    """The upscaler a submitted request's hires fix will use, lowercased (None: no hires fix),
    as the merge will decide it (the request's, else the YAML's, else latent)."""
    asked, yaml = request.hires, config.hires
    if asked is None and (yaml is None or not yaml.enabled or not text_to_image(request)):
        return None
    if asked is not None and not asked.enabled:
        return None
    name = asked.upscaler if asked is not None and asked.upscaler else None
    name = name or (yaml.upscaler if yaml is not None and yaml.upscaler else None)
    return (name or HIRES_LATENT).strip().lower()


def check_request(
    request: ImageRequest, config: ModelConfig, backend_cls: type, upscalers: list[str]
) -> None:
    """Refuse, before queueing, a hires fix that cannot run: after an input image (it follows a
    text-to-image pass), a latent upscaler on a backend that has none, an unknown upscaler."""
    name = upscaler_of(request, config)
    if name is None:
        return
    if not text_to_image(request):
        raise InvalidRequest(
            "the hires fix follows a text-to-image pass; this request has an input image, is "
            "an edit or makes a video (turn the hires fix off)",
            param="hires",
        )
    latent = ", ".join(f"{mode!r}" for mode in LATENT_UPSCALERS)
    if is_latent_upscaler(name):
        if not capabilities_of(backend_cls).latent_hires:
            raise InvalidRequest(
                f"the {getattr(backend_cls, 'name', 'model')} engine has no latent hires fix; "
                f"use an upscaler: {', '.join(upscalers)}",
                param="hires_upscaler",
            )
        return
    if name not in {known.lower() for known in upscalers}:
        raise InvalidRequest(
            f"no hires upscaler named {name!r}; known: {latent}, {', '.join(upscalers)}",
            param="hires_upscaler",
        )


def in_slot(request: ImageRequest, backend_cls: type) -> bool:
    """Whether the slot runs this merged request's hires fix (else the backend does, or none)."""
    hires = request.hires
    if hires is None:
        return False
    latent = is_latent_upscaler(hires.upscaler or HIRES_LATENT)
    return not (latent and capabilities_of(backend_cls).latent_hires)


def second_pass_steps(hires: HiresFix) -> int:
    """The steps an img2img pass at `denoise` runs (diffusers and A1111 alike)."""
    steps = hires.steps or 0
    return min(steps, int(steps * (hires.denoise or 0)))


def total_steps(request: ImageRequest) -> int:
    """Steps over both passes of every image (pass 2 only counts the steps it runs)."""
    second = second_pass_steps(request.hires) if request.hires is not None else 0
    return request.n * ((request.steps or 0) + second)


def first_pass(
    request: ImageRequest, emit: ProgressListener
) -> tuple[ImageRequest, ProgressListener]:
    """Pass 1 of a merged request: the request without its hires fix, and a listener counting
    its steps against the total of both passes (its own "done" dropped)."""
    total = total_steps(request)

    def listener(event: ProgressEvent) -> None:
        if event.phase == "done":
            return
        if event.phase in ("step", "decode"):
            event = replace(event, total=total)
        emit(event)

    return replace(request, hires=None), listener


def shifted(emit: ProgressListener, offset: int, total: int, index: int) -> ProgressListener:
    """A pass-2 job's listener: its steps after `offset`, over `total`, for image `index`."""

    def listener(event: ProgressEvent) -> None:
        if event.phase in ("queued", "done"):
            return
        if event.phase in ("step", "decode"):
            step = min(total, offset + event.step)
            event = replace(event, step=step, total=total, image_index=index)
        emit(event)

    return listener


def pending(result: ImageResult, backend_cls: type) -> bool:
    """Whether `result` is a first pass whose second pass the slot still has to run."""
    request = result.request
    return request is not None and in_slot(request, backend_cls)


def enlarge(image: Image, hires: HiresFix, upscale: Upscale) -> Image:
    """`image` upscaled to the final size (the upscaler's scale, then exact by lanczos)."""
    from PIL import Image as PILImage

    size = (hires.width or image.width, hires.height or image.height)
    scale = max(size[0] / image.width, size[1] / image.height)
    big = upscale(image, hires.upscaler or "lanczos", scale)
    if big.size != size:
        big = big.resize(size, PILImage.Resampling.LANCZOS)
    return big.convert("RGB")


def finish(job: Job, first: ImageResult, run: RunPass, upscale: Upscale) -> ImageResult:
    """Pass 2 of a first pass: each image upscaled and denoised again as a job of its own
    (sharing `job`'s cancel event); a failure fails the request, nothing half-kept."""
    request = first.request
    assert request is not None and request.hires is not None
    hires = request.hires
    total, each = total_steps(request), second_pass_steps(hires)
    done_first = request.n * (request.steps or 0)
    images: list[Image] = []
    upscaling = inference = 0.0
    for index, (image, seed) in enumerate(zip(first.images, first.seeds, strict=True)):
        if job.cancel_event.is_set():
            raise Cancelled("the request was cancelled")
        began = time.monotonic()
        big = enlarge(image, hires, upscale)
        upscaling += time.monotonic() - began
        sub = Job(
            id=f"{job.id}-hires-{index + 1}",
            model=job.model,
            request=hires_second_pass(request, big, seed),
            cancel_event=job.cancel_event,
        )
        sub.listeners.append(shifted(job.emit, done_first + index * each, total, index))
        began = time.monotonic()
        second = run(sub)
        inference += time.monotonic() - began
        images.extend(second.images)
        first.ignored = sorted({*first.ignored, *second.ignored})
    if job.cancel_event.is_set():
        raise Cancelled("the request was cancelled")
    first.images = images
    first.timings = {**first.timings, "hires_upscale": upscaling, "hires_inference": inference}
    first.timings["inference"] = first.timings.get("inference", 0.0) + upscaling + inference
    job.emit(ProgressEvent("done", step=total, total=total))
    return first
