"""AUTOMATIC1111's sampler and scheduler names → what localimg's engines call them.

A1111 (1.9 and later) names a sampling algorithm (`sampler_name`: "Euler a", "DPM++ 2M", ...)
and, apart from it, a sigma schedule (`scheduler`: "Karras", "Exponential", ...); older clients
send both in one name ("DPM++ 2M Karras"), which A1111 still splits, and so does this module.

localimg's two engines take different vocabularies, so the server needs to know which one runs
the model (its YAML `backend`; the server never imports a backend):

- diffusers takes one scheduler name per request (`euler_a`, `k_dpmpp_2m` = Karras sigmas);
- stable-diffusion.cpp takes a sample method (`extra["sampler"]`) and a schedule
  (`scheduler`) separately, so any of its methods combines with any of its schedules.

A name with no equivalent on the model's engine is refused with the names that work there.
`Automatic` (and `Normal`/`Uniform`, the plain timestep schedule) leave the model's own schedule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from localimg.config import GGML, builtin_backend
from localimg.errors import InvalidRequest

Engine = Literal["diffusers", "ggml"]


def engine_of(backend: str) -> Engine:
    """Which vocabulary a model's backend takes; plugins get the diffusers-style names."""
    return "ggml" if builtin_backend(backend) == GGML else "diffusers"


@dataclass(frozen=True)
class Sampler:
    name: str  # A1111's name
    aliases: tuple[str, ...]
    diffusers: str | None  # the diffusers-style scheduler name (schedulers.py), None: none
    ggml: str | None  # the stable-diffusion.cpp sample method, None: none
    options: dict[str, Any] = field(default_factory=dict)  # A1111's `options` of the sampler


SAMPLERS: tuple[Sampler, ...] = (
    Sampler("DPM++ 2M", ("k_dpmpp_2m",), "dpmpp_2m", "dpm++2m"),
    Sampler("DPM++ SDE", ("k_dpmpp_sde",), "dpmpp_sde", None, {"second_order": True}),
    Sampler("DPM++ 2M SDE", ("k_dpmpp_2m_sde",), "dpmpp_2m_sde", None, {"brownian_noise": True}),
    Sampler("DPM++ 2S a", ("k_dpmpp_2s_a",), None, "dpm++2s_a", {"uses_ensd": True}),
    Sampler(
        "Euler a", ("k_euler_a", "k_euler_ancestral"), "euler_a", "euler_a", {"uses_ensd": True}
    ),
    Sampler("Euler", ("k_euler",), "euler", "euler"),
    Sampler("LMS", ("k_lms",), "lms", None),
    Sampler("Heun", ("k_heun",), "heun", "heun", {"second_order": True}),
    Sampler("DPM2", ("k_dpm_2",), "dpm_2", "dpm2", {"second_order": True}),
    Sampler("DPM2 a", ("k_dpm_2_a",), "dpm_2_a", None, {"uses_ensd": True}),
    Sampler("DDIM", ("ddim",), "ddim", "ddim_trailing"),
    Sampler("PLMS", ("plms",), "pndm", None),
    Sampler("UniPC", ("unipc",), "unipc", None),
    Sampler("LCM", ("k_lcm",), "lcm", "lcm"),
)

# Diffusers names that exist with Karras sigmas (`k_` + name in schedulers.py).
DIFFUSERS_KARRAS = frozenset({"lms", "dpm_2", "dpm_2_a", "dpmpp_2m", "dpmpp_sde", "dpmpp_2m_sde"})


@dataclass(frozen=True)
class Schedule:
    name: str  # A1111's name
    label: str
    ggml: str | None  # stable-diffusion.cpp's schedule
    diffusers: bool  # can be had on diffusers (plain, or Karras where DIFFUSERS_KARRAS)
    default_rho: float = -1.0
    need_inner_model: bool = False
    aliases: tuple[str, ...] = ()


SCHEDULES: tuple[Schedule, ...] = (
    Schedule("automatic", "Automatic", None, True),
    Schedule("uniform", "Uniform", "discrete", True, need_inner_model=True),
    Schedule("karras", "Karras", "karras", True, default_rho=7.0),
    Schedule("exponential", "Exponential", "exponential", False),
    Schedule("polyexponential", "Polyexponential", None, False, default_rho=1.0),
    Schedule(
        "sgm_uniform",
        "SGM Uniform",
        "sgm_uniform",
        False,
        need_inner_model=True,
        aliases=("SGMUniform",),
    ),
    Schedule("kl_optimal", "KL Optimal", "kl_optimal", False),
    Schedule("align_your_steps", "Align Your Steps", "ays", False),
    Schedule("simple", "Simple", "simple", False, need_inner_model=True),
    Schedule("normal", "Normal", "discrete", True, need_inner_model=True),
    Schedule("ddim", "DDIM", None, False, need_inner_model=True),
    Schedule("beta", "Beta", None, False, need_inner_model=True),
)
PLAIN = frozenset({"automatic", "uniform", "normal"})  # the model's own timestep schedule


