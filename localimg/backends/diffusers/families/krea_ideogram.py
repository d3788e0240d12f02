"""The rows of Krea 2 and Ideogram 4 (diffusers 0.42's Krea2Pipeline and Ideogram4Pipeline).

Krea 2 is a flow model with classifier-free guidance in its own convention: `guidance_scale` is
the `g` of cond + g x (cond - uncond), so guidance runs above 0 (not 1) and 0 turns it off; the
negative prompt is "" unless one is given. Its few-step distilled (turbo) checkpoint says so with
`is_distilled` in model_index.json and runs without guidance (rules.is_step_distilled).

Ideogram 4 guides with a second, unconditional transformer (v = g x v_cond + (1 - g) x v_uncond,
the usual CFG scale), so it has no negative prompt. The pipeline takes either a constant
`guidance_scale` or a per-step `guidance_schedule` (never both); its default schedule (7.0, and
3.0 for the last three "polish" steps) is written for its default 48 steps. A cfg_scale from the
request or the YAML is the constant; without one (the backend then has no default cfg: the merge
leaves cfg_scale unset) the model's own schedule runs, resampled to the requested step count.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from localimg.backends.diffusers.families.family import Family
from localimg.errors import InvalidRequest

if TYPE_CHECKING:
    from localimg.requests import ImageRequest

# Ideogram 4 sets its own sigmas (a resolution-aware logit-normal schedule): these samplers make
# their own schedule and take no custom sigmas (sampling/flow.py).
IDEOGRAM_NO_SIGMAS = frozenset({"heun", "dpmpp_2m"})


def fitted_schedule(schedule: Sequence[float], steps: int) -> list[float]:
    """`schedule` (one weight per step of its own length) at `steps` steps: each step takes the
    weight at its centre's position in the original, so the same share of the denoising keeps the
    same guidance (48 steps: unchanged; 8: the last step polishes; under 8: none does)."""
    count = len(schedule)
    return [float(schedule[min(count - 1, int((i + 0.5) * count / steps))]) for i in range(steps)]


def adjust_ideogram(
    request: ImageRequest,
    pipe: Any,
    params: dict[str, Any],
    generation: dict[str, Any],
    kwargs: dict[str, Any],
) -> None:
    """Guidance as a constant or the model's schedule, and the refusals the pipeline would make
    late (or not at all: a temperature without the enhancer would be ignored)."""
    sampler = (request.scheduler or "").strip().lower()
    if sampler in IDEOGRAM_NO_SIGMAS:
        raise InvalidRequest(
            f"Ideogram 4 sets its own sigmas, which the {sampler} sampler cannot take; use "
            "euler (its own), unipc or lcm",
            param="scheduler",
        )
    _guidance(request, int(request.steps or params["num_inference_steps"].default), params, kwargs)
    _enhancer_extras(request, pipe, kwargs)


def _guidance(
    request: ImageRequest, steps: int, params: dict[str, Any], kwargs: dict[str, Any]
) -> None:
    """cfg_scale (request or YAML) → the constant; a schedule in the extras → that schedule;
    neither → the pipeline's own schedule fitted to `steps`."""
    extra = request.extra
    if "guidance_scale" in extra:
        raise InvalidRequest(
            "Ideogram 4 takes its constant guidance scale as cfg_scale; remove guidance_scale",
            param="guidance_scale",
        )
    if "guidance_schedule" in extra:
        if request.cfg_scale is not None:
            raise InvalidRequest(
                "guidance_schedule and cfg_scale exclude each other on Ideogram 4 (a schedule "
                "or one constant scale); remove cfg_scale here and from the model's YAML",
                param="guidance_schedule",
            )
        given = extra["guidance_schedule"]
        if not isinstance(given, list | tuple) or len(given) != steps:
            raise InvalidRequest(
                f"guidance_schedule must be a list of one guidance scale per step ({steps})",
                param="guidance_schedule",
            )
        kwargs["guidance_scale"] = None
    elif request.cfg_scale is None:
        kwargs["guidance_scale"] = None
        kwargs["guidance_schedule"] = fitted_schedule(params["guidance_schedule"].default, steps)
    else:
        kwargs["guidance_schedule"] = None  # the constant scale rules.family_kwargs set


def _enhancer_extras(request: ImageRequest, pipe: Any, kwargs: dict[str, Any]) -> None:
    """The pipeline's own enhancer keywords given as extras: `prompt_upsampling` (which wins over
    prompt_enhance, being the last word on the call) needs the head; its temperature needs it on."""
    extra = request.extra
    enhancing = bool(extra.get("prompt_upsampling", kwargs.get("prompt_upsampling")))
    if "prompt_upsampling" in extra and enhancing and pipe.prompt_enhancer_head is None:
        raise InvalidRequest(
            "this Ideogram 4 model was loaded without its prompt enhancer "
            "(prompt_enhancer_head); prompt_upsampling needs a model folder or repo that has it",
            param="prompt_upsampling",
        )
    if "prompt_upsampling_temperature" in extra and not enhancing:
        raise InvalidRequest(
            "prompt_upsampling_temperature applies only with the prompt enhancer on "
            "(prompt_enhance:true)",
            param="prompt_upsampling_temperature",
        )


KREA2 = Family("Krea 2", cfg_on=0.0, default_size=(1024, 1024))
IDEOGRAM4 = Family(
    "Ideogram 4",
    negative=False,
    default_size=(2048, 2048),
    enhancer_kwarg="prompt_upsampling",
    enhancer_component="prompt_enhancer_head",
    cfg_schedule=True,
    adjust=adjust_ideogram,
)

ROWS: dict[str, Family] = {
    "Krea2Pipeline": KREA2,
    "Ideogram4Pipeline": IDEOGRAM4,
}
