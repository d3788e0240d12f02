"""localimg against the bare diffusers call on today's model families, side by side in one run.

For each family the test suite builds a tiny random pipeline of (tests/support/tiny_families*.py:
Z-Image, FLUX.2 and klein, Chroma, FLUX.1 Kontext, Qwen-Image, Qwen-Image-Edit-Plus, Wan; Krea 2,
Ideogram 4, ERNIE-Image, Qwen-Image 2.x and -Layered, Z-Image-Omni, Anima, LTX-2), two
contenders run the same generation (size, steps, seed, guidance 1, threads), each in a clean process
of its own so neither inherits the other's thread pools or caches:

- bare: `DiffusionPipeline.from_pretrained(folder)` and `pipe(prompt, ...)` with a seeded
  generator, as a user's script would;
- localimg: `Engine.generate` on a YAML that names the same folder (the in-process slot).

Each process loads the model, warms up once, then times `--runs` generations; the parent
alternates the two `--rounds` times and prints the medians, their ratio (target: at most 1.02)
and the largest pixel difference between the two images (0 means both made the same image, so
the ratio compares like with like).

    python bench/bench_families.py [--families ZImagePipeline,...] [--runs 5] [--rounds 2]
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
print = functools.partial(print, flush=True)  # progress shows as it happens

PROMPT = "a red fox in the snow"
SEED = 7
VIDEO_FAMILIES = {"WanPipeline", "WanImageToVideoPipeline", "LTX2Pipeline"}
EDIT_FAMILIES = {"FluxKontextPipeline", "QwenImageEditPlusPipeline"}
# families given an input image (Qwen-Image-Layered splits it into layers)
IMAGE_INPUT = EDIT_FAMILIES | {"WanImageToVideoPipeline", "QwenImageLayeredPipeline"}
FRAMES = {"LTX2Pipeline": 9}  # LTX-2 takes 8k+1 frames, Wan 4k+1 (5)
MODULAR = {"AnimaModularPipeline"}  # loaded through diffusers' ModularPipeline API


def builders() -> dict[str, Any]:
    """The tiny pipeline of every family, by class name: those of 2025 and of 2026."""
    from tests.support import (
        tiny_families_anima,
        tiny_families_ernie,
        tiny_families_krea_ideogram,
        tiny_families_ltx2,
        tiny_families_qwen_2026,
        tiny_families_z_image_omni,
    )
    from tests.support.tiny_families import FAMILY_BUILDERS

    return {
        **FAMILY_BUILDERS,
        "Krea2Pipeline": tiny_families_krea_ideogram.tiny_krea2_path,
        "Ideogram4Pipeline": tiny_families_krea_ideogram.tiny_ideogram4_headless_path,
        "ErnieImagePipeline": tiny_families_ernie.tiny_ernie_image_no_pe_path,
        "QwenImage21Pipeline": tiny_families_qwen_2026.tiny_qwen_image21_path,
        "QwenImageLayeredPipeline": tiny_families_qwen_2026.tiny_qwen_image_layered_path,
        "ZImageOmniPipeline": tiny_families_z_image_omni.tiny_z_image_omni_path,
        "AnimaModularPipeline": tiny_families_anima.tiny_anima_path,
        "LTX2Pipeline": tiny_families_ltx2.tiny_ltx2_path,
    }


def bare_kwargs(family: str, kwargs: dict[str, Any]) -> None:
    """What localimg passes a family at cfg_scale 1 that the generic call does not say."""
    if family in ("QwenImage21Pipeline", "QwenImageLayeredPipeline"):
        kwargs["true_cfg_scale"] = kwargs.pop("guidance_scale")  # their cfg keyword
    if family == "Ideogram4Pipeline":
        kwargs["guidance_schedule"] = None  # a constant cfg_scale replaces the schedule
    if family == "ErnieImagePipeline":
        kwargs["use_pe"] = False  # its prompt enhancer, off unless asked
    if family == "QwenImageLayeredPipeline":
        kwargs["image"] = kwargs["image"].convert("RGBA")
        for side in ("height", "width"):  # it works at its resolution bucket
            del kwargs[side]


def input_image(size: int) -> Any:
    """The same deterministic picture for both contenders of an edit or image-to-video family."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def run_bare(family: str, folder: Path, args: argparse.Namespace) -> tuple[list[float], Any]:
    import numpy as np
    import torch
    from diffusers import DiffusionPipeline

    torch.set_num_threads(args.threads)
    if family in MODULAR:
        return run_bare_modular(folder, args)
    from localimg.backends.diffusers.load.processors import replacement_components

    # Without torchvision, Qwen-Image-Edit's processor is built as localimg builds it.
    pipe = DiffusionPipeline.from_pretrained(
        str(folder), **replacement_components(family, str(folder), {})
    )
    pipe.set_progress_bar_config(disable=True)
    kwargs: dict[str, Any] = {
        "prompt": PROMPT,
        "num_inference_steps": args.steps,
        "height": args.size,
        "width": args.size,
        "guidance_scale": 1.0,
        "output_type": "np",
    }
    if family in VIDEO_FAMILIES:
        kwargs["num_frames"] = FRAMES.get(family, 5)
    if family in IMAGE_INPUT:
        kwargs["image"] = input_image(args.size)
    bare_kwargs(family, kwargs)
    if family == "FluxKontextPipeline":
        # As localimg calls it: the asked size (else about 1024x1024), the input image at that
        # size used as it is, cfg_scale 1 is true CFG off, the distilled guidance its default.
        kwargs["max_area"] = args.size * args.size
        kwargs["_auto_resize"] = False
        del kwargs["guidance_scale"]
    if family == "QwenImageEditPlusPipeline":
        kwargs["image"] = [kwargs["image"]]

    def once() -> Any:
        with torch.inference_mode():
            kwargs["generator"] = torch.Generator("cpu").manual_seed(SEED)
            out = pipe(**kwargs)
        frames = out.frames if hasattr(out, "frames") else out.images
        first = frames[0]
        return np.stack(first) if isinstance(first, list) else np.asarray(first)  # layers

    once()
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        image = once()
        times.append(time.perf_counter() - start)
    return times, (image * 255).round().clip(0, 255).astype("uint8")


