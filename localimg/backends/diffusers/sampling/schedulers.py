"""LocalAI's `scheduler_type` names → diffusers scheduler classes and settings.

A scheduler is always built from the loaded model's own scheduler config (`from_config`), so the
model's beta schedule, prediction type and timestep spacing are kept; only the sampling algorithm
changes. `k_` means Karras sigmas, as in AUTOMATIC1111 and LocalAI.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from localimg.errors import InvalidRequest


@dataclass(frozen=True)
class SchedulerSpec:
    class_name: str
    label: str  # the AUTOMATIC1111 sampler name, written into image metadata
    settings: dict[str, Any] = field(default_factory=dict)


_KARRAS = {"use_karras_sigmas": True}
_DPMPP = {"algorithm_type": "dpmsolver++"}
_DPMPP_SDE = {"algorithm_type": "sde-dpmsolver++"}

SCHEDULERS: dict[str, SchedulerSpec] = {
    "ddim": SchedulerSpec("DDIMScheduler", "DDIM"),
    "pndm": SchedulerSpec("PNDMScheduler", "PLMS"),
    "heun": SchedulerSpec("HeunDiscreteScheduler", "Heun"),
    "unipc": SchedulerSpec("UniPCMultistepScheduler", "UniPC"),
    "euler": SchedulerSpec("EulerDiscreteScheduler", "Euler"),
    "euler_a": SchedulerSpec("EulerAncestralDiscreteScheduler", "Euler a"),
    "lms": SchedulerSpec("LMSDiscreteScheduler", "LMS"),
    "k_lms": SchedulerSpec("LMSDiscreteScheduler", "LMS Karras", _KARRAS),
    "dpm_2": SchedulerSpec("KDPM2DiscreteScheduler", "DPM2"),
    "k_dpm_2": SchedulerSpec("KDPM2DiscreteScheduler", "DPM2 Karras", _KARRAS),
    "dpm_2_a": SchedulerSpec("KDPM2AncestralDiscreteScheduler", "DPM2 a"),
    "k_dpm_2_a": SchedulerSpec("KDPM2AncestralDiscreteScheduler", "DPM2 a Karras", _KARRAS),
    "dpmpp_2m": SchedulerSpec("DPMSolverMultistepScheduler", "DPM++ 2M", _DPMPP),
    "k_dpmpp_2m": SchedulerSpec(
        "DPMSolverMultistepScheduler", "DPM++ 2M Karras", {**_DPMPP, **_KARRAS}
    ),
    "dpmpp_sde": SchedulerSpec("DPMSolverSinglestepScheduler", "DPM++ SDE", _DPMPP),
    "k_dpmpp_sde": SchedulerSpec(
        "DPMSolverSinglestepScheduler", "DPM++ SDE Karras", {**_DPMPP, **_KARRAS}
    ),
    "dpmpp_2m_sde": SchedulerSpec("DPMSolverMultistepScheduler", "DPM++ 2M SDE", _DPMPP_SDE),
    "k_dpmpp_2m_sde": SchedulerSpec(
        "DPMSolverMultistepScheduler", "DPM++ 2M SDE Karras", {**_DPMPP_SDE, **_KARRAS}
    ),
    "lcm": SchedulerSpec("LCMScheduler", "LCM"),
}

# LocalAI documents its default as `k_dpp_sde` (a typo of k_dpmpp_sde); YAML files copy it.
ALIASES = {
    "k_dpp_sde": "k_dpmpp_sde",
    "euler_ancestral": "euler_a",
    "dpm++_2m": "dpmpp_2m",
    "dpm_2m": "dpmpp_2m",
}


# Schedulers that fail inside diffusers below a number of steps (PNDM's PLMS warm-up needs 4).
MIN_STEPS = {"PNDMScheduler": 4}


def check_steps(scheduler: Any, steps: int, label: str) -> None:
    """Refuse a step count the scheduler cannot run, instead of a numpy error from inside it."""
    minimum = MIN_STEPS.get(type(scheduler).__name__, 1)
    if steps < minimum:
        raise InvalidRequest(
            f"the {label} scheduler needs at least {minimum} steps, got {steps}; "
            "raise steps or choose another scheduler",
            param="steps",
        )


def scheduler_names() -> list[str]:
    return list(SCHEDULERS)


def lookup(name: str, param: str = "scheduler") -> SchedulerSpec:
    """The spec for a name; an unknown name is an error listing the valid ones."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    spec = SCHEDULERS.get(key)
    if spec is None:
        close = difflib.get_close_matches(key, SCHEDULERS, n=2)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        raise InvalidRequest(
            f"unknown scheduler {name!r}{hint}; valid: {', '.join(SCHEDULERS)}", param=param
        )
    return spec


def build(name: str, base_config: Any) -> Any:
    """A new scheduler of the named kind, from the model's own scheduler config."""
    import diffusers

    spec = lookup(name)
    cls = getattr(diffusers, spec.class_name)
    scheduler = cls.from_config(base_config, **spec.settings)
    for key, value in spec.settings.items():
        if scheduler.config.get(key) != value:
            raise InvalidRequest(
                f"scheduler {name!r}: this diffusers version's {spec.class_name} does not "
                f"support {key}={value}",
                param="scheduler",
            )
    return scheduler
