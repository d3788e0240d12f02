"""Image-conditioned generation: what a task switch costs, measured side by side in one run.

Run: `python bench/bench_conditioned.py [--runs 5] [--steps 4]`. On the tiny random SD pipeline of
the tests (cached in .test-cache/), alternating the contenders so machine noise hits both alike:

1. getting an img2img pipeline for a loaded text-to-image model: diffusers' `from_pipe` (what
   localimg does, sharing the modules) vs `from_pretrained` (a second load), and the bytes of
   weights each adds;
2. in process, model loaded: `Engine.generate` img2img vs the bare `pipe(image=...)` call (the
   overhead of decoding-side work: size resolution, resizing, task choice);
3. inpainting through the engine (with the exact keep-outside-the-mask composite) vs bare inpaint.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def median_time(fn: Any, runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def weight_bytes(pipe: Any, seen: set[int]) -> int:
    """Bytes of parameters not already counted in `seen` (shared tensors count once)."""
    total = 0
    for component in pipe.components.values():
        for param in getattr(component, "parameters", lambda: [])():
            if id(param) not in seen:
                seen.add(id(param))
                total += param.numel() * param.element_size()
    return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()

    import numpy as np
    import torch
    from diffusers import (
        AutoPipelineForImage2Image,
        AutoPipelineForInpainting,
        StableDiffusionImg2ImgPipeline,
        StableDiffusionPipeline,
    )
    from PIL import Image

    from localimg.engine import Engine, EngineSettings
    from localimg.requests import ImageRequest
    from tests.support.tiny_models import tiny_sd_path

    folder = tiny_sd_path()
    base = StableDiffusionPipeline.from_pretrained(str(folder), safety_checker=None)
    base.set_progress_bar_config(disable=True)

    # 1. from_pipe vs a second from_pretrained
    shared = median_time(lambda: AutoPipelineForImage2Image.from_pipe(base), args.runs)
    second = median_time(
        lambda: StableDiffusionImg2ImgPipeline.from_pretrained(str(folder), safety_checker=None),
        args.runs,
    )
    seen: set[int] = set()
    base_bytes = weight_bytes(base, seen)
    sibling_extra = weight_bytes(AutoPipelineForImage2Image.from_pipe(base), seen)
    reload_extra = weight_bytes(
        StableDiffusionImg2ImgPipeline.from_pretrained(str(folder), safety_checker=None), seen
    )
    print(f"img2img pipeline: from_pipe {shared * 1000:.1f} ms, from_pretrained "
          f"{second * 1000:.1f} ms -> {second / shared:.1f}x faster")  # fmt: skip
    print(f"weights added: from_pipe {sibling_extra} bytes, from_pretrained {reload_extra} bytes "
          f"(the model is {base_bytes} bytes)")  # fmt: skip

    # 2./3. engine vs bare calls, model loaded
    source = Image.fromarray(np.random.RandomState(0).randint(0, 256, (64, 64, 3), dtype=np.uint8))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "tiny.yaml").write_text(f"name: tiny\nparameters:\n  model: {folder}\n")
        engine = Engine(EngineSettings(models_path=Path(tmp)))
        engine.generate("tiny", ImageRequest("x", init_image=source, steps=args.steps))  # load
        engine.generate("tiny", ImageRequest("x", init_image=source, mask=mask, steps=args.steps))
        img2img = AutoPipelineForImage2Image.from_pipe(base)
        inpaint = AutoPipelineForInpainting.from_pipe(base)
        img2img.set_progress_bar_config(disable=True)
        inpaint.set_progress_bar_config(disable=True)

        def bare(pipe: Any, **extra: Any) -> None:
            with torch.inference_mode():
                pipe("x", image=source, num_inference_steps=args.steps, guidance_scale=7.5,
                     generator=torch.Generator("cpu").manual_seed(1), **extra)  # fmt: skip

        for label, request, bare_call in (
            ("img2img", ImageRequest("x", init_image=source, steps=args.steps, seed=1),
             lambda: bare(img2img)),
            ("inpaint", ImageRequest("x", init_image=source, mask=mask, steps=args.steps, seed=1),
             lambda: bare(inpaint, mask_image=mask)),
        ):  # fmt: skip
            engine_times, bare_times = [], []
            for _ in range(args.runs):
                start = time.perf_counter()
                engine.generate("tiny", request)
                engine_times.append(time.perf_counter() - start)
                start = time.perf_counter()
                bare_call()
                bare_times.append(time.perf_counter() - start)
            e, b = statistics.median(engine_times), statistics.median(bare_times)
            print(f"{label}: engine {e * 1000:.1f} ms, bare diffusers {b * 1000:.1f} ms -> "
                  f"ratio {e / b:.2f}")  # fmt: skip
        engine.close()


if __name__ == "__main__":
    main()