def _sampler_key(text: str) -> str:
    return text.strip().lower()


_BY_NAME: dict[str, Sampler] = {}
for _s in SAMPLERS:
    for _key in (_s.name, *_s.aliases):
        _BY_NAME[_sampler_key(_key)] = _s
_SCHEDULE_BY_NAME: dict[str, Schedule] = {}
for _sch in SCHEDULES:
    for _key in (_sch.name, _sch.label, *_sch.aliases):
        _SCHEDULE_BY_NAME[_sampler_key(_key)] = _sch


@dataclass(frozen=True)
class Choice:
    """What a request's sampler and scheduler become: ImageRequest.scheduler and .extra."""

    scheduler: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    sampler_name: str | None = None  # A1111's sampler name, for the response's info
    schedule: str | None = None  # A1111's scheduler name (None: automatic)


def available(engine: Engine) -> list[Sampler]:
    """The samplers the engine has (listed by /sdapi/v1/samplers)."""
    return [s for s in SAMPLERS if (s.diffusers if engine == "diffusers" else s.ggml)]


def schedules_for(engine: Engine) -> list[Schedule]:
    return [
        s
        for s in SCHEDULES
        if (s.diffusers if engine == "diffusers" else s.ggml or s.name == "automatic")
    ]


def find_schedule(name: str | None, param: str, engine: Engine) -> Schedule | None:
    if name is None or not name.strip():
        return None
    schedule = _SCHEDULE_BY_NAME.get(_sampler_key(name))
    if schedule is None:
        names = ", ".join(s.name for s in schedules_for(engine))
        raise InvalidRequest(
            f"unknown scheduler {name!r}; this model's engine ({engine}) takes: {names}",
            param=param,
        )
    return schedule


def find_sampler(name: str, param: str, engine: Engine) -> tuple[Sampler, Schedule | None]:
    """A sampler name, possibly with a schedule label at its end ("DPM++ 2M Karras")."""
    key = _sampler_key(name)
    if key in _BY_NAME:
        return _BY_NAME[key], None
    for schedule in SCHEDULES:
        for label in (schedule.label, *schedule.aliases):
            suffix = " " + label.lower()
            if key.endswith(suffix) and key[: -len(suffix)] in _BY_NAME:
                return _BY_NAME[key[: -len(suffix)]], schedule
    raise InvalidRequest(
        f"sampler {name!r} is not one of AUTOMATIC1111's samplers that localimg has; this "
        f"model's engine ({engine}) takes: {', '.join(s.name for s in available(engine))}",
        param=param,
    )


# The eta A1111 runs a sampler with when a request sets none: the ancestral and SDE samplers read
# its `eta_ancestral` setting (1.0), DDIM `eta_ddim` (0.0); the other samplers never read eta.
ETA_DEFAULTS: dict[str, float] = {
    "Euler a": 1.0,
    "DPM2 a": 1.0,
    "DPM++ 2S a": 1.0,
    "DPM++ SDE": 1.0,
    "DPM++ 2M SDE": 1.0,
    "DDIM": 0.0,
}


def eta_default(sampler_name: str | None) -> float | None:
    """The eta A1111 runs `sampler_name` with by default; None where the sampler reads no eta
    (or none is named: the model's own scheduler, which takes no eta here either)."""
    if sampler_name is None or not sampler_name.strip():
        return None
    try:
        sampler, _schedule = find_sampler(sampler_name, "sampler_name", "diffusers")
    except InvalidRequest:
        return None  # refused with the known names when the sampler is chosen
    return ETA_DEFAULTS.get(sampler.name)


def choose(sampler_name: str | None, scheduler: str | None, engine: Engine, param: str) -> Choice:
    """Map a request's sampler and scheduler onto the model's engine, or refuse naming what
    works there."""
    schedule = find_schedule(scheduler, "scheduler", engine)
    sampler: Sampler | None = None
    if sampler_name is not None and sampler_name.strip():
        sampler, from_name = find_sampler(sampler_name, param, engine)
        if schedule is None or schedule.name == "automatic":
            schedule = from_name or schedule
    if engine == "ggml":
        return _ggml(sampler, schedule, param)
    return _diffusers(sampler, schedule, param)


