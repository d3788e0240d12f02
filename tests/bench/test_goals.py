"""bench/goals.py: every figure with a goal is found in its benchmark's own words, and one over
its goal says so (what `make bench` prints after each benchmark and in its summary)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from goals import verdicts  # bench/ is not a package: on the path above

OUTPUT = """\
model: sd15 random SD pipeline, 256x256, 4 steps, median of 2 (in-process: 8) runs
whole process  localimg generate  24.097 s | bare diffusers script  23.844 s | ratio 1.011
in process     Engine.generate    15.863 s | bare pipe() call       15.276 s | ratio 1.038
  ratio HTTP / direct: 1.0120  (server overhead +1.20%), same pixels
    ZImagePipeline                   0.098       0.056   0.578            0
process      localimg generate    5.651s  bare python           5.326s  ratio 1.061  (same pixels)
    diffusers  3 previews  37.518s   none  37.330s   ratio 1.005 (+0.5%)   same final pixels
start-up       localimg --help     0.291 s | imports torch: False
"""


def test_each_figure_gets_its_goal_and_a_verdict() -> None:
    assert verdicts(OUTPUT) == [
        "whole process, localimg generate / bare script: 1.011, goal <= 1.02: met",
        "in process, Engine.generate / bare pipe(): 1.038, goal <= 1.02: over goal",
        "HTTP / direct: 1.012, goal <= 1.02: met",
        "family, localimg / bare diffusers (ZImagePipeline): 0.578, goal <= 1.02: met",
        "ggml, contender / bare binding (process localimg generate): 1.061, goal <= 1.02: "
        "over goal",
        "3 previews / none: 1.005, goal <= 1.05: met",
    ]


def test_output_without_figures_gives_no_lines() -> None:
    assert verdicts("wrote bench/RESULTS.md\nnothing measured here") == []
