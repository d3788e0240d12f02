"""The rows of ERNIE-Image."""

from __future__ import annotations

from localimg.backends.diffusers.families.family import Family

ROWS: dict[str, Family] = {}
