"""What A1111 answers besides the pixels: the `info` JSON string, the grid, and png-info.

`info` carries the keys of A1111's `Processed.js()` (Open WebUI stores it with each image and
fails without it); `infotexts[i]` is the `parameters` text written into image i's PNG
(media/encode.a1111_parameters), so a client that reads either gets the same. With several
images A1111 returns a grid of them first (its `return_grid` option, on by default) and sets
`index_of_first_image` to 1; localimg does the same.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from localimg import __version__

if TYPE_CHECKING:
    from PIL.Image import Image


@dataclass
class Outcome:
    """The images a request made (over all its n_iter batches) and what made them."""

    images: list[Image] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    infotexts: list[str] = field(default_factory=list)
    width: int = 0
    height: int = 0
    steps: int = 0
    cfg_scale: float = 0.0
    sampler_label: str = ""
    strength: float | None = None
    clip_skip: int | None = None
    prompt: str = ""
    negative_prompt: str = ""
    interrupted: bool = False
    ignored: list[str] = field(default_factory=list)  # what the model left out (prompt weights)
    # A1111's extra_generation_params: the hires fix's fields ("Hires upscale", ...) when it ran
    extra: dict[str, Any] = field(default_factory=dict)


def grid(images: list[Image]) -> Image:
    """A1111's default grid: round(sqrt(n)) rows, as many columns as needed."""
    from PIL import Image as PILImage

    rows = max(1, min(len(images), round(math.sqrt(len(images)))))
    cols = math.ceil(len(images) / rows)
    width, height = images[0].size
    sheet = PILImage.new("RGB", (cols * width, rows * height), "black")
    for index, image in enumerate(images):
        sheet.paste(image, ((index % cols) * width, (index // cols) * height))
    return sheet


def info_json(
    outcome: Outcome,
    *,
    sampler_name: str | None,
    model: str,
    batch_size: int,
    subseed: int,
    styles: list[str],
    with_grid: bool,
    inpainting: bool,
) -> str:
    """The `info` string: A1111's Processed.js() keys, with localimg's values."""
    count = len(outcome.seeds)
    seed = outcome.seeds[0] if outcome.seeds else -1
    infotexts = list(outcome.infotexts)
    if with_grid and infotexts:
        infotexts.insert(0, infotexts[0])
    info: dict[str, Any] = {
        "prompt": outcome.prompt,
        "all_prompts": [outcome.prompt] * count,
        "negative_prompt": outcome.negative_prompt,
        "all_negative_prompts": [outcome.negative_prompt] * count,
        "seed": seed,
        "all_seeds": list(outcome.seeds),
        "subseed": subseed,
        "all_subseeds": [subseed] * count,
        "subseed_strength": 0,
        "width": outcome.width,
        "height": outcome.height,
        "sampler_name": sampler_name or outcome.sampler_label,
        "cfg_scale": outcome.cfg_scale,
        "steps": outcome.steps,
        "batch_size": batch_size,
        "restore_faces": False,
        "face_restoration_model": None,
        "sd_model_name": model,
        "sd_model_hash": None,
        "sd_vae_name": None,
        "sd_vae_hash": None,
        "seed_resize_from_w": -1,
        "seed_resize_from_h": -1,
        "denoising_strength": outcome.strength,
        "extra_generation_params": dict(outcome.extra),
        "index_of_first_image": 1 if with_grid else 0,
        "infotexts": infotexts,
        "styles": styles,
        "job_timestamp": time.strftime("%Y%m%d%H%M%S"),
        "clip_skip": (outcome.clip_skip or 0) + 1,
        "is_using_inpainting_conditioning": inpainting,
        "version": f"localimg {__version__}",
        "interrupted": outcome.interrupted,
    }
    return json.dumps(info)


# A1111's infotext: "prompt\nNegative prompt: ...\nSteps: 20, Sampler: Euler a, Size: 64x64".
PARAM_RE = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
SIZE_RE = re.compile(r"^(\d+)x(\d+)$")


def parse_parameters(text: str) -> dict[str, Any]:
    """An infotext back into fields, as A1111's png-info does (Prompt, Negative prompt, Steps,
    Size-1/Size-2, ...); numbers become numbers."""
    lines = text.strip().split("\n")
    last = lines[-1] if lines else ""
    matches = PARAM_RE.findall(last)
    if len(matches) < 3:  # the last line is prompt text, not parameters
        last = ""
    else:
        lines = lines[:-1]
    prompt: list[str] = []
    negative: list[str] = []
    into = prompt
    for line in lines:
        if line.startswith("Negative prompt:"):
            into = negative
            line = line[len("Negative prompt:") :].strip()
        into.append(line)
    result: dict[str, Any] = {
        "Prompt": "\n".join(prompt).strip(),
        "Negative prompt": "\n".join(negative).strip(),
    }
    for key, raw in PARAM_RE.findall(last):
        value = raw.strip()
        if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
            try:
                value = json.loads(value)
            except ValueError:
                value = value[1:-1]
        size = SIZE_RE.match(value)
        if size:
            result[f"{key}-1"], result[f"{key}-2"] = int(size[1]), int(size[2])
        else:
            result[key] = _number(value)
    return result


def _number(value: str) -> Any:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            continue
    return value