def _unavailable(sampler: Sampler, engine: Engine, param: str) -> InvalidRequest:
    return InvalidRequest(
        f"sampler {sampler.name!r} has no equivalent on this model's engine ({engine}); it "
        f"takes: {', '.join(s.name for s in available(engine))}",
        param=param,
    )


def _ggml(sampler: Sampler | None, schedule: Schedule | None, param: str) -> Choice:
    extra: dict[str, Any] = {}
    if sampler is not None:
        if sampler.ggml is None:
            raise _unavailable(sampler, "ggml", param)
        extra["sampler"] = sampler.ggml
    method_schedule = None
    if schedule is not None and schedule.name != "automatic":
        if schedule.ggml is None:
            names = ", ".join(s.name for s in schedules_for("ggml"))
            raise InvalidRequest(
                f"scheduler {schedule.name!r} has no equivalent in stable-diffusion.cpp; it "
                f"takes: {names}",
                param="scheduler",
            )
        method_schedule = schedule.ggml
    return Choice(
        scheduler=method_schedule,
        extra=extra,
        sampler_name=sampler.name if sampler else None,
        schedule=schedule.name if schedule and schedule.name != "automatic" else None,
    )


def _diffusers(sampler: Sampler | None, schedule: Schedule | None, param: str) -> Choice:
    karras = schedule is not None and schedule.name == "karras"
    if schedule is not None and not schedule.diffusers:
        names = ", ".join(s.name for s in schedules_for("diffusers"))
        raise InvalidRequest(
            f"scheduler {schedule.name!r} has no equivalent on diffusers models; they take: "
            f"{names} (Karras with {', '.join(_karras_names())})",
            param="scheduler",
        )
    if sampler is None:
        if karras:
            raise InvalidRequest(
                "scheduler 'karras' on a diffusers model needs a sampler_name: one of "
                + ", ".join(_karras_names()),
                param="scheduler",
            )
        return Choice(schedule=schedule.name if schedule and schedule.name not in PLAIN else None)
    if sampler.diffusers is None:
        raise _unavailable(sampler, "diffusers", param)
    name = sampler.diffusers
    if karras:
        if name not in DIFFUSERS_KARRAS:
            raise InvalidRequest(
                f"sampler {sampler.name!r} with the Karras schedule has no diffusers equivalent; "
                f"Karras goes with: {', '.join(_karras_names())}",
                param="scheduler",
            )
        name = "k_" + name
    return Choice(
        scheduler=name,
        sampler_name=sampler.name,
        schedule="karras" if karras else None,
    )


def _karras_names() -> list[str]:
    return [s.name for s in SAMPLERS if s.diffusers in DIFFUSERS_KARRAS]


def sampler_items(engine: Engine) -> list[dict[str, Any]]:
    """GET /sdapi/v1/samplers: A1111's {name, aliases, options} for what the engine has."""
    return [
        {"name": s.name, "aliases": list(s.aliases), "options": dict(s.options)}
        for s in available(engine)
    ]


def scheduler_items(engine: Engine) -> list[dict[str, Any]]:
    """GET /sdapi/v1/schedulers: A1111's {name, label, aliases, default_rho, need_inner_model}."""
    return [
        {
            "name": s.name,
            "label": s.label,
            "aliases": list(s.aliases) or None,
            "default_rho": s.default_rho,
            "need_inner_model": s.need_inner_model,
        }
        for s in schedules_for(engine)
    ]


# A model's own diffusers scheduler (no sampler asked for) is labelled by its class; A1111's name.
CLASS_LABELS = {
    "EulerDiscreteScheduler": "Euler",
    "EulerAncestralDiscreteScheduler": "Euler a",
    "DDIMScheduler": "DDIM",
    "PNDMScheduler": "PLMS",
    "LMSDiscreteScheduler": "LMS",
    "HeunDiscreteScheduler": "Heun",
    "KDPM2DiscreteScheduler": "DPM2",
    "KDPM2AncestralDiscreteScheduler": "DPM2 a",
    "DPMSolverMultistepScheduler": "DPM++ 2M",
    "DPMSolverSinglestepScheduler": "DPM++ SDE",
    "UniPCMultistepScheduler": "UniPC",
    "LCMScheduler": "LCM",
}


def sampler_label(label: str) -> str:
    """The sampler a result names, as A1111 calls it where it has the same one."""
    return CLASS_LABELS.get(label, label)
