"""The AUTOMATIC1111 API under /sdapi/v1: what SillyTavern, Open WebUI and A1111 scripts speak.

txt2img and img2img run through the same engine as the OpenAI routes (queue, limits, cancel on
client disconnect); `n_iter` batches run one after another with their seeds continuing, so
image i of a request has seed `seed + i` as in A1111. The request mapping and refusals are in
schemas.py, sampler names in samplers.py, the `info` string in info.py, the current model and
the runs `/progress`, `/interrupt` and `/skip` see in state.py, the model and option routes
in options.py, the LoRA and embedding lists in listings.py, the hires fix in hires.py, the
upscalers and the Extras routes in extras.py, sd-webui-controlnet's units in
control_units.py and its /controlnet routes in controlnet.py (all in this folder). The API
key, when set, is checked on every route by ApiKeyMiddleware (Bearer, or Basic with the key as
the password); errors, its 401 included, leave in A1111's shapes.
"""

from __future__ import annotations

import asyncio
import base64
import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from localimg.errors import Cancelled, InvalidRequest, LocalimgError
from localimg.media import encode
from localimg.media.decode import image_from_text
from localimg.requests import MAX_PREVIEWS, MAX_SEED, ImageRequest, parse_cache
from localimg.server.a1111 import controlnet, extras, listings, options
from localimg.server.a1111.control_units import Controls, controlnet_units
from localimg.server.a1111.hires import hires_of
from localimg.server.a1111.images import init_inputs, save_images
from localimg.server.a1111.info import Outcome, grid, info_json, parse_parameters
from localimg.server.a1111.samplers import Choice, choose, engine_of, sampler_label
from localimg.server.a1111.schemas import (
    A1111Error,
    A1111ErrorBody,
    Img2ImgBody,
    Txt2ImgBody,
    check_img2img,
    echo,
    error_response,
    ignored_keys,
    json_object,
    parse,
    refusals,
    validation_response,
)
from localimg.server.a1111.state import A1111State, Run
from localimg.server.http.access_log import record_job
from localimg.server.openai.images import await_job
from localimg.server.openapi import describe, with_error
from localimg.server.served import check_available

if TYPE_CHECKING:
    from PIL.Image import Image

    from localimg.config import ModelConfig
    from localimg.engine import Engine

Handler = Callable[[Request, A1111State], Awaitable[Response]]


def _endpoint(handler: Handler, a1: A1111State) -> Callable[[Request], Awaitable[Response]]:
    """A1111's error shapes around a handler (ApiKeyMiddleware checks the key, answering in
    A1111's shape: schemas.unauthorized)."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request, a1)
        except ValidationError as exc:
            return validation_response(exc)
        except LocalimgError as exc:
            return error_response(exc)

    functools.update_wrapper(endpoint, handler)  # its docstring and openapi.describe
    return with_error(endpoint, A1111ErrorBody)


# -- txt2img / img2img -----------------------------------------------------------------------


def _clip_skip(body: Txt2ImgBody, overrides: options.Overrides, a1: A1111State) -> int | None:
    """A1111 counts CLIP layers from 1 (= no skip); localimg's clip_skip is layers skipped."""
    given = overrides.clip_stop
    if body.clip_skip is not None:
        if given is not None and given != body.clip_skip:
            raise A1111Error(
                f"clip_skip ({body.clip_skip}) and override_settings.CLIP_stop_at_last_layers "
                f"({given}) disagree; send one of them",
                status=422,
                param="clip_skip",
            )
        given = body.clip_skip
    value = given if given is not None else a1.clip_stop
    return value - 1 if value > 1 else None


def _seed(body: Txt2ImgBody, count: int) -> int:
    """-1 (or any negative) draws a random seed, reported back in info."""
    from localimg.requests import random_seed

    if body.seed < 0:
        return random_seed() % (MAX_SEED - count)
    if body.seed > MAX_SEED - count:
        raise A1111Error(
            f"seed must be between 0 and {MAX_SEED - count} for {count} images (image i uses "
            f"seed+i), or -1 for a random one",
            status=422,
            param="seed",
        )
    return body.seed


