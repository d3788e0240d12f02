"""The goal of each figure `make bench` prints, and whether a run met it.

Each benchmark prints its figures in its own words (`in process ... ratio X`, `ratio HTTP /
direct: X`, a table row per model family); here every figure that has a goal is found in that
output by a pattern, and `verdicts` gives one line per figure: its value, its goal, and
"over goal" where the median exceeds it. run_all.py prints these lines after each benchmark and
copies them into RESULTS.md, so a regression shows in the summary without reading every table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Goal:
    figure: str  # what the number is, in the summary line
    pattern: str  # a regex over one output line; group "value" is the figure, "what" names it
    at_most: float


WRAPPER = 1.02  # localimg's cost over the bare library call, in every form
GOALS: tuple[Goal, ...] = (
    Goal(
        "in process, Engine.generate / bare pipe()",
        r"^in process\s+Engine\.generate.*\|\s*ratio (?P<value>[\d.]+)",
        WRAPPER,
    ),
    Goal(
        "whole process, localimg generate / bare script",
        r"^whole process\s+localimg generate.*\|\s*ratio (?P<value>[\d.]+)",
        WRAPPER,
    ),
    Goal("HTTP / direct", r"ratio HTTP / direct: (?P<value>[\d.]+)", WRAPPER),
    Goal(
        "family, localimg / bare diffusers",
        r"^(?P<what>\w+Pipeline)\s+[\d.]+\s+[\d.]+\s+(?P<value>[\d.]+)\s+-?\d+$",
        WRAPPER,
    ),
    Goal("3 previews / none", r"ratio (?P<value>[\d.]+) \([+-][\d.]+%\)", 1.05),
    Goal(
        "ggml, contender / bare binding",
        r"^(?P<what>.+?)\s+[\d.]+s\s+.+?\s+[\d.]+s\s+ratio (?P<value>[\d.]+)",
        WRAPPER,
    ),
)


def verdicts(output: str) -> list[str]:
    """One line per figure with a goal found in a benchmark's output."""
    lines = []
    for raw in output.splitlines():
        text = raw.strip()
        for goal in GOALS:
            found = re.search(goal.pattern, text)
            if found is None:
                continue
            value = float(found.group("value"))
            what = " ".join((found.groupdict().get("what") or "").split())
            label = f"{goal.figure} ({what})" if what else goal.figure
            verdict = "met" if value <= goal.at_most else "over goal"
            lines.append(f"{label}: {value:.3f}, goal <= {goal.at_most:.2f}: {verdict}")
            break
    return lines
