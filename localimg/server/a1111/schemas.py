"""Request bodies of AUTOMATIC1111's txt2img and img2img, and the A1111 error shapes.

The field names, types and defaults are A1111's (its `StableDiffusionProcessing*` classes made
into pydantic models by modules/api/models.py). As in A1111, a key it does not know is ignored
(SillyTavern sends its own `url` and `auth`); such keys, and A1111 fields that only matter with a
feature that is off (`hr_upscaler` without `enable_hr`), are named in the `X-Localimg-Ignored`
response header. A feature localimg cannot do, asked for with a value other than its off value
(`restore_faces: true`, a script), is refused naming it; the hires fix's fields are read by
hires.py. Type errors answer
422 with FastAPI's `{"detail": [{"loc", "msg", "type"}]}`, as A1111 does; other refusals answer
A1111's `{"error", "detail", "body", "errors"}`.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

from localimg.errors import InvalidRequest, LocalimgError
from localimg.requests import MAX_N, MAX_SIDE, MAX_STEPS
from localimg.server.a1111.samplers import eta_default

MAX_ITER = 100  # A1111 has no limit on n_iter; one request may not hold the queue forever


class Txt2ImgBody(BaseModel):
    """POST /sdapi/v1/txt2img. Unset fields: the model's YAML and backend decide."""

    model_config = ConfigDict(extra="allow")

    prompt: str = ""
    negative_prompt: str | None = None
    styles: list[str] | None = None
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0.0
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    sampler_name: str | None = None
    sampler_index: str | None = None
    scheduler: str | None = None
    batch_size: int = Field(default=1, ge=1, le=MAX_N)
    n_iter: int = Field(default=1, ge=1, le=MAX_ITER)
    steps: int | None = Field(default=None, ge=1, le=MAX_STEPS)
    cfg_scale: float | None = Field(default=None, ge=0, le=100)
    width: int | None = Field(default=None, ge=8, le=MAX_SIDE)
    height: int | None = Field(default=None, ge=8, le=MAX_SIDE)
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    eta: float | None = None
    denoising_strength: float | None = Field(default=None, ge=0, le=1)
    s_min_uncond: float | None = None
    s_churn: float | None = None
    s_tmax: float | None = None
    s_tmin: float | None = None
    s_noise: float | None = None
    override_settings: dict[str, Any] | None = None
    override_settings_restore_afterwards: bool = True
    refiner_checkpoint: str | None = None
    refiner_switch_at: float | None = None
    disable_extra_networks: bool = False
    firstpass_image: str | None = None
    comments: dict[str, Any] | None = None
    force_task_id: str | None = None
    script_name: str | None = None
    script_args: list[Any] = Field(default_factory=list)
    send_images: bool = True
    save_images: bool = False
    alwayson_scripts: dict[str, Any] = Field(default_factory=dict)
    infotext: str | None = None
    clip_skip: int | None = Field(default=None, ge=1, le=25)  # SD.Next's; A1111 counting
    # localimg's step caching (issue 16), as on /v1: a method name, "none" or {"method", knobs}
    # Checked by requests.parse_cache, whose error says what a cache looks like.
    cache: Any = None
    # hires fix (txt2img only; hires.py maps them to ImageRequest.hires)
    enable_hr: bool = False
    firstphase_width: int = 0
    firstphase_height: int = 0
    hr_scale: float = 2.0
    hr_upscaler: str | None = None
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_checkpoint_name: str | None = None
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""
    hr_cfg: float | None = None  # Forge's: the second pass's CFG scale
    hr_distilled_cfg: float | None = None  # Forge's: its distilled CFG


class Img2ImgBody(Txt2ImgBody):
    """POST /sdapi/v1/img2img."""

    init_images: list[str] | None = None
    resize_mode: int = 0
    image_cfg_scale: float | None = None
    mask: str | None = None
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    mask_blur: int | None = Field(default=None, ge=0, le=256)
    mask_round: bool = True
    inpainting_fill: int = 0
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: int = 0
    initial_noise_multiplier: float | None = None
    latent_mask: str | None = None
    include_init_images: bool = False


HIRES_FIELDS = (
    "firstphase_width",
    "firstphase_height",
    "hr_scale",
    "hr_upscaler",
    "hr_second_pass_steps",
    "hr_resize_x",
    "hr_resize_y",
    "hr_checkpoint_name",
    "hr_sampler_name",
    "hr_scheduler",
    "hr_prompt",
    "hr_negative_prompt",
    "hr_cfg",
    "hr_distilled_cfg",
)
# Hires fields read with enable_hr that never change the image here (A1111 no longer reads the
# first two either; the first pass's distilled CFG, Forge's, is not read).
IGNORED_WITH_HR = ("firstphase_width", "firstphase_height", "hr_distilled_cfg")
# Fields that change nothing here whatever their value (saving is `save_images`' job).
NO_EFFECT = ("do_not_save_samples", "do_not_save_grid", "subseed", "comments")