async def _run_batches(
    request: Request, run: Run, config: ModelConfig, base: ImageRequest, batch: int
) -> Outcome:
    state = request.app.state
    engine: Engine = state.engine
    seed = base.seed or 0
    outcome = Outcome()
    for index in range(run.n_iter):
        if run.interrupted:
            break
        run.skipped = False
        run.step = 0
        job = await asyncio.to_thread(
            engine.submit, config.name, base.with_(seed=seed + index * batch), run.listener
        )
        run.job = job
        record_job(request, job)
        if run.interrupted:  # interrupted while submitting
            job.cancel()
        try:
            result = await await_job(request, job, state.settings.request_timeout)
        except Cancelled:
            if run.interrupted or run.skipped:
                run.job_no += 1
                continue
            raise
        finally:
            run.job = None
        run.job_no += 1
        resolved = result.request or base
        outcome.images += result.images
        outcome.seeds += result.seeds
        outcome.infotexts += [encode.a1111_parameters(result, i) for i in range(len(result.images))]
        outcome.width, outcome.height = resolved.width or 0, resolved.height or 0
        outcome.steps, outcome.cfg_scale = resolved.steps or 0, resolved.cfg_scale or 0.0
        outcome.sampler_label = sampler_label(result.scheduler)
        outcome.strength, outcome.clip_skip = resolved.strength, resolved.clip_skip
        if resolved.hires is not None:  # A1111 reports the second pass's denoise
            outcome.strength = resolved.hires.denoise
            fields = encode.hires_fields(resolved)
            outcome.extra = {k: v for k, v in fields if k != "Denoising strength"}
        outcome.prompt, outcome.negative_prompt = resolved.prompt, resolved.negative_prompt or ""
        outcome.ignored += [name for name in result.ignored if name not in outcome.ignored]
    outcome.interrupted = run.interrupted
    return outcome


