"""A1111's model and settings routes: options, sd-models, samplers, schedulers and the lists
localimg has nothing in (sd-vae, prompt-styles, ...), which answer empty lists (loras and embeddings
are listed by listings.py, upscalers by extras.py).

A model's A1111 `title` is its localimg name. `POST /sdapi/v1/options` with
`sd_model_checkpoint` makes that model the A1111 routes' current one and loads it before
answering (as A1111 does; SillyTavern then polls /progress until the job count is 0). It
accepts the whole GET object back (what Open WebUI sends): a read-only key with its current
value passes, a changed one or a key localimg does not have is refused naming the settable ones.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from localimg.errors import InvalidRequest, ModelNotFound
from localimg.server.a1111.samplers import engine_of, sampler_items, scheduler_items
from localimg.server.a1111.schemas import A1111Error, json_object
from localimg.server.served import check_available, served_config, served_names

if TYPE_CHECKING:
    from localimg.config import ModelConfig
    from localimg.engine import Engine
    from localimg.server.a1111.state import A1111State

FORMATS = ("png", "jpg", "jpeg", "webp")
OFF_VAES = ("", "Automatic", "None", None)
SETTABLE = (
    "sd_model_checkpoint",
    "CLIP_stop_at_last_layers",
    "sd_vae",
    "samples_format",
    "show_progress_every_n_steps",
    "live_previews_enable",
)
OVERRIDABLE = (*SETTABLE[:5], "eta_noise_seed_delta")


@dataclass(frozen=True)
class Overrides:
    """A request's `override_settings`, checked."""

    model: str | None = None
    clip_stop: int | None = None
    samples_format: str | None = None


