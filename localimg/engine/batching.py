"""Batching: queued requests that differ only in prompt and seed run as one pipeline call.

A denoiser step on a batch of N latents costs less than N steps of one (the weights are read once,
the matrix products are larger), so under load `--max-batch N` raises throughput. Each request
keeps its own prompt, negative prompt, seeds and progress events, and its images come from its own
seeded generator. On the CPU they are the images it would get alone, bit for bit: the few layers
whose rounding depends on the batch size run per sample (backends/batch_invariance.py). On a GPU
the libraries pick kernels by shape, so a batched image may differ from a lone one by float
rounding. Batching stays off (`--max-batch 1`) unless asked for: a batch of N needs about N times
the activation memory of one image, and the first request of a batch finishes later than it
would alone (the batch as a whole finishes sooner).

Only plain text-to-image requests batch: anything with an input image, a mask, video frames,
extra pipeline keywords, previews, ControlNet units or a step cache of its own runs alone;
requests batch only with others asking for the same `<lora:name:weight>` tags (they change the
model for the whole call).
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING

from localimg.config.options import PROMPT_ENHANCE_KEYS
from localimg.prompts.a1111 import has_syntax
from localimg.prompts.lora_tags import tag_key

if TYPE_CHECKING:
    from localimg.config import ModelConfig
    from localimg.requests import ImageRequest


def enhances_prompts(config: ModelConfig) -> bool:
    """Whether the model's YAML turns its prompt enhancer on (its requests then run alone: it
    samples its rewrite per call, so a batched image would not be the one the request gets
    alone)."""
    options = config.parsed_options()
    on = ("true", "1", "yes")
    return any(str(options.get(key, "")).lower() in on for key in PROMPT_ENHANCE_KEYS)


def batch_key(request: ImageRequest) -> Hashable | None:
    """Requests with equal keys can share one pipeline call; None: this one runs alone.

    Computed on the request as submitted (before YAML defaults are merged, which are the same for
    every request of a model), so the queue can be searched without the model loaded.
    """
    if (
        request.init_image is not None
        or request.mask is not None
        or request.num_frames is not None
        or request.fps is not None
        or request.extra
        or request.previews  # previews are made per call, from its own latents
        or request.cache is not None  # a step cache follows one call's own denoising
        or request.cache_options
        or request.controls  # ControlNet units pick their own pipeline and control maps
        or request.hires is not None  # a hires fix runs two passes of its own
        or request.mode not in (None, "txt2img")
        or has_syntax(request.prompt)  # A1111 weights are encoded per prompt
        or has_syntax(request.negative_prompt)
    ):
        return None
    has_negative = request.negative_prompt is not None or "|" in request.prompt
    return (
        request.width,
        request.height,
        request.steps,
        request.cfg_scale,
        request.scheduler,
        request.clip_skip,
        request.strength,
        has_negative,  # "no negative" and "" differ for some pipelines (SDXL zeroes the former)
        tag_key(request.prompt, request.negative_prompt),  # <lora:...> tags change the model
    )


def take_compatible(
    first: ImageRequest, queued: Sequence[ImageRequest], max_images: int
) -> list[int]:
    """Indexes into `queued` of the requests that join `first`'s batch, in queue order.

    The batch holds at most `max_images` images in all (a request of n images counts n); a request
    that would overflow it is left for the next batch, and so are all that differ.
    """
    key = batch_key(first)
    if key is None or max_images <= first.n:
        return []
    room = max_images - first.n
    chosen = []
    for index, request in enumerate(queued):
        if request.n <= room and batch_key(request) == key:
            chosen.append(index)
            room -= request.n
            if room == 0:
                break
    return chosen


class AllCancelled(threading.Event):
    """A cancel flag for a batch: set only when every job in it is cancelled.

    A job cancelled alone keeps running inside its batch (its images are dropped and it answers
    Cancelled); stopping the pipeline would cost the others their results.
    """

    def __init__(self, events: Sequence[threading.Event]) -> None:
        super().__init__()
        self._events = list(events)

    def is_set(self) -> bool:
        return all(event.is_set() for event in self._events)
