"""The rows of ERNIE-Image (ErnieImagePipeline: ERNIE-Image and ERNIE-Image-Turbo, one class).

What the pipeline does that the row has to say (diffusers 0.42):

- its vae_scale_factor (2 ** the VAE's levels: 16) already counts the 2x2 latent patches, so
  sizes are multiples of 16, not 32 (`latent_patch=1`);
- guidance_scale is true CFG above 1 (default 4.0; Turbo runs at 1.0), the negative prompt is
  read only then; it has no max_sequence_length (the generic refusal);
- its prompt enhancer `pe` (with `pe_tokenizer`) is on by default (`use_pe=True`) and rewrites
  the prompt with a language model: off unless `prompt_enhance` asks (rules._enhancer);
- the enhancer samples its rewrite (temperature 0.6) from torch's global generator, not the
  call's, and so does the flow LCM sampler's noise (the pipeline passes no generator to
  scheduler.step): the same seed would give another image each time. The hook below seeds the
  global generator with the request's seed before each call. With n > 1 the later images draw on
  from there (one request always gives the same images; its second image is not the one its seed
  gives alone where the enhancer or LCM draws).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from localimg.backends.diffusers.families.family import Family
from localimg.errors import InvalidRequest

if TYPE_CHECKING:
    from localimg.requests import ImageRequest

ENHANCER_PARTS = ("pe", "pe_tokenizer")


def adjust(
    request: ImageRequest,
    pipe: Any,
    params: dict[str, Any],
    generation: dict[str, Any],
    kwargs: dict[str, Any],
) -> None:
    """The pipeline's own `use_pe` as a request extra means prompt_enhance (the extras would pass
    it on unchecked); the enhancer needs both its parts (the pipeline skips it silently without
    its tokenizer); the global generator is seeded so one seed makes one image (module doc)."""
    if "use_pe" in request.extra:
        kwargs["use_pe"] = _use_pe_extra(request, request.extra["use_pe"])
    if kwargs.get("use_pe"):
        missing = [part for part in ENHANCER_PARTS if getattr(pipe, part, None) is None]
        if missing:
            raise InvalidRequest(
                f"this ERNIE-Image model was loaded without its prompt enhancer "
                f"({' and '.join(missing)}); prompt_enhance needs a model folder or repo that "
                "has pe and pe_tokenizer",
                param="prompt_enhance",
            )
    if request.seed is not None:
        import torch

        torch.manual_seed(request.seed)


def _use_pe_extra(request: ImageRequest, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidRequest(
            f"use_pe must be true or false, got {value!r} (it switches the prompt enhancer, as "
            "prompt_enhance does)",
            param="use_pe",
        )
    other = request.extra.get("prompt_enhance")
    if other is not None and bool(other) != value:
        raise InvalidRequest(
            f"use_pe {str(value).lower()} disagrees with prompt_enhance {other!r} (both switch "
            "the prompt enhancer): send one",
            param="use_pe",
        )
    return value


ERNIE_IMAGE = Family(
    "ERNIE-Image",
    default_size=(1024, 1024),  # the pipeline's own default (no sample size in its configs)
    latent_patch=1,
    enhancer_kwarg="use_pe",
    enhancer_component="pe",
    adjust=adjust,
)

ROWS: dict[str, Family] = {"ErnieImagePipeline": ERNIE_IMAGE}
