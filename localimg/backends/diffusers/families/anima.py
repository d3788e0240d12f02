"""The rows of Anima (a diffusers modular pipeline)."""

from __future__ import annotations

from localimg.backends.diffusers.families.family import Family

ROWS: dict[str, Family] = {}
