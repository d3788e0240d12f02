"""What a ControlNet unit costs: seconds per step and memory with one unit vs none.

Each contender is its own process (a fresh interpreter that loads the model and warms up with one
generation), both stay loaded, and the parent has them generate one at a time, alternating (who
goes first swaps every round, with a pause before each), --runs times each: the same seed and
prompt through `Engine.generate`, so a machine whose load drifts slows both alike. It prints the
median seconds per step of each and their ratio, the process's resident memory after the warm-up
of each and the difference (what loading the ControlNet and its pipeline adds), and the bytes of
the ControlNet's own weights as the backend counts them.

    python bench/bench_controlnet.py                 # the tests' tiny SD1 model (seconds)
    python bench/bench_controlnet.py --model sd15    # SD1.5 shapes, random weights (bench/sd15.py:
                                                     # 4 GB on first use, plus a 1.4 GB ControlNet)

Models: tiny = the tests' tiny diffusers pipeline and its tiny ControlNet
(tests/support/tiny_controlnets.py); sd15 = bench/sd15.py's folder and a ControlNet made from its
UNet (`ControlNetModel.from_unet`, SD1.5's ControlNet shapes: 361M parameters). Engines are a
table (ENGINES), one row each: diffusers, and ggml (stable-diffusion.cpp). Its ControlNet has
SD1.5's fixed widths, so the ggml row is SD1.5-size with either --model: for tiny, the tests'
full-width random SD1.5 (f16, tiny TAESD; tests/support/tiny_ggml_control.py) and its random
ControlNet; for sd15, sd15.py's weights as one checkpoint and the same ControlNet as the
diffusers row, converted to the original layout (control_model.*) stable-diffusion.cpp reads.
stable-diffusion.cpp reports no ControlNet bytes of its own: the ggml row shows its file's size.

    python bench/bench_controlnet.py --engine ggml   # stable-diffusion.cpp alone
"""

from __future__ import annotations

import argparse
import functools
import os
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
NET_VERSION = "1"  # bump when the SD1.5 ControlNet's shapes change


def sd15_controlnet() -> Path:
    """An SD1.5-shaped ControlNet with random weights, from bench/sd15.py's UNet, cached."""
    from sd15 import VERSION, sd15_folder

    from tests.support.tiny_models import build_lock, cache_dir

    folder = cache_dir() / f"bench-sd15-controlnet-v{VERSION}.{NET_VERSION}"
    with build_lock():
        if not (folder / "config.json").is_file():
            import torch
            from diffusers import ControlNetModel, UNet2DConditionModel

            torch.manual_seed(0)
            unet = UNet2DConditionModel.from_pretrained(str(sd15_folder() / "unet"))
            partial = folder.with_name(folder.name + ".partial")
            ControlNetModel.from_unet(unet).save_pretrained(str(partial))
            partial.rename(folder)
    return folder


def write_diffusers(folder: Path, model: str) -> tuple[str, str]:
    """The diffusers YAML and controlnet/bench-net; (model, ControlNet) names to ask for."""
    if model == "tiny":
        from tests.support.tiny_controlnets import tiny_sd_controlnet_path
        from tests.support.tiny_models import tiny_sd_path

        pipeline, net = tiny_sd_path(), tiny_sd_controlnet_path()
    else:
        from sd15 import sd15_folder

        pipeline, net = sd15_folder(), sd15_controlnet()
    (folder / "controlnet").mkdir(parents=True, exist_ok=True)
    link = folder / "controlnet" / "bench-net"
    if not link.exists():
        link.symlink_to(net, target_is_directory=True)
    (folder / "bench-diffusers.yaml").write_text(
        f"name: bench-diffusers\nbackend: diffusers\nparameters:\n  model: {pipeline}\n",
        encoding="utf-8",
    )
    return "bench-diffusers", "bench-net"


def write_ggml(folder: Path, model: str) -> tuple[str, str]:
    """The stable-diffusion.cpp YAML, its files linked into the models folder (ggml YAML paths
    stay inside it) and controlnet/bench-ggml-net.safetensors; (model, ControlNet) names."""
    from tests.support.tiny_ggml import link_or_copy, tiny_taesd_path
    from tests.support.tiny_ggml_control import (
        controlnet_paths,
        ldm_controlnet_file,
        sd15_checkpoint_path,
    )
    from tests.support.tiny_models import cache_dir

    options = '- "sampler:euler"\n'
    if model == "tiny":
        checkpoint, net = sd15_checkpoint_path(), controlnet_paths()[0]
        link_or_copy(tiny_taesd_path(), folder / "bench-ggml-taesd.safetensors")
        options += '- "taesd_path:bench-ggml-taesd.safetensors"\n'
    else:
        from sd15 import VERSION, sd15_checkpoint

        checkpoint = sd15_checkpoint()
        target = cache_dir() / f"bench-sd15-controlnet-v{VERSION}.{NET_VERSION}.safetensors"
        net = ldm_controlnet_file(sd15_controlnet(), target)
    (folder / "controlnet").mkdir(parents=True, exist_ok=True)
    link_or_copy(checkpoint, folder / "bench-ggml.safetensors")
    link_or_copy(net, folder / "controlnet" / "bench-ggml-net.safetensors")
    (folder / "bench-ggml.yaml").write_text(
        "name: bench-ggml\nbackend: stablediffusion-ggml\nparameters:\n"
        f"  model: bench-ggml.safetensors\noptions:\n{options}",
        encoding="utf-8",
    )
    return "bench-ggml", "bench-ggml-net"


