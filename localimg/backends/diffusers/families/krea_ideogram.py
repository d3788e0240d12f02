"""The rows of Krea 2 and Ideogram 4."""

from __future__ import annotations

from localimg.backends.diffusers.families.family import Family

ROWS: dict[str, Family] = {}
