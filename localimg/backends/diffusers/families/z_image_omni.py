"""The rows of Z-Image-Omni (reference edits)."""

from __future__ import annotations

from localimg.backends.diffusers.families.family import Family

ROWS: dict[str, Family] = {}
