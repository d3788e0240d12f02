"""Durations and memory sizes as people write them: `5m`, `90s`, `1h30m`, `12GiB`, `512M`.

Used by `--keep-alive`, `keep_alive:` in a model's YAML and `--max-memory`; kept free of heavy
imports so the CLI parses them without loading anything.
"""

from __future__ import annotations

import math
import re

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_NEVER = {"-1", "never", "forever", "inf", "infinite", "none"}

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_SIZE_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}


def parse_duration(text: str | float | int) -> float | None:
    """Seconds from `300`, `90s`, `5m`, `1h30m`, `0`; None (never) from `-1`/`never`/`forever`.

    A bare number is seconds (like ollama's keep_alive). Raises ValueError with what is allowed.
    """
    if isinstance(text, bool):
        raise ValueError(f"{text!r} is not a duration")
    if isinstance(text, int | float):
        if text < 0:
            return None
        if math.isnan(text) or math.isinf(text):
            return None
        return float(text)
    value = text.strip().lower()
    if value in _NEVER:
        return None
    try:
        number = float(value)
    except ValueError:
        pass
    else:
        return None if number < 0 else number
    position = 0
    total = 0.0
    for match in _DURATION_PART.finditer(value):
        if match.start() != position:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    if position != len(value) or not value:
        raise ValueError(
            f"{text!r} is not a duration; use seconds (300) or a number with a unit "
            "(90s, 5m, 1h30m, 2d), 0 to unload right after each request, or -1/never"
        )
    return total


def format_duration(seconds: float | None) -> str:
    """The reverse, for messages and `/v1/models`: 300 → "5m", None → "never"."""
    if seconds is None:
        return "never"
    if seconds and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"


def parse_bytes(text: str | int) -> int:
    """Bytes from `12G`, `12GiB`, `512MB`, `1.5g`, `1073741824` (K/M/G/T are powers of 1024).

    Memory is sold and reported in binary units, so `G` and `GiB` mean the same here.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"{text} is negative; a memory size must be positive")
        return text
    match = _SIZE.match(str(text))
    if not match:
        raise ValueError(
            f"{text!r} is not a memory size; use a number with an optional unit: "
            "512M, 12G, 12GiB, 1.5T (K/M/G/T are powers of 1024)"
        )
    number, unit = float(match.group(1)), match.group(2).lower()
    return int(number * 1024 ** _SIZE_POWERS[unit])


def format_bytes(count: float | None) -> str:
    """1536 → "1.5 KiB" (for messages and tables)."""
    if count is None:
        return "?"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