def run_bare_modular(folder: Path, args: argparse.Namespace) -> tuple[list[float], Any]:
    """A modular pipeline as diffusers' docs drive it: from_pretrained, load_components, a
    guider at the scale, the blocks' inputs."""
    import numpy as np
    import torch
    from diffusers import ClassifierFreeGuidance, ModularPipeline

    from localimg.backends.diffusers.load.modular import install_cosmos_resize

    install_cosmos_resize()  # without torchvision, as localimg runs it (a no-op with it)
    pipe = ModularPipeline.from_pretrained(str(folder))
    pipe.load_components(dtype=torch.float32)
    pipe.update_components(guider=ClassifierFreeGuidance(guidance_scale=1.0))

    def once() -> Any:
        with torch.inference_mode():
            images = pipe(
                prompt=PROMPT,
                num_inference_steps=args.steps,
                height=args.size,
                width=args.size,
                generator=torch.Generator("cpu").manual_seed(SEED),
                output="images",
            )
        return np.asarray(images[0].convert("RGB"), dtype=np.uint8)

    once()
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        image = once()
        times.append(time.perf_counter() - start)
    return times, image


def run_localimg(family: str, folder: Path, args: argparse.Namespace) -> tuple[list[float], Any]:
    import numpy as np

    from localimg.backends.base import RuntimeSettings
    from localimg.engine import Engine, EngineSettings
    from localimg.requests import ImageRequest

    models = Path(tempfile.mkdtemp(prefix="bench-families-"))
    (models / "m.yaml").write_text(f"name: m\nbackend: diffusers\nparameters:\n  model: {folder}\n")
    engine = Engine(
        EngineSettings(models_path=models, runtime=RuntimeSettings(threads=args.threads))
    )
    image = input_image(args.size)
    request = ImageRequest(
        prompt=PROMPT,
        width=args.size,
        height=args.size,
        steps=args.steps,
        cfg_scale=1.0,
        seed=SEED,
        init_image=image if family in IMAGE_INPUT else None,
        num_frames=FRAMES.get(family, 5) if family in VIDEO_FAMILIES else None,
    )
    engine.generate("m", request)  # load + warm-up
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        result = engine.generate("m", request)
        times.append(time.perf_counter() - start)
    engine.close()
    if family in VIDEO_FAMILIES or family == "QwenImageLayeredPipeline":  # frames, layers
        return times, np.stack([np.asarray(frame) for frame in result.images])
    return times, np.asarray(result.images[0])


def child(args: argparse.Namespace) -> None:
    import numpy as np

    folder = builders()[args.family]()
    run = run_bare if args.child == "bare" else run_localimg
    times, pixels = run(args.family, folder, args)
    np.save(args.pixels, pixels)
    print(json.dumps({"times": times}))


def contender(kind: str, family: str, args: argparse.Namespace, pixels: Path) -> list[float]:
    command = [
        sys.executable,
        __file__,
        "--child",
        kind,
        "--family",
        family,
        "--pixels",
        str(pixels),
        *("--runs", str(args.runs), "--steps", str(args.steps), "--size", str(args.size)),
        *("--threads", str(args.threads)),
    ]
    out = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT)
    return list(json.loads(out.stdout.strip().splitlines()[-1])["times"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="", help="comma-separated class names [all]")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="[default: physical cores]")
    parser.add_argument("--child", choices=["bare", "localimg"], help=argparse.SUPPRESS)
    parser.add_argument("--family", help=argparse.SUPPRESS)
    parser.add_argument("--pixels", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.threads:
        from localimg._util.system import physical_cores

        args.threads = physical_cores()
    if args.child:
        child(args)
        return
    import numpy as np

    known = builders()
    families = [f for f in args.families.split(",") if f] or list(known)
    print(
        f"tiny random pipelines, {args.size}x{args.size}, {args.steps} steps, guidance 1, "
        f"{args.threads} threads; median of {args.runs} runs x {args.rounds} rounds per contender"
    )
    print(f"{'family':28} {'bare s':>9} {'localimg s':>11} {'ratio':>7} {'max px diff':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        for family in families:
            known[family]()  # build (and cache) before timing anything
            times: dict[str, list[float]] = {"bare": [], "localimg": []}
            for _ in range(args.rounds):
                for kind in times:
                    times[kind] += contender(kind, family, args, Path(tmp) / f"{kind}.npy")
            bare = np.load(Path(tmp) / "bare.npy").astype(int)
            ours = np.load(Path(tmp) / "localimg.npy").astype(int)
            diff = int(np.abs(bare - ours).max()) if bare.shape == ours.shape else -1
            b, o = statistics.median(times["bare"]), statistics.median(times["localimg"])
            print(f"{family:28} {b:9.3f} {o:11.3f} {o / b:7.3f} {diff:12d}")
    print("max px diff -1: the two outputs have different shapes (not the same generation)")


if __name__ == "__main__":
    main()
