"""A1111's hires fix on txt2img: `enable_hr` and the `hr_*` fields → `ImageRequest.hires`.

`enable_hr: false` (A1111's default) sends no hires fix, so the model's YAML `hires:` block
decides (on when it says so); `enable_hr: true` asks for one; each field not sent, or at A1111's
"the same as the first pass", is left unset, so the YAML's block and then A1111's defaults fill it:
`hr_scale` (2), `hr_upscaler` (Latent; "None" resizes with Lanczos, as A1111 does),
`hr_second_pass_steps` (0: the first pass's), `hr_resize_x`/`hr_resize_y` (0: from the scale;
one of them: the other keeps the aspect), `denoising_strength` (0.7), `hr_prompt` and
`hr_negative_prompt` ("": the first pass's). A second-pass sampler, scheduler, checkpoint or CFG
other than the first pass's would change the image in a way localimg cannot, so it is refused;
at their "same" values they are accepted.
"""

from __future__ import annotations

from typing import Any

from localimg.errors import InvalidRequest
from localimg.request_parts import LATENT_UPSCALERS, is_latent_upscaler
from localimg.requests import HiresFix
from localimg.server.a1111.schemas import A1111Error, Txt2ImgBody

# The engine's resampling filters, which A1111 writes with a capital.
PLAIN = ("lanczos", "bicubic", "nearest")
# The values A1111's UI sends for "the same as the first pass".
SAME = {"", "none", "use same sampler", "use same scheduler", "use same checkpoint"}


def hires_of(body: Txt2ImgBody, model: str, upscalers: list[str]) -> HiresFix | None:
    """The hires fix a txt2img body asks for; None when `enable_hr` is off (the YAML decides).
    `upscalers` are the engine's. A1111's 422 (A1111Error) for a setting localimg cannot run."""
    if not body.enable_hr:
        return None
    _check_same(body, model)
    upscaler = _upscaler(body.hr_upscaler, upscalers)
    denoise = body.denoising_strength
    if denoise is not None and denoise <= 0:
        raise A1111Error(
            "denoising_strength 0 with enable_hr: the second pass would change nothing; send a "
            "value in (0, 1] or turn enable_hr off",
            status=422,
            param="denoising_strength",
        )
    sized = body.hr_resize_x or body.hr_resize_y
    scale = body.hr_scale if "hr_scale" in body.model_fields_set and not sized else None
    try:
        return HiresFix(
            scale=scale,
            width=body.hr_resize_x or None,
            height=body.hr_resize_y or None,
            upscaler=upscaler,
            steps=body.hr_second_pass_steps or None,
            denoise=denoise,
            prompt=body.hr_prompt or None,
            negative_prompt=body.hr_negative_prompt or None,
        )
    except InvalidRequest as exc:
        param = _A1111_NAMES.get(exc.param or "", exc.param)
        message = exc.message.replace(exc.param or "", param or "", 1) if exc.param else exc.message
        raise A1111Error(message, status=422, param=param) from None


def _upscaler(asked: str | None, upscalers: list[str]) -> str | None:
    """The hires upscaler by the engine's name: a latent mode (any case), "None" (A1111 then
    resizes with Lanczos), an engine upscaler (A1111's "Lanczos" is "lanczos"); None: unset.
    Anything else is A1111's 422 naming what there is."""
    text = (asked or "").strip()
    if not text:
        return None
    if is_latent_upscaler(text):
        return text.lower()
    if text.lower() == "none":
        return "lanczos"
    for name in upscalers:
        if text.lower() == name.lower():
            return name
    modes = ", ".join(name[:1].upper() + name[1:] for name in LATENT_UPSCALERS)
    raise A1111Error(
        f"hr_upscaler: no upscaler named {text!r}; available: None, {modes}, "
        + ", ".join(n[:1].upper() + n[1:] if n in PLAIN else n for n in upscalers),
        status=422,
        param="hr_upscaler",
    )


# HiresFix's parameter names → the A1111 fields that set them.
_A1111_NAMES = {
    "hires_scale": "hr_scale",
    "hires_size": "hr_resize_x",
    "hires_steps": "hr_second_pass_steps",
    "hires_denoise": "denoising_strength",
    "hires_upscaler": "hr_upscaler",
}


def _same(value: Any, first: Any = None) -> bool:
    if value is None:
        return True
    text = str(value).strip().lower()
    return text in SAME or (first is not None and text == str(first).strip().lower())


def _check_same(body: Txt2ImgBody, model: str) -> None:
    """Refuse a second pass that differs in what localimg runs once for both passes."""
    first_sampler = body.sampler_name or body.sampler_index
    checks = [
        ("hr_sampler_name", _same(body.hr_sampler_name, first_sampler), "sampler"),
        ("hr_scheduler", _same(body.hr_scheduler, body.scheduler), "scheduler"),
        ("hr_checkpoint_name", _same(body.hr_checkpoint_name, model), "model"),
        ("hr_cfg", body.hr_cfg is None or body.hr_cfg == body.cfg_scale, "CFG scale"),
    ]
    for param, same, what in checks:
        if not same:
            raise A1111Error(
                f"{param}: a hires pass with a {what} of its own is not available in localimg; "
                f"it runs with the first pass's {what} (leave {param} out)",
                status=422,
                param=param,
            )