def _previews(body: Txt2ImgBody, a1: A1111State) -> int:
    """Previews for /progress's current_image: one every `show_progress_every_n_steps`."""
    if a1.preview_every <= 0:
        return 0
    steps = body.steps or 20  # the model's own count is known only once merged
    return min(MAX_PREVIEWS, steps // a1.preview_every)


async def _generate(request: Request, a1: A1111State, kind: str) -> Response:
    state = request.app.state
    data = await json_object(request)
    body = parse(Img2ImgBody if kind == "img2img" else Txt2ImgBody, data)
    refusals(body)
    if isinstance(body, Img2ImgBody):
        check_img2img(body)
    overrides = options.parse_overrides(body.override_settings or {})
    config = await asyncio.to_thread(options.config_for, state, a1, overrides.model)
    check_available(state, config.name)
    choice = choose(
        body.sampler_name or body.sampler_index,
        body.scheduler,
        engine_of(config.backend),
        "sampler_name",
    )
    init_image = mask = None
    if isinstance(body, Img2ImgBody):
        init_image, mask = await asyncio.to_thread(init_inputs, body, state.settings)
    size = (body.width, body.height) if body.width and body.height else None
    controls = await asyncio.to_thread(
        controlnet_units, body.alwayson_scripts, state.settings, state.engine, init_image, size
    )
    seed = _seed(body, body.batch_size * body.n_iter)
    base = _base_request(body, kind, a1, overrides, choice, init_image, mask, seed)
    upscalers = state.engine.upscaler_names()
    base = base.with_(hires=hires_of(body, config.name, upscalers))
    if controls.units:  # the maps made once, not once per n_iter batch
        base = await asyncio.to_thread(_with_controls, state.engine, base, controls)
    run = a1.start(kind, body.n_iter, body.force_task_id)
    try:
        outcome = await _run_batches(request, run, config, base, body.batch_size)
    finally:
        a1.finish(run)
    if not body.override_settings_restore_afterwards:
        options.keep_overrides(a1, overrides, config.name)
    fmt = overrides.samples_format or a1.samples_format
    images = await asyncio.to_thread(_encode_all, outcome, fmt, body.send_images)
    if body.save_images and outcome.images:
        await asyncio.to_thread(save_images, outcome, fmt, state.output_dir, kind, a1)
    info = info_json(
        outcome,
        sampler_name=choice.sampler_name,
        model=config.name,
        batch_size=body.batch_size,
        subseed=body.subseed,
        styles=list(body.styles or []),
        with_grid=len(outcome.images) > 1,
        inpainting=mask is not None,
    )
    headers = {"X-Localimg-Seeds": ",".join(str(s) for s in outcome.seeds)}
    ignored = ignored_keys(body, data) + controls.ignored + outcome.ignored
    if ignored:
        headers["X-Localimg-Ignored"] = ",".join(ignored)
    return JSONResponse({"images": images, "parameters": echo(body), "info": info}, headers=headers)


def _base_request(
    body: Txt2ImgBody,
    kind: str,
    a1: A1111State,
    overrides: options.Overrides,
    choice: Choice,
    init_image: Image | None,
    mask: Image | None,
    seed: int,
) -> ImageRequest:
    """The request of the first batch (`_run_batches` moves the seed on for the next ones);
    a field the engine refuses answers as A1111's 422."""
    mode = None
    if isinstance(body, Img2ImgBody):
        mode = "inpaint" if mask is not None else "img2img"
    try:
        return ImageRequest(
            prompt=body.prompt,
            negative_prompt=body.negative_prompt or None,
            width=body.width,
            height=body.height,
            steps=body.steps,
            cfg_scale=body.cfg_scale,
            seed=seed,
            n=body.batch_size,
            scheduler=choice.scheduler,
            clip_skip=_clip_skip(body, overrides, a1),
            extra=choice.extra,
            init_image=init_image,
            mask=mask,
            strength=body.denoising_strength if kind == "img2img" else None,
            mode=mode,
            previews=_previews(body, a1),
            **_cache_fields(body),
        )
    except InvalidRequest as exc:
        raise A1111Error(exc.message, status=422, param=exc.param) from None


def _with_controls(engine: Engine, base: ImageRequest, controls: Controls) -> ImageRequest:
    """The request with its ControlNet units, their maps made (blocking: runs the
    preprocessors); a unit the engine refuses (too many, a knob out of range) is A1111's 422."""
    try:
        request = base.with_(controls=controls.units, extra={**base.extra, **controls.extra})
        return engine.prepare_controls(request)
    except InvalidRequest as exc:
        raise A1111Error(exc.message, status=422, param=exc.param or "alwayson_scripts") from None


def _encode_all(outcome: Outcome, fmt: str, send: bool) -> list[str]:
    if not send or not outcome.images:
        return []
    kind = encode.format_from_name(fmt, param="samples_format")
    pictures = list(zip(outcome.images, outcome.infotexts, strict=True))
    if len(outcome.images) > 1:
        pictures.insert(0, (grid(outcome.images), outcome.infotexts[0]))
    return [
        base64.b64encode(encode.encode(image, kind, parameters=text)).decode("ascii")
        for image, text in pictures
    ]


@describe(body=Txt2ImgBody)
async def txt2img(request: Request, a1: A1111State) -> Response:
    return await _generate(request, a1, "txt2img")


@describe(body=Img2ImgBody)
async def img2img(request: Request, a1: A1111State) -> Response:
    return await _generate(request, a1, "img2img")


# -- progress, interrupt, skip, png-info -------------------------------------------------------


async def progress(request: Request, a1: A1111State) -> Response:
    skip = request.query_params.get("skip_current_image", "false").lower() in ("1", "true")
    return JSONResponse(await asyncio.to_thread(a1.progress, skip))


async def interrupt(request: Request, a1: A1111State) -> Response:
    """Stop the running request: its current batch within one step, the rest not started. The
    request answers with the batches that finished (A1111 returns what it has too)."""
    run = a1.current()
    if run is not None:
        run.interrupt()
    return JSONResponse({})


async def skip(request: Request, a1: A1111State) -> Response:
    """End the running request's current batch; its next batch (n_iter) starts."""
    run = a1.current()
    if run is not None:
        run.skip()
    return JSONResponse(None)


async def png_info(request: Request, a1: A1111State) -> Response:
    data = await json_object(request)
    text = data.get("image")
    if not isinstance(text, str) or not text.strip():
        raise A1111Error("image is required: a base64 image", status=422, param="image")
    settings = request.app.state.settings
    image = await asyncio.to_thread(
        image_from_text, text, "image", settings.image_limits, settings.fetch_policy
    )
    items = {k: v for k, v in image.info.items() if isinstance(k, str) and isinstance(v, str)}
    info = items.pop("parameters", None)
    if info is None:
        raw = image.getexif().get_ifd(encode.EXIF_IFD).get(encode.USER_COMMENT)
        if isinstance(raw, bytes) and raw.startswith(b"UNICODE\0"):
            info = raw[8:].decode("utf-16-be")
    info = info or ""
    return JSONResponse({"info": info, "items": items, "parameters": parse_parameters(info)})


def routes() -> list[BaseRoute]:
    """The /sdapi/v1 routes, bound to one A1111State for this app."""
    a1 = A1111State()
    table: list[tuple[str, Handler, str]] = [
        ("txt2img", txt2img, "POST"),
        ("img2img", img2img, "POST"),
        ("progress", progress, "GET"),
        ("interrupt", interrupt, "POST"),
        ("skip", skip, "POST"),
        ("png-info", png_info, "POST"),
        *options.table(),
        *listings.table(),
        *extras.table(),
    ]
    routes: list[BaseRoute] = [
        Route(f"/sdapi/v1/{path}", _endpoint(handler, a1), methods=[method])
        for path, handler, method in table
    ]
    # sd-webui-controlnet's own routes, in A1111's error shapes like the rest.
    routes += [
        Route(f"/controlnet/{path}", _endpoint(handler, a1), methods=[method])
        for path, handler, method in controlnet.table()
    ]
    # Anything else under /sdapi/v1 answers as FastAPI (A1111) does: 404 {"detail": "Not Found"}.
    routes.append(Route("/sdapi/v1/{rest:path}", not_found, include_in_schema=False))
    return routes


async def not_found(request: Request) -> Response:
    return JSONResponse({"detail": "Not Found"}, status_code=404)


def _cache_fields(body: Txt2ImgBody) -> dict[str, Any]:
    """localimg's `cache` field (a step-cache method and its knobs) as ImageRequest fields."""
    method, knobs = parse_cache(body.cache)
    return {"cache": method, "cache_options": knobs}