# engine → writes its YAML (and its ControlNet under controlnet/) into the models folder and
# returns the model's name and the ControlNet's.
ENGINES: dict[str, Callable[[Path, str], tuple[str, str]]] = {
    "diffusers": write_diffusers,
    "ggml": write_ggml,
}


def control_map(size: int) -> object:
    """A white-on-black edge map, as the canny preprocessor makes."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), "black")
    quarter = size // 4
    ImageDraw.Draw(image).rectangle((quarter, quarter, 3 * quarter, 3 * quarter), outline="white")
    return image


def child(models: Path, name: str, net: str, units: int, steps: int, size: int) -> None:
    """One contender (bench/contenders.py): load and warm up, then one timed generation per `go`;
    its info holds its resident memory after the warm-up and the ControlNets' own bytes."""
    from contenders import serve

    from localimg.engine import Engine, EngineSettings
    from localimg.engine.memory import process_rss
    from localimg.requests import ControlUnit, ImageRequest

    engine = Engine(EngineSettings(models_path=models))
    controls = tuple(ControlUnit(control_map(size), net=net) for _ in range(units))
    request = ImageRequest(
        prompt=PROMPT, seed=SEED, steps=steps, width=size, height=size, controls=controls
    )
    facts: dict[str, object] = {}

    def setup() -> Callable[[], object]:
        engine.generate(name, request)  # load + warm-up (loads the ControlNet too)
        facts["rss"] = process_rss(os.getpid())
        backend = engine.slots[name].backend  # type: ignore[attr-defined]
        net_bytes = getattr(getattr(backend, "controls", None), "nbytes", None)
        net_file = getattr(backend, "control_net", None)  # stable-diffusion.cpp: its file
        if net_bytes is None and isinstance(net_file, str):
            net_bytes = Path(net_file).stat().st_size
        facts["net_bytes"] = net_bytes
        return lambda: engine.generate(name, request).images[0]

    try:
        serve(setup, info=lambda: facts)
    finally:
        engine.close()


def megabytes(value: object) -> str:
    return f"{int(value) / 2**20:8.0f} MB" if isinstance(value, int) else "       ?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["tiny", "sd15"], default="tiny")
    parser.add_argument("--engine", choices=[*ENGINES, "all"], default="all")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--size", type=int, default=None, help="[default: 64 tiny, 512 sd15]")
    parser.add_argument("--runs", type=int, default=5, help="timed generations per contender")
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        models, name, net, units, steps, size = args.child
        child(Path(models), name, net, int(units), int(steps), int(size))
        return
    from contenders import Contender, alternate

    size = args.size or (64 if args.model == "tiny" else 512)
    models = Path(tempfile.mkdtemp(prefix="bench-controlnet-")) / "models"
    models.mkdir(parents=True)
    engines = list(ENGINES) if args.engine == "all" else [args.engine]
    print(
        f"model {args.model}, {size}x{size}, {args.steps} steps, one ControlNet unit vs none; "
        f"{args.runs} runs each, alternating, each contender its own process"
    )
    for engine in engines:
        name, net = ENGINES[engine](models, args.model)
        common = [str(models), name, net]
        plain = Contender(__file__, [*common, "0", str(args.steps), str(size)], f"{engine} none")
        controlled = Contender(
            __file__, [*common, "1", str(args.steps), str(size)], f"{engine} one unit"
        )
        try:
            alternate(args.runs, [plain.run, controlled.run])
            (plain_out, _), (controlled_out, _) = plain.finish(), controlled.finish()
        finally:
            plain.close()
            controlled.close()
        a, b = controlled.median() / args.steps, plain.median() / args.steps
        added = (
            controlled_out["rss"] - plain_out["rss"]
            if isinstance(controlled_out.get("rss"), int) and isinstance(plain_out.get("rss"), int)
            else None
        )
        print(
            f"{engine:10s} per step: one unit {a:7.3f}s   none {b:7.3f}s   ratio {a / b:.3f} "
            f"({(a / b - 1) * 100:+.1f}%)\n"
            f"{'':10s} memory:   one unit {megabytes(controlled_out.get('rss'))}   none "
            f"{megabytes(plain_out.get('rss'))}   added {megabytes(added)}   "
            f"ControlNet weights {megabytes(controlled_out.get('net_bytes'))}"
        )


if __name__ == "__main__":
    main()
