"""Peak memory of half precision against float32: `localimg generate` with the same weights twice,
once as bfloat16 and once as float32, each in a clean process of its own.

Run: `python bench/bench_precision_memory.py [--model sd15|tiny] [--runs 2]`.

Each contender is `python -m localimg generate "an otter" --model M.yaml --size 64x64 --steps 1`
(64x64 and one step, so the weights and not the activations decide the peak). The peak is the
process's maximum resident set size (as `/usr/bin/time` reports it, read here with os.wait4). The
bfloat16 YAML says `options: ["dtype:bfloat16"]`, so it measures bfloat16 on any CPU (on one
without native bfloat16 it is slower, not bigger). Half precision holds half the weights: the
goal is a bfloat16 peak at most 0.60x float32's. Prints the median of `--runs` alternating rounds
and `ratio bfloat16 / float32: X (goal <= 0.60)`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GOAL = 0.60
CONTENDERS = {
    "bfloat16": 'options: ["dtype:bfloat16"]\n',
    "float32": "f16: false\n",
}


def write_yaml(folder: Path, name: str, weights: Path, extra: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(f"name: {name}\nparameters:\n  model: {weights}\n{extra}", encoding="utf-8")
    return path


def peak_rss(yaml: Path, out: Path) -> float:
    """GB: the maximum resident set size of one `localimg generate` process."""
    command = [sys.executable, "-m", "localimg", "generate", "an otter", "--model", str(yaml)]
    command += ["--size", "64x64", "--steps", "1", "--seed", "1", "-o", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    stderr = process.stderr.read().decode() if process.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{stderr}")
    return usage.ru_maxrss * 1024 / 1e9  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("sd15", "tiny"), default="sd15")
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    from sd15 import model_folder

    weights = model_folder(args.model)
    peaks: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        yamls = {
            name: write_yaml(folder, name, weights, extra) for name, extra in CONTENDERS.items()
        }
        for round_ in range(args.runs):
            order = list(CONTENDERS) if round_ % 2 == 0 else list(reversed(CONTENDERS))
            for name in order:
                peaks[name].append(peak_rss(yamls[name], folder / f"{name}.png"))
    print(f"model {args.model} ({weights.name}), 64x64, 1 step, {args.runs} runs each")
    for name, values in peaks.items():
        shown = ", ".join(f"{v:.2f}" for v in values)
        print(f"  {name:9} peak RSS median {statistics.median(values):.2f} GB ({shown})")
    ratio = statistics.median(peaks["bfloat16"]) / statistics.median(peaks["float32"])
    verdict = "" if ratio <= GOAL else "  over goal"
    print(f"ratio bfloat16 / float32: {ratio:.3f} (goal <= {GOAL:.2f}){verdict}")


if __name__ == "__main__":
    main()
