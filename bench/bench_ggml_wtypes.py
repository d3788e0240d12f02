"""stable-diffusion.cpp weight types on this CPU: time per image and how far the image moves.

The SD1.5-size checkpoint of bench/sd15.py (random weights, float32 on disk) is loaded with
`wtype` f16, q8_0 and q4_0 (what the YAML option `wtype:` does), each contender in a fresh process
of its own (bench/contenders.py) that loads once and warms up once; the parent then alternates
them one timed generate_image call at a time (who goes first rotates, with a pause before each),
so a machine whose load drifts slows all of them alike. Same prompt, seed, size, steps, sampler
(euler), cfg and threads for all; the full VAE decodes. Printed: the median seconds per image,
its ratio to f16, and PSNR / max pixel difference against the f16 image.

    python bench/bench_ggml_wtypes.py                       # 256 px, 4 steps, 2 threads, 3 runs
    python bench/bench_ggml_wtypes.py --wtypes f32,f16,q8_0 --runs 5

Building the checkpoint the first time takes several minutes and about 8 GB of disk (the
diffusers folder and the single file, both cached under .test-cache/).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
print = functools.partial(print, flush=True)  # progress shows as it happens

PROMPT = "a red fox"
SEED = 1
CFG = 7.0
SAMPLER = "euler"


def child(model: str, wtype: str, threads: int, size: int, steps: int) -> None:
    """One contender: the checkpoint loaded with this weight type, one timed call per `go`."""
    from contenders import serve

    from localimg.backends.ggml import native as ggml_native

    sd = ggml_native.install()
    with contextlib.redirect_stdout(io.StringIO()):  # the wrapper print()s on load
        bare = ggml_native.leak_free_class(sd)(
            model_path=model, wtype=wtype, n_threads=threads, verbose=True
        )
    ggml_native.quiet_wrapper()
    call = dict(prompt=PROMPT, width=size, height=size, sample_steps=steps, seed=SEED,
                cfg_scale=CFG, sample_method=SAMPLER, eta=float("inf"))  # fmt: skip

    def generate() -> Any:
        image = bare.generate_image(**call)[0]
        assert image.size == (size, size), image.size
        return image

    def setup() -> Any:
        generate()  # warm-up: the first call allocates the compute graphs
        return generate

    try:
        serve(setup)
    finally:
        bare.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", nargs=5, metavar="ARG", help=argparse.SUPPRESS)
    parser.add_argument("--wtypes", default="f16,q8_0,q4_0", help="the first is the reference")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3, help="timed calls of each contender")
    args = parser.parse_args()
    if args.child:
        model, wtype, threads, size, steps = args.child
        child(model, wtype, int(threads), int(size), int(steps))
        return

    from contenders import Contender, alternate, psnr_and_max_diff
    from sd15 import sd15_checkpoint

    model = str(sd15_checkpoint())
    wtypes = [w.strip() for w in args.wtypes.split(",") if w.strip()]
    print(f"{Path(model).name}: {args.size} px, {args.steps} steps, {args.threads} threads")
    contenders: list[Contender] = []
    try:
        for wtype in wtypes:  # loaded one after the other: each load reads the 4 GB file
            settings = [model, wtype, args.threads, args.size, args.steps]
            contenders.append(Contender(__file__, [str(s) for s in settings], label=wtype))
            print(f"  {wtype}: loaded")
        alternate(args.runs, [c.run for c in contenders])
        results = [(c.label, c.median(), c.finish()[1]) for c in contenders]
    finally:
        for contender in contenders:
            contender.close()
    reference_label, reference_seconds, reference_image = results[0]
    print(f"\n| wtype | s / image | vs {reference_label} | PSNR vs {reference_label} | max diff |")
    print("| --- | --- | --- | --- | --- |")
    for label, seconds, image in results:
        psnr, biggest = psnr_and_max_diff(reference_image, image)
        print(
            f"| {label} | {seconds:.2f} | {seconds / reference_seconds:.3f} | "
            f"{psnr:.1f} dB | {biggest} |"
        )


if __name__ == "__main__":
    main()
