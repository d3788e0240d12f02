"""The rows of Qwen-Image 2.x (QwenImage21Pipeline) and Qwen-Image-Layered."""

from __future__ import annotations

from localimg.backends.diffusers.families.family import Family

ROWS: dict[str, Family] = {}
