"""diffusers against stablediffusion-ggml on the same weights, side by side in one run.

The SD1.5-size random model of bench/sd15.py, once as a diffusers folder and once as the same
tensors in one original-layout checkpoint that stable-diffusion.cpp loads. Both backends run in
their own worker process (as `localimg serve` runs them, so neither inherits the other's thread
pools), with the same size, steps, seed, sampler (Euler), cfg scale and thread count, alternating,
and the medians are printed with their ratio. Both compute in float32 here; the text encoders'
tokenizers differ (the bench model has a toy vocabulary), so the images differ: this measures
speed, not pixels.

    python bench/bench_backends.py --size 256 --steps 4 --runs 3
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
print = functools.partial(print, flush=True)  # progress shows as it happens

YAML = {
    "diffusers": "name: sd15-diffusers\nbackend: diffusers\nparameters:\n  model: {model}\n",
    "ggml": (
        "name: sd15-ggml\nbackend: stablediffusion-ggml\nparameters:\n  model: {model}\n"
        'options:\n- "sampler:euler"\n'
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    from sd15 import sd15_checkpoint, sd15_folder

    from localimg._util.system import physical_cores
    from localimg.backends.base import RuntimeSettings
    from localimg.engine import Engine, EngineSettings, worker_slot_factory
    from localimg.requests import ImageRequest

    threads = args.threads or physical_cores()
    started = time.perf_counter()
    folder, checkpoint = sd15_folder(), sd15_checkpoint()
    print(f"model: sd15 random weights, ready in {time.perf_counter() - started:.1f} s")
    models = Path(tempfile.mkdtemp(prefix="bench-backends-"))
    (models / "sd15-diffusers.yaml").write_text(YAML["diffusers"].format(model=folder))
    (models / "sd15-ggml.yaml").write_text(YAML["ggml"].format(model=checkpoint))
    engine = Engine(
        EngineSettings(models_path=models, runtime=RuntimeSettings(threads=threads)),
        slot_factory=worker_slot_factory(),
    )
    request = ImageRequest(
        prompt="a red fox in the snow",
        width=args.size,
        height=args.size,
        steps=args.steps,
        seed=1,
        cfg_scale=7.0,
        scheduler="euler",
    )
    names = {"diffusers": "sd15-diffusers", "stablediffusion-ggml": "sd15-ggml"}
    times: dict[str, list[float]] = {backend: [] for backend in names}
    loads: dict[str, float] = {}
    print(f"{args.size}x{args.size}, {args.steps} steps, euler, cfg 7, {threads} threads")
    try:
        for backend, model in names.items():  # load and warm up, one at a time
            result = engine.generate(model, request)
            loads[backend] = result.timings.get("load", float("nan"))
            assert result.images[0].size == (args.size, args.size)
            engine.unload(model)
        for _ in range(args.runs):
            for backend, model in names.items():
                engine.generate(model, request)  # loads it (not timed)
                begin = time.perf_counter()
                result = engine.generate(model, request)
                times[backend].append(time.perf_counter() - begin)
                assert result.images[0].size == (args.size, args.size)
                engine.unload(model)  # one model in memory at a time: no swapping
    finally:
        engine.close()
    medians = {backend: statistics.median(values) for backend, values in times.items()}
    for backend, values in times.items():
        runs = ", ".join(f"{v:.2f}" for v in values)
        print(
            f"  {backend:22s} {medians[backend]:8.2f} s per image (runs {runs}); "
            f"first load {loads[backend]:.1f} s"
        )
    ratio = medians["stablediffusion-ggml"] / medians["diffusers"]
    print(f"  ratio ggml / diffusers: {ratio:.3f}")


if __name__ == "__main__":
    main()
