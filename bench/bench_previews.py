"""What previews cost: a 20-step generation with 3 previews vs none, on both engines.

Each contender is its own process (a fresh interpreter that loads the model and warms up with one
generation), both stay loaded, and the parent has them generate one at a time, alternating (who
goes first swaps every round, with a pause before each), --runs times each: the same seed through
`Engine.generate`, so a machine whose load drifts slows both alike. It prints the median
seconds of each, their ratio (target: 3 previews add at most 5% on the SD1.5-size model), and
whether the final images are the same pixels (previews must never change them).

    python bench/bench_previews.py                 # the tiny test models (seconds)
    python bench/bench_previews.py --model sd15    # SD1.5 shapes, random weights (bench/sd15.py:
                                                   # 4 GB on first use, minutes per round)

Models: tiny = the tests' tiny diffusers pipeline and the tiny-UNet SD1 checkpoint with its TAESD
(stable-diffusion.cpp then previews with TAESD decodes); sd15 = bench/sd15.py's diffusers folder
and the same weights as one checkpoint with its own KL VAE (latent projection on both engines).
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

PROMPT = "a red fox in the snow"
SEED = 1


def write_models(folder: Path, model: str) -> dict[str, str]:
    """The YAML for each engine; the model names to ask for."""
    folder.mkdir(parents=True, exist_ok=True)
    if model == "tiny":
        from tests.support.tiny_ggml import (
            populate_models_dir,
            tiny_checkpoint_path,
            tiny_lora_path,
            tiny_taesd_path,
        )
        from tests.support.tiny_models import tiny_sd_path

        files = {
            "model": tiny_checkpoint_path(),
            "taesd": tiny_taesd_path(),
            "lora": tiny_lora_path(),
        }
        populate_models_dir(folder, files)  # stablediffusion.yaml
        diffusers_model, ggml_name = tiny_sd_path(), "stablediffusion"
    else:
        from sd15 import sd15_checkpoint, sd15_folder

        diffusers_model, ggml_name = sd15_folder(), "sd15-ggml"
        (folder / "sd15-ggml.yaml").write_text(
            f"name: sd15-ggml\nbackend: stablediffusion-ggml\nparameters:\n  model: "
            f'{sd15_checkpoint()}\noptions:\n- "sampler:euler"\n',
            encoding="utf-8",
        )
    (folder / "bench-diffusers.yaml").write_text(
        f"name: bench-diffusers\nbackend: diffusers\nparameters:\n  model: {diffusers_model}\n",
        encoding="utf-8",
    )
    return {"diffusers": "bench-diffusers", "ggml": ggml_name}


def child(models: Path, name: str, previews: int, steps: int, size: int) -> None:
    """One contender (bench/contenders.py): load and warm up, then one timed generation per `go`;
    its info says how many previews the last one showed."""
    from contenders import serve

    from localimg.engine import Engine, EngineSettings
    from localimg.requests import ImageRequest

    engine = Engine(EngineSettings(models_path=models))
    request = ImageRequest(
        prompt=PROMPT, seed=SEED, steps=steps, width=size, height=size, previews=previews
    )
    shown: list[object] = []

    def generate() -> object:
        shown.clear()
        result = engine.generate(
            name, request, progress=lambda e: shown.append(e) if e.preview else None
        )
        return result.images[0]

    def setup() -> Callable[[], object]:
        engine.generate(name, request)  # load + warm-up
        return generate

    try:
        serve(setup, info=lambda: {"previews_seen": len(shown)})
    finally:
        engine.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["tiny", "sd15"], default="tiny")
    parser.add_argument("--engine", choices=["both", "diffusers", "ggml"], default="both")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--previews", type=int, default=3)
    parser.add_argument("--size", type=int, default=None, help="[default: 64 tiny, 512 sd15]")
    parser.add_argument("--runs", type=int, default=6, help="timed generations per contender")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        models, name, previews, steps, size = args.child
        child(Path(models), name, int(previews), int(steps), int(size))
        return
    import numpy as np
    from contenders import Contender, alternate

    size = args.size or (64 if args.model == "tiny" else 512)
    models = Path(tempfile.mkdtemp(prefix="bench-previews-")) / "models"
    names = write_models(models, args.model)
    engines = ["diffusers", "ggml"] if args.engine == "both" else [args.engine]
    print(
        f"model {args.model}, {size}x{size}, {args.steps} steps, {args.previews} previews vs 0; "
        f"{args.runs} runs each, alternating, each contender its own process"
    )
    for engine in engines:
        common = [str(models), names[engine]]
        plain = Contender(__file__, [*common, "0", str(args.steps), str(size)])
        shown = Contender(__file__, [*common, str(args.previews), str(args.steps), str(size)])
        alternate(args.runs, [plain.run, shown.run])
        (_, plain_pixels), (shown_out, shown_pixels) = plain.finish(), shown.finish()
        same = "same" if np.array_equal(plain_pixels, shown_pixels) else "DIFFERENT"
        a, b = shown.median(), plain.median()
        print(
            f"{engine:10s} {args.previews} previews {a:7.3f}s   none {b:7.3f}s   "
            f"ratio {a / b:.3f} ({(a / b - 1) * 100:+.1f}%)   "
            f"{shown_out['previews_seen']} previews per image, {same} final pixels"
        )


if __name__ == "__main__":
    main()
