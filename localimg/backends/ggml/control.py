"""ControlNet on stable-diffusion.cpp: one unit, SD1.x and SDXL, part of the loaded context.

stable-diffusion.cpp loads a ControlNet with the model (`control_net_path`, a constructor
argument) and adds its outputs to every step's UNet skip connections, scaled by the call's
`control_strength`. So:
- one unit per generation (there is one ControlNet in a context); the diffusers engine stacks
  several;
- no guidance start/end: the ControlNet acts at every step, so a unit asking for less is
  refused rather than silently run on all steps;
- the ControlNet is built with the loaded family's fixed widths (control.hpp): SD1.x or SDXL;
- a request whose ControlNet differs from the loaded one reloads the model with it; a request
  without a unit runs on whatever context is loaded (with no control image the ControlNet is
  never run, the image is the plain one);
- strength 0 is the plain image: no control image is passed at all.
The engine has run the preprocessors already: a unit's image is a control map.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from localimg.backends.ggml.families import Family
from localimg.config import ModelConfig
from localimg.errors import ConfigError, InvalidRequest, ModelNotFound
from localimg.requests import ControlUnit

# stable-diffusion.cpp versions (families.py) whose UNet its ControlNet fits: SD1.x and SDXL at
# their standard widths (not the tiny UNets, SDXS, SSD-1B or Vega, whose blocks differ).
CONTROL_FAMILIES = ("SD 1.x", "SD 1.x Inpaint", "SDXL", "SDXL Inpaint")
FILE_SUFFIXES = (".safetensors", ".gguf", ".ckpt", ".pth")
# A tensor every ControlNet file has, under the names stable-diffusion.cpp reads (bare, or
# lllyasviel's `control_model.` prefix, which it strips).
HINT_KEY = "input_hint_block.0.weight"
DIFFUSERS_KEY = "controlnet_cond_embedding.conv_in.weight"


def check_units(controls: tuple[ControlUnit, ...]) -> None:
    """Refuse, before queueing, what stable-diffusion.cpp cannot do with ControlNet units."""
    if len(controls) > 1:
        raise InvalidRequest(
            f"{len(controls)} ControlNet units: stable-diffusion.cpp applies one ControlNet per "
            "image; send one control image, or use the diffusers engine (backend: diffusers), "
            "which stacks several",
            param="control_image",
        )
    for unit in controls:
        if unit.start != 0 or unit.end != 1:
            raise InvalidRequest(
                f"control_start {unit.start:g} / control_end {unit.end:g}: stable-diffusion.cpp "
                "applies the ControlNet at every step (it has no guidance start or end); leave "
                "them at 0 and 1, or use the diffusers engine",
                param="control_start",
            )


def control_file(ref: str, config: ModelConfig, param: str = "control_net") -> str:
    """The ControlNet file `ref` names (a name in `controlnet/`, or a path), checked to be one
    file in a layout stable-diffusion.cpp reads."""
    from localimg.config.controlnets import resolve_controlnet

    found = resolve_controlnet(ref, config.models_path)
    path = Path(found)
    if not path.exists():
        raise ModelNotFound(
            f"ControlNet {ref!r} is a hub repo id; stable-diffusion.cpp reads one ControlNet "
            "file: put its .safetensors in the models directory's controlnet/ folder",
            param=param,
        )
    if path.is_dir() or path.suffix.lower() not in FILE_SUFFIXES:
        raise InvalidRequest(
            f"ControlNet {ref!r} ({path}) is not a single weight file; stable-diffusion.cpp "
            f"reads one ControlNet file ({', '.join(FILE_SUFFIXES)}) in the original layout "
            "(control_model.*), not a diffusers folder",
            param=param,
        )
    _check_layout(ref, path, param)
    return str(path)


def _check_layout(ref: str, path: Path, param: str) -> None:
    """A .safetensors ControlNet in diffusers' names, or no ControlNet at all, is refused from
    its header: stable-diffusion.cpp would fail to load the model with it."""
    if path.suffix.lower() != ".safetensors":
        return
    try:
        with path.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            keys = set(json.loads(handle.read(length)))
    except (OSError, ValueError, struct.error):
        return  # stable-diffusion.cpp says what is wrong with it when it loads
    if any(key.endswith(HINT_KEY) for key in keys):
        return
    why = (
        "it is in diffusers' layout (controlnet_cond_embedding.*); stable-diffusion.cpp reads "
        "the original layout (control_model.*)"
        if DIFFUSERS_KEY in keys
        else f"it has no {HINT_KEY} tensor, so it is no ControlNet stable-diffusion.cpp reads"
    )
    raise InvalidRequest(f"ControlNet {ref!r} ({path.name}): {why}", param=param)


def yaml_control_file(config: ModelConfig) -> str | None:
    """The YAML's `control_net` as a file, or None; loaded with the model."""
    ref = config.default_control_net
    if not ref:
        return None
    try:
        return control_file(ref, config, param="control_net")
    except (InvalidRequest, ModelNotFound) as exc:
        raise ConfigError(f"{config.where}: control_net: {exc.message}") from None


def check_family(family: Family) -> None:
    """stable-diffusion.cpp's ControlNet has SD1.x's or SDXL's widths."""
    if family.name not in CONTROL_FAMILIES:
        raise InvalidRequest(
            f"ControlNet on stable-diffusion.cpp works with SD1.x and SDXL models (and their "
            f"inpainting versions); this is {family.label}. Use the diffusers engine for "
            "ControlNet on other families",
            param="control_image",
        )


def wanted(controls: tuple[ControlUnit, ...], config: ModelConfig) -> tuple[str | None, Any]:
    """(the ControlNet file the request needs, its unit) or (None, None) when it needs none:
    no unit, or a unit at strength 0 (the plain image)."""
    if not controls or not controls[0].strength:
        return None, None
    unit = controls[0]
    assert unit.net is not None, "the engine merges each unit's ControlNet"
    return control_file(unit.net, config), unit


def call_keywords(unit: ControlUnit | None, width: int, height: int) -> dict[str, Any]:
    """generate_image's ControlNet arguments: the control map at the output size and its
    strength; none for no unit (the `canny` flag stays off: the engine preprocesses)."""
    if unit is None:
        return {}
    from PIL import Image as PILImage

    image = unit.image.convert("RGB")
    if image.size != (width, height):
        image = image.resize((width, height), PILImage.Resampling.LANCZOS)
    return {"control_image": image, "control_strength": float(unit.strength or 0.0)}
