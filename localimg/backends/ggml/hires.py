"""The latent hires fix inside stable-diffusion.cpp: one generate_image call runs both passes.

The library samples the first pass, resizes its latents to the final size (A1111's latent modes),
noises them to the hires denoise and samples again, and returns the final-size image. Only the
latent modes run here (`Capabilities.latent_hires`); a pixel upscaler's hires fix is run by the
engine's slot as two calls. The second pass reuses the first pass's prompts, sampler and
ControlNet-free conditioning, so a different hires prompt, and ControlNet units, are refused.

Its step count follows the library (sd-webui's rule): a schedule of int(steps / denoise) steps
trimmed at the denoise, of which int(schedule * denoise) + 1 are run (at most the schedule). The
progress callback reports each pass with its own total; `StepCounter` counts both as one run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from localimg.backends.ggml.families import Family
from localimg.errors import BackendError, InvalidRequest
from localimg.request_parts import (
    HIRES_DEFAULT_DENOISE,
    HIRES_LATENT,
    HiresFix,
    is_latent_upscaler,
)
from localimg.requests import ImageRequest

# A1111's latent modes (lowercased, as request_parts.LATENT_UPSCALERS names them) → the
# binding's names in its SD_HIRES_UPSCALER_MAP.
LIBRARY_NAMES = {
    "latent": "latent",
    "latent (nearest)": "latent_nearest",
    "latent (nearest-exact)": "latent_nearest_exact",
    "latent (bicubic)": "latent_bicubic",
    "latent (antialiased)": "latent_antialiased",
    "latent (bicubic antialiased)": "latent_bicubic_antialiased",
}


def library_modes() -> dict[str, str]:
    """The latent modes the installed library has: localimg's name → the library's."""
    from stable_diffusion_cpp import stable_diffusion as wrapper

    known = getattr(wrapper, "SD_HIRES_UPSCALER_MAP", {})
    return {mine: theirs for mine, theirs in LIBRARY_NAMES.items() if theirs in known}


def library_name(upscaler: str) -> str:
    """The library's name of a latent upscaler; a mode it lacks is refused naming those it has."""
    name = upscaler.strip().lower()
    modes = library_modes()
    if name in modes:
        return modes[name]
    have = ", ".join(repr(mode) for mode in modes) or "none (upgrade stable-diffusion-cpp-python)"
    raise InvalidRequest(
        f"stable-diffusion.cpp has no latent hires upscaler {upscaler!r}; it has: {have}",
        param="hires_upscaler",
    )


def check_request(request: ImageRequest) -> None:
    """Before queueing: a latent mode the library lacks, a hires prompt of its own, ControlNet."""
    hires = request.hires
    if hires is None or not hires.enabled:
        return
    if hires.upscaler is not None and is_latent_upscaler(hires.upscaler):
        library_name(hires.upscaler)
    check_passes(request, hires)


def check_passes(request: ImageRequest, hires: HiresFix) -> None:
    """What the second pass cannot differ in: the library reuses the first pass's conditioning."""
    if hires.prompt is not None and hires.prompt != request.prompt:
        raise InvalidRequest(
            "stable-diffusion.cpp runs the hires pass with the first pass's prompt; "
            "hires_prompt must be empty or the same",
            param="hires_prompt",
        )
    negative = hires.negative_prompt
    if negative is not None and negative != (request.negative_prompt or ""):
        raise InvalidRequest(
            "stable-diffusion.cpp runs the hires pass with the first pass's negative prompt; "
            "hires_negative_prompt must be empty or the same",
            param="hires_negative_prompt",
        )
    if request.controls:
        raise InvalidRequest(
            "stable-diffusion.cpp's latent hires fix cannot take ControlNet units (its second "
            "pass would read the control map at the first size); use a pixel upscaler such as "
            "lanczos, or turn the hires fix off",
            param="hires",
        )


def call_keywords(request: ImageRequest, family: Family) -> dict[str, Any]:
    """generate_image's hires keywords for a merged request (empty without a hires fix)."""
    hires = request.hires
    if hires is None:
        return {}
    upscaler = hires.upscaler or HIRES_LATENT
    if not is_latent_upscaler(upscaler):
        raise BackendError(
            f"the hires upscaler {upscaler!r} is a pixel upscaler, which the engine runs; it "
            "reached the stable-diffusion.cpp backend"
        )
    check_family(request, family)
    check_passes(request, hires)
    assert hires.width is not None and hires.height is not None
    return {
        "hires": True,
        "hires_upscaler": library_name(upscaler),
        "hires_width": hires.width,
        "hires_height": hires.height,
        "hires_steps": hires.steps or 0,
        "hires_denoising_strength": float(hires.denoise or HIRES_DEFAULT_DENOISE),
    }


def check_family(request: ImageRequest, family: Family) -> None:
    """A video family takes no hires fix (the library runs it on images only)."""
    if request.hires is not None and family.video:
        raise InvalidRequest(
            f"{family.label} makes videos; the hires fix is for images (turn it off)",
            param="hires",
        )


def second_pass_steps(steps: int, denoise: float) -> int:
    """The steps the library's hires pass runs: its schedule of int(steps / denoise) steps
    trimmed at `denoise` (float32 arithmetic, as in C)."""
    import numpy as np

    strength = np.float32(min(max(denoise, 0.0001), 1.0))
    schedule = max(1, int(np.float32(max(1, steps)) / strength))
    t_enc = min(int(np.float32(schedule) * strength), schedule - 1)
    return t_enc + 1


@dataclass
class StepCounter:
    """One image's sampler steps over its passes as one count: the first pass reports
    (k, first), a hires pass (k, second); everything else the callback reports (tensor loading,
    VAE tiles) is skipped, and steps only go forward."""

    first: int
    second: int = 0
    done: int = 0  # steps of this image reported so far (both passes)
    _pass: int = field(default=1, init=False)

    @property
    def total(self) -> int:
        return self.first + self.second

    @property
    def offset(self) -> int:
        """Steps before the running pass (to number its previews)."""
        return 0 if self._pass == 1 else self.first

    def step(self, step: int, steps: int) -> int | None:
        """The image's step count after this report, or None when it is not a sampler step."""
        if not 0 < step <= steps:
            return None
        if self._pass == 1 and steps == self.first and step > self.done:
            self.done = step
            if step == self.first:
                self._pass = 2
            return self.done
        if self._pass == 2 and steps == self.second and self.first + step > self.done:
            self.done = self.first + step
            return self.done
        return None
