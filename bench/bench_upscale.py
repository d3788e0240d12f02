"""What an ESRGAN upscale costs: seconds per output megapixel, and the peak memory of a large one.

1. speed: a x4 RRDB file with RealESRGAN_x4plus's shapes (23 blocks, 64 features, random
   weights, written here once and cached) upscales a --input-pixel square photo, through
   `Engine.upscale` (localimg) and through the binding's own upscaler calls (bare), each in a
   clean process of its own that loads the model and warms up once; they alternate --runs times.
   It prints the median seconds, seconds per output megapixel, and localimg / bare.
2. memory: one fresh process loads the model through the engine, notes its resident memory, then
   upscales a --memory-input square x4 (512 → a 2048 x 2048 output) and reports its peak resident
   memory (VmHWM): tiles bound what the upscale adds beyond the weights and the output image.
   `--memory-blocks 1` uses a 1-block model there (the same tiles, 20 times less compute).

    python bench/bench_upscale.py [--input 128] [--runs 2] [--memory-input 512]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
print = functools.partial(print, flush=True)  # progress shows as it happens

NAME = "bench-x4"


def model_file(blocks: int) -> Path:
    """A cached random RRDB x4 file with `blocks` blocks (23: RealESRGAN_x4plus's shapes)."""
    from tests.support.tiny_esrgan import write_esrgan
    from tests.support.tiny_models import build_lock, cache_dir

    path = cache_dir() / "bench-esrgan-v1" / f"x4-{blocks}blocks.safetensors"
    with build_lock():
        if not path.is_file():
            write_esrgan(path, 4, blocks=blocks, seed=7)
    return path


def photo(side: int) -> Any:
    import numpy as np
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(3)
    noise = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    return Image.fromarray(noise).filter(ImageFilter.GaussianBlur(2))


def models_folder(blocks: int) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="bench-upscale-"))
    (folder / "upscale_models").mkdir()
    os.symlink(model_file(blocks), folder / "upscale_models" / f"{NAME}.safetensors")
    return folder


def localimg_setup(side: int, blocks: int, threads: int) -> Callable[[], Any]:
    from localimg.backends.base import RuntimeSettings
    from localimg.engine import Engine, EngineSettings

    settings = EngineSettings(
        models_path=models_folder(blocks), runtime=RuntimeSettings(threads=threads)
    )
    engine = Engine(settings)
    image = photo(side)
    engine.upscale(image, NAME, 4)  # load and warm up
    return lambda: engine.upscale(image, NAME, 4)


def bare_setup(side: int, blocks: int, threads: int) -> Callable[[], Any]:
    """The binding alone: its upscaler context and upscale call, the pixels copied out."""
    import ctypes

    import stable_diffusion_cpp as sd
    from PIL import Image

    ctx = sd.new_upscaler_ctx(str(model_file(blocks)).encode(), False, False, threads, 128)
    image = photo(side)
    data = image.tobytes()
    buffer = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
    pointer = ctypes.cast(buffer, ctypes.POINTER(ctypes.c_uint8))
    source = sd.sd_image_t(width=side, height=side, channel=3, data=pointer)

    def call() -> Any:
        out = sd.upscale(ctx, source, 4)
        pixels = ctypes.string_at(out.data, out.width * out.height * out.channel)
        return Image.frombytes("RGB", (out.width, out.height), pixels)

    call()
    return call


def status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def memory_child(side: int, blocks: int, threads: int) -> None:
    """One upscale of a `side` square x4 in this fresh process; prints its memory as JSON."""
    from localimg.backends.base import RuntimeSettings
    from localimg.engine import Engine, EngineSettings

    start = status_bytes("VmRSS")
    settings = EngineSettings(
        models_path=models_folder(blocks), runtime=RuntimeSettings(threads=threads)
    )
    engine = Engine(settings)
    image = photo(side)
    engine.upscale(photo(32), NAME, 4)  # loaded, one small tile run
    loaded = status_bytes("VmRSS")
    seen: list[tuple[int, int]] = []
    out = engine.upscale(image, NAME, 4, lambda *tile: seen.append(tile))
    report = {
        "start": start,
        "loaded": loaded,
        "peak": status_bytes("VmHWM"),
        "output": out.width * out.height * 3,
        "size": out.size,
        "tiles": seen[-1][1] if seen else 0,
        "estimate": engine.side.entries[("upscaler", NAME)].model.estimated_bytes,
    }
    print("MEMORY " + json.dumps(report))


def mib(value: float) -> str:
    return f"{value / 2**20:.1f} MiB"


def speed(args: argparse.Namespace) -> None:
    from contenders import Contender, alternate

    common = ["--input", str(args.input), "--blocks", "23", "--threads", str(args.threads)]
    sides = [Contender(__file__, ["localimg", *common], "localimg")]
    sides.append(Contender(__file__, ["bare", *common], "bare"))
    try:
        alternate(args.runs, [side.run for side in sides])
        out_mp = (args.input * 4) ** 2 / 1e6
        for side in sides:
            median = side.median()
            print(f"{side.label:9s} {median:8.2f} s   {median / out_mp:7.2f} s per output MP")
        print(f"localimg / bare: {sides[0].median() / sides[1].median():.3f}")
    finally:
        for side in sides:
            side.close()


def memory(args: argparse.Namespace) -> None:
    command = [sys.executable, __file__, "--child", "memory", "--input", str(args.memory_input)]
    command += ["--blocks", str(args.memory_blocks), "--threads", str(args.threads)]
    proc = subprocess.run(command, capture_output=True, text=True, check=True)
    line = next(x for x in proc.stdout.splitlines() if x.startswith("MEMORY "))
    found = json.loads(line.removeprefix("MEMORY "))
    width, height = found["size"]
    print(
        f"{args.memory_input}px x4 -> {width}x{height} ({args.memory_blocks} blocks, "
        f"{found['tiles']} tiles of 128 px): process {mib(found['start'])} at start, "
        f"{mib(found['loaded'])} loaded, peak {mib(found['peak'])}; "
        f"the output image alone {mib(found['output'])}; "
        f"peak over loaded {mib(found['peak'] - found['loaded'])}; "
        f"side-model estimate {mib(found['estimate'])}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", choices=["localimg", "bare", "memory"])
    parser.add_argument("--input", type=int, default=128, help="input side, pixels (speed)")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--blocks", type=int, default=23)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--memory-input", type=int, default=512)
    parser.add_argument("--memory-blocks", type=int, default=23)
    parser.add_argument("--skip", default="", help="speed,memory")
    args = parser.parse_args()
    if args.child == "memory":
        memory_child(args.input, args.blocks, args.threads)
        return
    if args.child:
        from contenders import serve

        setup = localimg_setup if args.child == "localimg" else bare_setup
        serve(lambda: setup(args.input, args.blocks, args.threads))
        return
    model_file(23)
    skip = set(args.skip.split(","))
    if "speed" not in skip:
        print(f"== speed: RealESRGAN_x4plus shapes, {args.input}px x4, {args.threads} threads")
        speed(args)
    if "memory" not in skip:
        print("== memory")
        memory(args)


if __name__ == "__main__":
    main()
