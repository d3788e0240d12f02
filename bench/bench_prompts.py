"""What the A1111 prompt language costs on the diffusers engine: a weighted prompt against the same
words plain, and a `<lora:...>` tag the first time (the adapter loads) and once cached.

Run: `python bench/bench_prompts.py [--model sd15|tiny] [--size 256] [--steps 4] [--runs 3]`.

One process, one Engine, the model loaded and warmed up first; then the contenders generate one at
a time, alternating (who goes first swaps every round), with the same seed, so a machine whose
load drifts slows both alike. A random LoRA for the model's UNet (rank 4 on the attention
projections) is built in a temporary `loras/` folder. Prints each median and the ratios against
the plain prompt: `weighted / plain` (goal <= 1.05: compel encodes the prompt once per call),
`LoRA cached / plain` (goal <= 1.10) and the first tagged call (which loads the adapter).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

PLAIN = "a red fox in the snow, detailed fur, soft light"
WEIGHTED = "a (red fox:1.3) in the [snow], ((detailed fur)), soft light"
TAGGED = PLAIN + " <lora:bench:0.8>"
GOALS = {"weighted": 1.05, "lora cached": 1.10}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("sd15", "tiny"), default="sd15")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    from sd15 import model_folder

    from localimg.engine import Engine, EngineSettings
    from localimg.requests import ImageRequest
    from tests.support.tiny_models import build_tiny_lora

    weights = model_folder(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp)
        (models / "m.yaml").write_text(
            f"name: m\nparameters:\n  model: {weights}\nstep: {args.steps}\ncfg_scale: 5\n",
            encoding="utf-8",
        )
        build_tiny_lora(weights, models / "loras" / "bench.safetensors")
        engine = Engine(EngineSettings(models_path=models))

        def timed(prompt: str) -> float:
            request = ImageRequest(prompt=prompt, seed=1, width=args.size, height=args.size)
            begin = time.perf_counter()
            engine.generate("m", request)
            return time.perf_counter() - begin

        timed(PLAIN)  # load and warm up
        first_tag = timed(TAGGED)
        times: dict[str, list[float]] = {"plain": [], "weighted": [], "lora cached": []}
        prompts = {"plain": PLAIN, "weighted": WEIGHTED, "lora cached": TAGGED}
        for round_ in range(args.runs):
            order = list(prompts) if round_ % 2 == 0 else list(reversed(prompts))
            for name in order:
                times[name].append(timed(prompts[name]))
        engine.close()
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"model {args.model}, {args.size}x{args.size}, {args.steps} steps, {args.runs} runs each")
    for name, value in medians.items():
        print(f"  {name:12} median {value:7.3f} s")
    print(f"  first tagged call (loads the adapter) {first_tag:7.3f} s")
    for name, goal in GOALS.items():
        ratio = medians[name] / medians["plain"]
        verdict = "" if ratio <= goal else "  over goal"
        print(f"ratio {name} / plain: {ratio:.3f} (goal <= {goal:.2f}){verdict}")
    print(f"ratio first tagged / plain: {first_tag / medians['plain']:.3f}")


if __name__ == "__main__":
    main()
