"""What previews cost: a 20-step generation with 3 previews vs none, on both engines.

Each contender is its own process (a fresh interpreter that loads the model, warms up with one
generation, then times --runs generations of the same seed through `Engine.generate`) and the two
alternate, round after round, so neither always runs on a warmer machine. It prints the median
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
import hashlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
print = functools.partial(print, flush=True)  # progress shows as it happens

PROMPT = "a red fox in the snow"
SEED = 1
SETTLE = 1.0  # seconds between contenders, so one's idle threads do not slow the other


def write_models(folder: Path, model: str) -> dict[str, str]:
    """The YAML for each engine; the model names to ask for."""
    folder.mkdir(parents=True, exist_ok=True)
    if model == "tiny":
        from tests.tiny_ggml import (
            populate_models_dir,
            tiny_checkpoint_path,
            tiny_lora_path,
            tiny_taesd_path,
        )
        from tests.tiny_models import tiny_sd_path

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


def child(models: Path, name: str, previews: int, steps: int, size: int, runs: int) -> None:
    """One contender: load, warm up, time `runs` generations; print one JSON line."""
    from localimg.engine import Engine, EngineSettings
    from localimg.requests import ImageRequest

    engine = Engine(EngineSettings(models_path=models))
    request = ImageRequest(
        prompt=PROMPT, seed=SEED, steps=steps, width=size, height=size, previews=previews
    )
    shown = []
    try:
        engine.generate(name, request)  # load + warm-up
        times = []
        for _ in range(runs):
            begin = time.perf_counter()
            result = engine.generate(
                name, request, progress=lambda e: shown.append(e) if e.preview else None
            )
            times.append(time.perf_counter() - begin)
        digest = hashlib.sha256(result.images[0].tobytes()).hexdigest()
    finally:
        engine.close()
    line = {"times": times, "digest": digest, "previews_seen": len(shown) // max(1, runs)}
    print("RESULT " + json.dumps(line))


def run_child(args: list[str]) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(f"contender failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["tiny", "sd15"], default="tiny")
    parser.add_argument("--engine", choices=["both", "diffusers", "ggml"], default="both")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--previews", type=int, default=3)
    parser.add_argument("--size", type=int, default=None, help="[default: 64 tiny, 512 sd15]")
    parser.add_argument("--runs", type=int, default=3, help="timed generations per process")
    parser.add_argument("--rounds", type=int, default=2, help="process pairs per engine")
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        models, name, previews, steps, size, runs = args.child
        child(Path(models), name, int(previews), int(steps), int(size), int(runs))
        return
    size = args.size or (64 if args.model == "tiny" else 512)
    models = Path(tempfile.mkdtemp(prefix="bench-previews-")) / "models"
    names = write_models(models, args.model)
    engines = ["diffusers", "ggml"] if args.engine == "both" else [args.engine]
    print(
        f"model {args.model}, {size}x{size}, {args.steps} steps, {args.previews} previews vs 0; "
        f"{args.rounds} rounds x {args.runs} runs per contender, each contender its own process"
    )
    for engine in engines:
        plain: list[float] = []
        shown: list[float] = []
        digests = set()
        seen = 0
        for index in range(args.rounds):
            order = [(0, plain), (args.previews, shown)]
            for previews, times in order if index % 2 == 0 else order[::-1]:
                time.sleep(SETTLE)
                common = [str(models), names[engine], str(previews), str(args.steps), str(size)]
                out = run_child([*common, str(args.runs)])
                times.extend(out["times"])
                digests.add(out["digest"])
                seen = max(seen, out["previews_seen"]) if previews else seen
        a, b = statistics.median(shown), statistics.median(plain)
        same = "same final pixels" if len(digests) == 1 else "FINAL IMAGES DIFFER"
        print(
            f"{engine:10s} {args.previews} previews {a:7.3f}s   none {b:7.3f}s   "
            f"ratio {a / b:.3f} ({(a / b - 1) * 100:+.1f}%)   {seen} previews per image, {same}"
        )


if __name__ == "__main__":
    main()
