"""What the hires fix costs: a small first pass, an upscale and a second img2img pass, against
generating at the final size directly.

Each contender is its own process (bench/contenders.py: a fresh interpreter that loads the model
and warms up with one generation); they stay loaded and the parent has them generate one at a
time, alternating (who goes first rotates every round, with a pause before each), --runs times
each: the same seed and prompt through `Engine.generate`. Contenders: `direct` (one generation at
the final size, --steps steps), `latent` and `lanczos` (the first pass at --size, --steps steps,
then the second at twice the size, the same steps at denoise 0.5, so it runs half of them). It
prints the median seconds of each and their ratio to `direct`.

    python bench/bench_hires.py                      # the tests' tiny SD1 model, 64 → 128 (seconds)
    python bench/bench_hires.py --model sd15         # SD1.5 shapes, random weights (bench/sd15.py:
                                                     # 4 GB on first use), 512 → 1024

Engines are a table (ENGINES), one row each: a function that writes the engine's YAML into the
models folder and returns the model's name, and the upscalers it runs.
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
print = functools.partial(print, flush=True)  # progress shows as it happens

PROMPT = "a lighthouse on a cliff at dusk"
SEED = 1
DENOISE = 0.5


def write_diffusers(folder: Path, model: str) -> tuple[str, tuple[str, ...]]:
    """The diffusers YAML; the model's name and the upscalers the engine runs."""
    if model == "tiny":
        from tests.support.tiny_models import tiny_sd_path

        pipeline = tiny_sd_path()
    else:
        from sd15 import sd15_folder

        pipeline = sd15_folder()
    (folder / "bench-diffusers.yaml").write_text(
        f"name: bench-diffusers\nbackend: diffusers\nparameters:\n  model: {pipeline}\n",
        encoding="utf-8",
    )
    return "bench-diffusers", ("latent", "lanczos")


# engine → writes its YAML into the models folder and returns the model's name and the
# upscalers to time (a row per engine; stable-diffusion.cpp runs the latent one natively).
ENGINES: dict[str, Callable[[Path, str], tuple[str, tuple[str, ...]]]] = {
    "diffusers": write_diffusers,
}


def child(models: Path, name: str, upscaler: str, steps: int, size: int) -> None:
    """One contender: `direct` at twice `size`, else a hires fix with `upscaler`."""
    from contenders import serve

    from localimg.engine import Engine, EngineSettings
    from localimg.requests import HiresFix, ImageRequest

    # No keep-alive: a contender waits while the others load and must not unload meanwhile.
    engine = Engine(EngineSettings(models_path=models, keep_alive=None))
    if upscaler == "direct":
        request = ImageRequest(
            prompt=PROMPT, seed=SEED, steps=steps, width=2 * size, height=2 * size
        )
    else:
        hires = HiresFix(scale=2, upscaler=upscaler, denoise=DENOISE)
        request = ImageRequest(
            prompt=PROMPT, seed=SEED, steps=steps, width=size, height=size, hires=hires
        )

    def setup() -> Callable[[], object]:
        engine.generate(name, request)  # load + warm-up
        return lambda: engine.generate(name, request).images[0]

    try:
        serve(setup)
    finally:
        engine.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["tiny", "sd15"], default="tiny")
    parser.add_argument("--engine", choices=[*ENGINES, "all"], default="all")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--size", type=int, default=None, help="[default: 64 tiny, 512 sd15]")
    parser.add_argument("--runs", type=int, default=3, help="timed generations per contender")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        models, name, upscaler, steps, size = args.child
        child(Path(models), name, upscaler, int(steps), int(size))
        return
    from contenders import Contender, alternate

    size = args.size or (64 if args.model == "tiny" else 512)
    models = Path(tempfile.mkdtemp(prefix="bench-hires-")) / "models"
    models.mkdir(parents=True)
    engines = list(ENGINES) if args.engine == "all" else [args.engine]
    print(
        f"model {args.model}, {size}x{size} → {2 * size}x{2 * size}, {args.steps} steps "
        f"(second pass: denoise {DENOISE}); {args.runs} runs each, alternating, each contender "
        "its own process"
    )
    for engine in engines:
        name, upscalers = ENGINES[engine](models, args.model)
        labels = ["direct", *upscalers]
        contenders = [
            Contender(
                __file__,
                [str(models), name, label, str(args.steps), str(size)],
                f"{engine} {label}",
            )
            for label in labels
        ]
        try:
            alternate(args.runs, [c.run for c in contenders])
            for contender in contenders:
                contender.finish()
        finally:
            for contender in contenders:
                contender.close()
        direct = contenders[0].median()
        for label, contender in zip(labels, contenders, strict=True):
            seconds = contender.median()
            print(f"{engine:10s} {label:8s} {seconds:8.2f}s   x{seconds / direct:.2f} of direct")


if __name__ == "__main__":
    main()