class A1111Error(LocalimgError):
    """A refusal in A1111's shape, with its status (A1111 uses 404/422/500 in places)."""

    error_type = "invalid_request_error"

    def __init__(self, message: str, status: int = 400, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.http_status = status


class A1111ErrorBody(BaseModel):
    """A1111's error shape (FastAPI's exception handler in its api.py)."""

    error: str
    detail: str
    body: str
    errors: str


def error_response(exc: LocalimgError) -> JSONResponse:
    """A1111's exception handler: `{"error": class name, "detail", "body", "errors"}`."""
    body = {"error": type(exc).__name__, "detail": exc.message, "body": "", "errors": exc.message}
    return JSONResponse(body, status_code=exc.http_status, headers=exc.headers)


def unauthorized(exc: LocalimgError) -> JSONResponse:
    """A1111's 401 (ApiKeyMiddleware's renderer for /sdapi): the words of its own basic auth,
    with a Basic challenge, which is what A1111 clients send."""
    return error_response(
        A1111Error(
            "Incorrect username or password", status=401, headers={"WWW-Authenticate": "Basic"}
        )
    )


def validation_response(exc: ValidationError) -> JSONResponse:
    """FastAPI's 422 for a body that does not fit the model (what A1111 answers)."""
    detail = [
        {
            "type": error["type"],
            "loc": ["body", *error["loc"]],
            "msg": error["msg"],
            "input": error.get("input"),
        }
        for error in exc.errors(include_url=False)
    ]
    return JSONResponse({"detail": detail}, status_code=422)


async def json_object(request: Request) -> dict[str, Any]:
    """The body as a JSON object, or A1111's 422."""
    raw = await request.body()
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise A1111Error(f"the request body is not valid JSON ({exc})", status=422) from None
    if not isinstance(data, dict):
        raise A1111Error("the request body must be a JSON object", status=422)
    return data


def parse(cls: type[Txt2ImgBody], data: Any) -> Txt2ImgBody:
    """Validate a body (ValidationError → the caller answers 422)."""
    if not isinstance(data, dict):
        raise A1111Error("the request body must be a JSON object", status=422)
    return cls.model_validate(data)


def _off(value: Any, *off: Any) -> bool:
    return value is None or value in off


def _eta_changes_the_sampler(body: Txt2ImgBody) -> bool:
    """An eta other than the one A1111 runs the chosen sampler with by default (samplers that
    read no eta ignore it, in A1111 as here: ignored_keys names it)."""
    default = eta_default(body.sampler_name or body.sampler_index)
    return body.eta is not None and default is not None and abs(body.eta - default) > 1e-9


def _eta_refusal(body: Txt2ImgBody) -> str:
    sampler = body.sampler_name or body.sampler_index
    default = eta_default(sampler)
    if default is None:
        return "eta is not read by this sampler"  # never raised: nothing to refuse then
    return (
        f"{sampler} runs with A1111's default eta ({default:g}) only; leave eta out or send "
        f"{default:g}"
    )


def refusals(body: Txt2ImgBody) -> None:
    """Refuse every feature asked for that localimg does not have, naming it."""
    # sd-webui-controlnet's units are read by control_units.py; no other script runs here.
    other_scripts = [str(k) for k in body.alwayson_scripts if str(k).lower() != "controlnet"]
    checks: list[tuple[str, bool, str]] = [
        (
            "enable_hr",
            body.enable_hr and isinstance(body, Img2ImgBody),
            "the hires fix is for txt2img (A1111's img2img has none); it is not available",
        ),
        ("restore_faces", bool(body.restore_faces), "face restoration is not available"),
        ("tiling", bool(body.tiling), "tiling (seamless textures) is not available"),
        ("styles", bool(body.styles), "localimg has no prompt styles (put the text in prompt)"),
        (
            "script_name",
            bool(body.script_name and body.script_name.strip().lower() != "none"),
            "scripts are not available",
        ),
        ("script_args", bool(body.script_args), "scripts are not available"),
        (
            "alwayson_scripts",
            bool(other_scripts),
            f"scripts other than controlnet are not available ({', '.join(other_scripts)})",
        ),
        (
            "subseed_strength",
            bool(body.subseed_strength),
            "variation seeds are not available (subseed_strength must be 0)",
        ),
        (
            "seed_resize_from_w",
            not _off(body.seed_resize_from_w, -1, 0) or not _off(body.seed_resize_from_h, -1, 0),
            "resizing a seed from another size is not available",
        ),
        ("eta", _eta_changes_the_sampler(body), _eta_refusal(body)),
        (
            "s_churn",
            any(not _off(v, 0) for v in (body.s_churn, body.s_tmin, body.s_tmax, body.s_min_uncond))
            or not _off(body.s_noise, 1),
            "the k-diffusion settings s_churn, s_tmin, s_tmax, s_min_uncond and s_noise are not "
            "available",
        ),
        (
            "refiner_checkpoint",
            not _off(body.refiner_checkpoint, "", "None"),
            "a refiner model is not available",
        ),
        ("firstpass_image", bool(body.firstpass_image), "a first-pass image is not available"),
        ("infotext", bool(body.infotext), "infotext (parameters pasted as text) is not read"),
        (
            "disable_extra_networks",
            body.disable_extra_networks,
            "extra networks in the prompt cannot be turned off",
        ),
    ]
    for param, asked, why in checks:
        if asked:
            raise A1111Error(f"{param}: {why} in localimg", status=422, param=param)


def ignored_keys(body: Txt2ImgBody, data: dict[str, Any]) -> list[str]:
    """Keys sent that change nothing: unknown ones, hires settings with enable_hr off, ..."""
    names = sorted(body.model_extra or {})
    sent = set(data)
    if not body.enable_hr:
        names += [name for name in HIRES_FIELDS if name in sent]
        if "denoising_strength" in sent and not isinstance(body, Img2ImgBody):
            names.append("denoising_strength")
    else:
        names += [name for name in IGNORED_WITH_HR if name in sent]
    names += [name for name in NO_EFFECT if name in sent]
    if body.eta is not None and eta_default(body.sampler_name or body.sampler_index) is None:
        names.append("eta")  # the sampler reads no eta (A1111's neither)
    return names


def check_img2img(body: Img2ImgBody) -> None:
    """The img2img fields that localimg maps, or refuses."""
    if not body.init_images:
        raise A1111Error(
            "init_images is required: one base64 image", status=404, param="init_images"
        )
    if len(body.init_images) > 1:
        raise A1111Error(
            f"init_images holds {len(body.init_images)} images; localimg takes one",
            status=422,
            param="init_images",
        )
    if body.resize_mode != 0:
        raise A1111Error(
            f"resize_mode {body.resize_mode} is not available; localimg takes 0 (just resize: "
            "the image is stretched to width x height)",
            status=422,
            param="resize_mode",
        )
    if body.image_cfg_scale is not None:
        raise A1111Error(
            "image_cfg_scale (InstructPix2Pix) is not available",
            status=422,
            param="image_cfg_scale",
        )
    if not _off(body.initial_noise_multiplier, 1):
        raise A1111Error(
            "initial_noise_multiplier is not available (it must be 1)",
            status=422,
            param="initial_noise_multiplier",
        )
    if body.latent_mask:
        raise A1111Error("latent_mask is not available", status=422, param="latent_mask")
    if body.mask is None:
        return
    if body.inpainting_fill not in (0, 1):
        raise A1111Error(
            f"inpainting_fill {body.inpainting_fill} is not available; localimg takes 0 (fill: "
            "the masked area starts from the blurred colours around it) or 1 (original)",
            status=422,
            param="inpainting_fill",
        )
    if "inpaint_full_res" in body.model_fields_set and body.inpaint_full_res:
        raise A1111Error(
            "inpaint_full_res (inpaint only the masked area at full resolution) is not "
            "available; localimg inpaints the whole picture (send false)",
            status=422,
            param="inpaint_full_res",
        )
    if body.inpainting_mask_invert not in (0, 1):
        raise InvalidRequest(
            "inpainting_mask_invert must be 0 or 1", param="inpainting_mask_invert"
        )
    blur = mask_blur(body)
    if blur < 0:
        raise InvalidRequest("mask_blur must be 0 or more", param="mask_blur")


def mask_blur(body: Img2ImgBody) -> int:
    """A1111's mask blur: mask_blur sets both axes; different x and y are refused."""
    if body.mask_blur is not None:
        return body.mask_blur
    if body.mask_blur_x != body.mask_blur_y:
        raise A1111Error(
            "different mask_blur_x and mask_blur_y are not available; send mask_blur",
            status=422,
            param="mask_blur_x",
        )
    return body.mask_blur_x


def echo(body: Txt2ImgBody) -> dict[str, Any]:
    """The response's `parameters`: every field of A1111's model with what was sent."""
    fields = body.model_dump(exclude=set(body.model_extra or {}))
    if isinstance(body, Img2ImgBody):
        if not body.include_init_images:
            fields["init_images"] = None
            fields["mask"] = None
        for name in (*HIRES_FIELDS, "enable_hr", "include_init_images"):
            fields.pop(name, None)
    return fields
