"""LocalAI's `options: ["key:value"]` list, parsed once into typed values.

The key is the text before the first `:`; the value is everything after it, so a value may itself
contain `:` (a URL, a Windows path, `sampler:euler`). A bare `key` is a flag (`True`). Values are
typed the way a person writing YAML expects: integers, floats, booleans, JSON-style lists and maps,
`null`; anything else stays a string.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

# Option keys that repeat a request parameter: in `options:` they act as that YAML setting (the
# request still wins), instead of reaching the pipeline twice. LocalAI passes `cfg_scale:6` to the
# pipeline, which ignores it; here it sets the guidance scale.
OPTION_ALIASES: dict[str, str] = {
    "cfg_scale": "cfg_scale",
    "guidance_scale": "cfg_scale",
    "step": "steps",
    "steps": "steps",
    "num_inference_steps": "steps",
    "negative_prompt": "negative_prompt",
    "width": "width",
    "height": "height",
    "seed": "seed",
    "clip_skip": "clip_skip",
    "scheduler": "scheduler",
    "scheduler_type": "scheduler",
    "strength": "strength",
    "num_frames": "num_frames",
    "fps": "fps",
}

# A model's own prompt enhancer: localimg's option, then the pipelines' own names for it, which
# the diffusers backend takes as aliases, stable-diffusion.cpp refuses when on, and the batching
# reads (an enhancer samples per call).
PROMPT_ENHANCE_ALIASES = ("prompt_upsampling", "use_pe", "enable_prompt_enhancement")
PROMPT_ENHANCE_KEYS = ("prompt_enhance", *PROMPT_ENHANCE_ALIASES)

_INT = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?$")
_TRUE = {"true", "yes", "on"}
_FALSE = {"false", "no", "off"}


def parse_value(text: str) -> Any:
    """Type one option value."""
    value = text.strip()
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    if lowered in {"null", "none", "~"}:
        return None
    if _INT.match(value):
        return int(value)
    if _FLOAT.match(value):
        return float(value)
    if value[:1] in "[{" and value[-1:] in "]}":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            pass
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def parse_options(items: Iterable[Any]) -> dict[str, Any]:
    """`["cfg_scale:6", "diffusion_model"]` → `{"cfg_scale": 6, "diffusion_model": True}`."""
    parsed: dict[str, Any] = {}
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"each option must be a 'key:value' string, got {item!r}")
        key, sep, raw = item.partition(":")
        key = key.strip()
        if not key:
            raise ValueError(f"option {item!r} has no key (write 'key:value')")
        parsed[key] = parse_value(raw) if sep else True
    return parsed


# Step caching in `options:` (issue 16): `cache:<method>` picks the method, `cache_<knob>:value`
# sets one of its knobs (`cache_threshold:0.1`). Neither reaches the pipeline as a keyword: the
# engine's merge moves them into ImageRequest.cache / cache_options, and the backend applies them.
CACHE_KEY = "cache"
CACHE_KNOB_PREFIX = "cache_"


def is_cache_key(key: str) -> bool:
    """Whether an `options:` key belongs to step caching (`cache` or `cache_<knob>`)."""
    return key == CACHE_KEY or key.startswith(CACHE_KNOB_PREFIX)


def cache_from_options(options: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """The YAML's cache method (lower case, None when unset) and its knobs, prefix removed."""
    method = options.get(CACHE_KEY)
    knobs = {
        key[len(CACHE_KNOB_PREFIX) :]: value
        for key, value in options.items()
        if key.startswith(CACHE_KNOB_PREFIX)
    }
    if method is True or (method is not None and not isinstance(method, str)):
        raise ValueError(f"cache:{method!r} must name a method (cache:<method>)")
    return (method.strip().lower() if method else None), knobs
