"""Samplers on flow-matching models (Z-Image, FLUX, Qwen-Image, Chroma, Wan): the sampler names
localimg knows, mapped to diffusers' flow variants, and the flow `shift`.

A flow model's scheduler moves along sigmas in [0, 1] and predicts a velocity; diffusers' noise
samplers (EulerDiscreteScheduler, ...) cannot drive it, and their flow variants differ in what
`set_timesteps` takes. The pipelines call it with `sigmas` (a default linspace(1, 1/n, n)) and
`mu` (the resolution-dependent "dynamic" shift), so every flow scheduler localimg builds gets a
`set_timesteps` that takes both and turns them into what that class understands:

- `sigmas` go to schedulers that take custom sigmas (as an array: UniPC cannot shift a list);
  the others (Heun, DPM++) make the same default schedule themselves;
- `mu` goes to schedulers with dynamic shifting; for one without (FlowMatchHeun), exponential
  dynamic shifting at `mu` is exactly a fixed shift of e^mu (linear: of mu), which it gets.

`shift:<float>` (an option or a request extra) sets a fixed shift, replacing the model's dynamic
one where it has it: every pipeline here then schedules with that shift.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from localimg.errors import InvalidRequest


@dataclass(frozen=True)
class FlowSpec:
    class_name: str
    label: str
    shift_key: str  # the config key holding the fixed shift: "shift" or "flow_shift"
    settings: dict[str, Any] = field(default_factory=dict)


_FLOW_PREDICTION = {"use_flow_sigmas": True, "prediction_type": "flow_prediction"}

FLOW_SCHEDULERS: dict[str, FlowSpec] = {
    "euler": FlowSpec("FlowMatchEulerDiscreteScheduler", "Euler", "shift"),
    "heun": FlowSpec("FlowMatchHeunDiscreteScheduler", "Heun", "shift"),
    "dpmpp_2m": FlowSpec(
        "DPMSolverMultistepScheduler",
        "DPM++ 2M",
        "flow_shift",
        {"algorithm_type": "dpmsolver++", **_FLOW_PREDICTION},
    ),
    "unipc": FlowSpec("UniPCMultistepScheduler", "UniPC", "flow_shift", _FLOW_PREDICTION),
    "lcm": FlowSpec("FlowMatchLCMScheduler", "LCM", "shift"),
}
# Why a known name has no flow variant, shown with the refusal.
WHY_NOT = {
    "k_": "Karras sigmas are a noise-model schedule: diffusers' flow DPM++ and UniPC give wrong "
    "sigmas with them",
    "euler_a": "the flow Euler's stochastic sampling draws unseeded noise: same seed, other pixels",
}


def is_flow(config: Any) -> bool:
    """Whether a scheduler config belongs to a flow-matching model."""
    if config is None:
        return False
    name = str(config.get("_class_name", ""))
    return (
        name.startswith("FlowMatch")
        or bool(config.get("use_flow_sigmas"))
        or config.get("prediction_type") == "flow_prediction"
    )


def model_shift(config: Any) -> tuple[float, bool, str]:
    """The model's fixed shift, whether it shifts dynamically (by `mu`), and how."""
    name = str(config.get("_class_name", ""))
    key = "shift" if name.startswith("FlowMatch") else "flow_shift"
    shift = float(config.get(key) or 1.0)
    return (
        shift,
        bool(config.get("use_dynamic_shifting")),
        str(config.get("time_shift_type") or "exponential"),
    )


def names() -> list[str]:
    return list(FLOW_SCHEDULERS)


def lookup(name: str, pipeline: str) -> FlowSpec:
    """The flow spec for a sampler name; a name without one is refused with the ones that work."""
    from localimg.backends.diffusers.sampling import schedulers

    key = name.strip().lower()
    key = schedulers.ALIASES.get(key, key)
    spec = FLOW_SCHEDULERS.get(key)
    if spec is None:
        schedulers.lookup(name)  # an unknown name: the usual message
        why = WHY_NOT.get("k_" if key.startswith("k_") else key, "diffusers has no flow variant")
        raise InvalidRequest(
            f"scheduler {name!r} does not work on {pipeline}, a flow-matching model ({why}); "
            f"use one of: {', '.join(FLOW_SCHEDULERS)}",
            param="scheduler",
        )
    return spec


def build(spec: FlowSpec, base_config: Any, shift: float | None = None) -> Any:
    """A flow scheduler of `spec`'s kind from the model's scheduler config; `shift` fixes the
    shift (no dynamic shifting)."""
    import inspect

    import diffusers

    base_shift, dynamic, shift_type = model_shift(base_config)
    own: dict[str, Any] = {**spec.settings, spec.shift_key: base_shift}
    if shift is not None:
        own[spec.shift_key] = float(shift)
        dynamic = False
    cls = getattr(diffusers, spec.class_name)
    accepted = set(inspect.signature(cls.__init__).parameters)
    if "use_dynamic_shifting" in accepted:
        own["use_dynamic_shifting"] = dynamic
    # Only the keys this class has: from_config warns about every other one.
    plain = {k: v for k, v in dict(base_config).items() if k in accepted and k not in own}
    scheduler = cls.from_config(plain, **own)
    adapt(scheduler, dynamic, shift_type)
    return scheduler


def with_shift(scheduler: Any, shift: float) -> Any:
    """The model's own scheduler class again, with a fixed `shift`."""
    name = type(scheduler).__name__
    for spec in FLOW_SCHEDULERS.values():
        if spec.class_name == name:
            return build(
                FlowSpec(spec.class_name, spec.label, spec.shift_key),
                scheduler.config,
                shift,
            )
    raise InvalidRequest(
        f"shift: the model's scheduler {name} has no flow shift to set", param="shift"
    )


def adapt(scheduler: Any, dynamic: bool, shift_type: str) -> None:
    """Give the scheduler a `set_timesteps` taking the pipelines' `sigmas` and `mu` (module doc)."""
    import inspect

    import numpy as np

    original = scheduler.set_timesteps
    accepts = set(inspect.signature(original).parameters)

    def set_timesteps(
        num_inference_steps: int | None = None,
        device: Any = None,
        sigmas: Any = None,
        mu: float | None = None,
        timesteps: Any = None,
    ) -> Any:
        kwargs: dict[str, Any] = {}
        if timesteps is not None:
            if "timesteps" not in accepts:
                raise InvalidRequest(
                    f"{type(scheduler).__name__} takes no custom timesteps", param="timesteps"
                )
            kwargs["timesteps"] = timesteps
        if sigmas is not None:
            if "sigmas" in accepts:
                kwargs["sigmas"] = np.asarray(sigmas, dtype=np.float32)
            else:
                count = len(sigmas)
                if not np.allclose(sigmas, np.linspace(1.0, 1 / count, count), atol=1e-6):
                    raise InvalidRequest(
                        f"{type(scheduler).__name__} takes no custom sigmas; use euler, unipc "
                        "or lcm with them",
                        param="sigmas",
                    )
                num_inference_steps = num_inference_steps or count
        if mu is not None and dynamic:
            if "mu" in accepts:
                kwargs["mu"] = mu
            else:
                fixed = math.exp(mu) if shift_type == "exponential" else mu
                scheduler.register_to_config(shift=fixed)
        if "sigmas" in kwargs and "num_inference_steps" in accepts:
            return original(device=device, **kwargs)
        return original(num_inference_steps, device, **kwargs)

    scheduler.set_timesteps = set_timesteps
