"""Sampler and schedule names of stable-diffusion.cpp, the diffusers-style names mapped to them,
and the loaded model's default sample method.

stable-diffusion.cpp splits what diffusers calls a scheduler in two: a sample method (`sampler`:
euler, dpm++2m, ...) and a sigma schedule (`scheduler`: discrete, karras, ...). A request's
`scheduler` field may name either, or one of the diffusers-style names of `schedulers.py`; those
are mapped where stable-diffusion.cpp has the same algorithm (`k_` = Karras sigmas) and refused,
with the alternatives listed, where it has not. Nothing here imports the native library.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from localimg.backends.diffusers.sampling import schedulers
from localimg.errors import InvalidRequest

# stable-diffusion.cpp's sample methods → the AUTOMATIC1111-style label written into metadata.
SAMPLERS: dict[str, str] = {
    "euler": "Euler",
    "euler_a": "Euler a",
    "heun": "Heun",
    "dpm2": "DPM2",
    "dpm++2s_a": "DPM++ 2S a",
    "dpm++2m": "DPM++ 2M",
    "dpm++2mv2": "DPM++ 2M v2",
    "ipndm": "iPNDM",
    "ipndm_v": "iPNDM_v",
    "lcm": "LCM",
    "ddim_trailing": "DDIM trailing",
    "tcd": "TCD",
    "res_multistep": "Res Multistep",
    "res_2s": "Res 2s",
    "er_sde": "ER-SDE",
}

# stable-diffusion.cpp's sigma schedules → label.
SCHEDULES: dict[str, str] = {
    "discrete": "Discrete",
    "karras": "Karras",
    "exponential": "Exponential",
    "ays": "Align Your Steps",
    "gits": "GITS",
    "sgm_uniform": "SGM Uniform",
    "simple": "Simple",
    "smoothstep": "Smoothstep",
    "kl_optimal": "KL Optimal",
    "lcm": "LCM",
    "bong_tangent": "Bong Tangent",
}

# diffusers-style names (schedulers.SCHEDULERS) with the same algorithm in stable-diffusion.cpp.
# ddim: stable-diffusion.cpp's only DDIM uses trailing timestep spacing.
DIFFUSERS_EQUIVALENTS: dict[str, tuple[str, str | None]] = {
    "euler": ("euler", None),
    "euler_a": ("euler_a", None),
    "heun": ("heun", None),
    "dpm_2": ("dpm2", None),
    "k_dpm_2": ("dpm2", "karras"),
    "dpmpp_2m": ("dpm++2m", None),
    "k_dpmpp_2m": ("dpm++2m", "karras"),
    "ddim": ("ddim_trailing", None),
}
# Aliases people write for stable-diffusion.cpp samplers.
SAMPLER_ALIASES = {"euler_ancestral": "euler_a", "dpmpp2m": "dpm++2m", "dpm++_2m": "dpm++2m"}


@dataclass(frozen=True)
class Sampling:
    """A resolved name: a sample method, a schedule, or both (None: not set by this name)."""

    method: str | None = None
    schedule: str | None = None


def valid_names() -> list[str]:
    return [*SAMPLERS, *(s for s in SCHEDULES if s not in SAMPLERS), *DIFFUSERS_EQUIVALENTS]


def resolve(name: str, param: str = "scheduler") -> Sampling:
    """Resolve a sampler, schedule or diffusers-style name; refuse unknown or unmappable ones."""
    key = name.strip().lower()
    key = SAMPLER_ALIASES.get(key, key)
    if key in SAMPLERS:
        return Sampling(method=key)
    if key in SCHEDULES:
        return Sampling(schedule=key)
    diffusers_key = schedulers.ALIASES.get(key, key)
    if diffusers_key in DIFFUSERS_EQUIVALENTS:
        method, schedule = DIFFUSERS_EQUIVALENTS[diffusers_key]
        return Sampling(method=method, schedule=schedule)
    if diffusers_key in schedulers.SCHEDULERS:
        raise InvalidRequest(
            f"{param} {name!r} (a diffusers scheduler) has no equivalent in stable-diffusion.cpp; "
            f"its samplers are {', '.join(SAMPLERS)}; diffusers-style names it maps: "
            f"{', '.join(DIFFUSERS_EQUIVALENTS)}",
            param=param,
        )
    close = difflib.get_close_matches(key, valid_names(), n=2)
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    raise InvalidRequest(
        f"unknown {param} {name!r}{hint}; stable-diffusion.cpp samplers: {', '.join(SAMPLERS)}; "
        f"schedules: {', '.join(SCHEDULES)}; diffusers-style names: "
        f"{', '.join(DIFFUSERS_EQUIVALENTS)}",
        param=param,
    )


def resolve_schedule(name: str, param: str = "scheduler") -> str:
    """A name that must be a schedule (the `scheduler` option of a ggml YAML)."""
    key = name.strip().lower()
    if key not in SCHEDULES:
        raise InvalidRequest(
            f"unknown {param} {name!r}; stable-diffusion.cpp schedules: {', '.join(SCHEDULES)}",
            param=param,
        )
    return key


def label(method: str, schedule: str | None) -> str:
    """`DPM++ 2M Karras`: the sampler's label, then the schedule's unless it is the plain one."""
    text = SAMPLERS.get(method, method)
    if schedule and schedule != "discrete":
        text = f"{text} {SCHEDULES.get(schedule, schedule)}"
    return text


def default_method(sd: Any, model: Any) -> str:
    """The sample method the loaded model uses when none is named (it depends on the model)."""
    from stable_diffusion_cpp import stable_diffusion as wrapper

    value = int(sd.sd_get_default_sample_method(model.model))
    table: dict[str, Any] = wrapper.SAMPLE_METHOD_MAP
    names = {int(v): k for k, v in table.items() if v is not None}
    return names.get(value, "default")