def _int(key: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
        raise A1111Error(f"{key} must be an integer, got {value!r}", status=422, param=key)
    if not low <= int(value) <= high:
        raise A1111Error(
            f"{key} must be between {low} and {high}, got {value}", status=422, param=key
        )
    return int(value)


def _check_common(key: str, value: Any) -> None:
    if key == "sd_vae" and value not in OFF_VAES:
        raise A1111Error(
            f"sd_vae {value!r}: localimg has no separate VAEs (the model's own is used); "
            "send 'Automatic' or 'None'",
            status=422,
            param="sd_vae",
        )
    if key == "samples_format" and str(value).lower() not in FORMATS:
        raise A1111Error(
            f"samples_format {value!r}: use one of {', '.join(FORMATS)}",
            status=422,
            param="samples_format",
        )


def parse_overrides(settings: dict[str, Any]) -> Overrides:
    """`override_settings` of one request; a setting localimg does not have is refused."""
    model = clip = fmt = None
    for key, value in settings.items():
        if key not in OVERRIDABLE:
            raise A1111Error(
                f"override_settings: {key!r} is not a setting localimg has; it takes: "
                + ", ".join(OVERRIDABLE),
                status=422,
                param=key,
            )
        _check_common(key, value)
        if key == "sd_model_checkpoint" and value:
            model = str(value)
        elif key == "CLIP_stop_at_last_layers" and value is not None:
            clip = _int(key, value, 1, 25)
        elif key == "samples_format" and value:
            fmt = str(value).lower()
        elif key == "eta_noise_seed_delta" and value not in (0, None):
            raise A1111Error(
                "eta_noise_seed_delta must be 0 (localimg's seeds are not shifted)",
                status=422,
                param=key,
            )
    return Overrides(model=model, clip_stop=clip, samples_format=fmt)


def keep_overrides(a1: A1111State, overrides: Overrides, model: str) -> None:
    """override_settings_restore_afterwards false: the settings stay, as in A1111."""
    if overrides.model:
        a1.model = model
    if overrides.clip_stop is not None:
        a1.clip_stop = overrides.clip_stop
    if overrides.samples_format:
        a1.samples_format = overrides.samples_format


WEIGHT_SUFFIXES = (".safetensors", ".ckpt", ".gguf", ".yaml")


def model_ref(title: str, names: list[str] | None = None) -> str:
    """A title as clients send it back: the name, maybe with A1111's ` [hash]` suffix, or as
    a checkpoint file name (`model.safetensors`) when that names a served model."""
    ref = re.sub(r"\s*\[[0-9a-fA-F]*\]\s*$", "", title.strip())
    if names is not None and ref not in names:
        for suffix in WEIGHT_SUFFIXES:
            if ref.lower().endswith(suffix) and ref[: -len(suffix)] in names:
                return ref[: -len(suffix)]
    return ref


def current_config(state: Any, a1: A1111State) -> ModelConfig:
    """The A1111 routes' current model (blocking): the one set, else the server's default,
    else the first served one (A1111 always has a checkpoint)."""
    engine: Engine = state.engine
    names = served_names(state)
    if a1.model in names:
        return engine.resolve(a1.model)
    if not names:
        raise ModelNotFound(f"no models are configured in {engine.settings.models_path}")
    try:
        return served_config(state, None)
    except InvalidRequest:
        return engine.resolve(names[0])


def config_for(state: Any, a1: A1111State, ref: str | None) -> ModelConfig:
    if ref:
        return served_config(state, model_ref(ref, served_names(state)))
    return current_config(state, a1)


def _options(state: Any, a1: A1111State) -> dict[str, Any]:
    config = current_config(state, a1)
    folder = state.output_dir / "a1111" if state.output_dir is not None else None
    return {
        "sd_model_checkpoint": config.name,
        "sd_checkpoint_hash": None,
        "sd_vae": "Automatic",
        "CLIP_stop_at_last_layers": a1.clip_stop,
        "samples_format": a1.samples_format,
        "show_progress_every_n_steps": a1.preview_every,
        "live_previews_enable": a1.preview_every > 0,
        "eta_noise_seed_delta": 0,
        "return_grid": True,
        "samples_save": True,
        "outdir_samples": str(folder) if folder else "",
        "sd_checkpoints_limit": 1,
    }


async def get_options(request: Request, a1: A1111State) -> Response:
    return JSONResponse(await asyncio.to_thread(_options, request.app.state, a1))


async def set_options(request: Request, a1: A1111State) -> Response:
    state = request.app.state
    data = await json_object(request)
    current = await asyncio.to_thread(_options, state, a1)
    for key, value in data.items():
        if key in SETTABLE:
            _check_common(key, value)
        elif key not in current:
            raise A1111Error(
                f"{key!r} is not a setting localimg has; settable: {', '.join(SETTABLE)}",
                status=422,
                param=key,
            )
        elif value != current[key]:
            raise A1111Error(
                f"{key} is read-only in localimg (it is {current[key]!r}); settable: "
                + ", ".join(SETTABLE),
                status=422,
                param=key,
            )
    clip = data.get("CLIP_stop_at_last_layers")
    every = data.get("show_progress_every_n_steps")
    clip = _int("CLIP_stop_at_last_layers", clip, 1, 25) if clip is not None else None
    every = _int("show_progress_every_n_steps", every, -1, 1000) if every is not None else None
    ref = data.get("sd_model_checkpoint")
    if ref:
        config = await asyncio.to_thread(config_for, state, a1, str(ref))
        check_available(state, config.name)
        engine: Engine = state.engine
        await asyncio.to_thread(engine.load, config.name)
        a1.model = config.name
    if clip is not None:
        a1.clip_stop = clip
    if every is not None:
        a1.preview_every = max(0, every)
    if data.get("live_previews_enable") is False:
        a1.preview_every = 0
    elif data.get("live_previews_enable") is True and a1.preview_every == 0:
        a1.preview_every = 10
    if data.get("samples_format"):
        a1.samples_format = str(data["samples_format"]).lower()
    return JSONResponse(None)


def _sd_models(state: Any) -> list[dict[str, Any]]:
    engine: Engine = state.engine
    entries = []
    for name in served_names(state):
        config = engine.resolve(name)
        entries.append(
            {
                "title": name,
                "model_name": name,
                "hash": None,
                "sha256": None,
                "filename": str(config.source_file or name),
                "config": None,
            }
        )
    return entries


async def sd_models(request: Request, a1: A1111State) -> Response:
    return JSONResponse(await asyncio.to_thread(_sd_models, request.app.state))


async def samplers(request: Request, a1: A1111State) -> Response:
    config = await asyncio.to_thread(current_config, request.app.state, a1)
    return JSONResponse(sampler_items(engine_of(config.backend)))


async def schedulers(request: Request, a1: A1111State) -> Response:
    config = await asyncio.to_thread(current_config, request.app.state, a1)
    return JSONResponse(scheduler_items(engine_of(config.backend)))


async def empty_list(request: Request, a1: A1111State) -> Response:
    return JSONResponse([])


async def nothing(request: Request, a1: A1111State) -> Response:
    """refresh-*: localimg reads the models folder on every request, so there is nothing to do."""
    return JSONResponse(None)


async def scripts(request: Request, a1: A1111State) -> Response:
    """The scripts a body may name: sd-webui-controlnet's (alwayson_scripts.controlnet) only."""
    return JSONResponse({"txt2img": ["controlnet"], "img2img": ["controlnet"]})


async def unload_checkpoint(request: Request, a1: A1111State) -> Response:
    state = request.app.state
    config = await asyncio.to_thread(current_config, state, a1)
    await asyncio.to_thread(state.engine.unload, config.name)
    return JSONResponse({})


async def reload_checkpoint(request: Request, a1: A1111State) -> Response:
    state = request.app.state
    config = await asyncio.to_thread(current_config, state, a1)
    check_available(state, config.name)
    await asyncio.to_thread(state.engine.load, config.name)
    return JSONResponse({})


def table() -> list[tuple[str, Any, str]]:
    lists = (
        *("sd-vae", "prompt-styles"),
        *("face-restorers", "hypernetworks", "realesrgan-models"),
    )
    return [
        ("options", get_options, "GET"),
        ("options", set_options, "POST"),
        ("sd-models", sd_models, "GET"),
        ("samplers", samplers, "GET"),
        ("schedulers", schedulers, "GET"),
        ("scripts", scripts, "GET"),
        *((path, empty_list, "GET") for path in lists),
        *((path, nothing, "POST") for path in ("refresh-checkpoints", "refresh-vae")),
        ("unload-checkpoint", unload_checkpoint, "POST"),
        ("reload-checkpoint", reload_checkpoint, "POST"),
    ]
