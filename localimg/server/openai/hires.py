"""The hires fix as extension fields of the OpenAI-style bodies → `ImageRequest.hires`.

`hires_scale`, `hires_size` ("WxH"), `hires_upscaler`, `hires_steps`, `hires_denoise`,
`hires_prompt` and `hires_negative_prompt` ask for a hires fix (any one of them turns it on);
`hires: false` turns off the one a model's YAML `hires:` block gives every request, and
`hires: true` alone asks for one with the YAML's or the default settings. What a request leaves
unset stays None here: the engine's merge fills it (engine/merge.py `merged_hires`).
"""

from __future__ import annotations

from typing import Protocol

from localimg.errors import InvalidRequest
from localimg.requests import HiresFix, parse_size

# The body fields that ask for a hires fix, each with the HiresFix field it sets.
HIRES_FIELDS = {
    "hires_scale": "scale",
    "hires_upscaler": "upscaler",
    "hires_steps": "steps",
    "hires_denoise": "denoise",
    "hires_prompt": "prompt",
    "hires_negative_prompt": "negative_prompt",
}


class HiresParams(Protocol):
    """A parsed body with the hires fields (schemas.ImageParams)."""

    hires: bool | None
    hires_scale: float | None
    hires_size: str | None
    hires_upscaler: str | None
    hires_steps: int | None
    hires_denoise: float | None
    hires_prompt: str | None
    hires_negative_prompt: str | None


def hires_fix(params: HiresParams) -> HiresFix | None:
    """The hires fix a body asks for; None when it says nothing of one (the YAML decides)."""
    values = {
        target: getattr(params, name)
        for name, target in HIRES_FIELDS.items()
        if getattr(params, name) is not None
    }
    given = sorted(name for name, target in HIRES_FIELDS.items() if target in values)
    if params.hires_size is not None:
        given.append("hires_size")
        values["width"], values["height"] = _size(params.hires_size)
    if params.hires is False:
        if given:
            raise InvalidRequest(
                f"hires is false but {', '.join(given)} asks for a hires fix; send one or the "
                "other",
                param="hires",
            )
        return HiresFix(enabled=False)
    if not values and params.hires is None:
        return None
    return HiresFix(**values)


def _size(text: str) -> tuple[int, int]:
    try:
        return parse_size(text)
    except InvalidRequest as exc:
        message = "hires_" + exc.message if exc.message.startswith("size") else exc.message
        raise InvalidRequest(message, param="hires_size") from None
