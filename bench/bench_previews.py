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


def child(models: Path, name: str, previews: int, steps: int, size: int) -> None:
    """One contender: load and warm up, then one timed generation per `go` line on stdin (its
    seconds on stdout); `quit` prints the final image's digest and the previews it saw."""
    from localimg.engine import Engine, EngineSettings
    from localimg.requests import ImageRequest

    engine = Engine(EngineSettings(models_path=models))
    request = ImageRequest(
        prompt=PROMPT, seed=SEED, steps=steps, width=size, height=size, previews=previews
    )
    shown: list[object] = []
    try:
        result = engine.generate(name, request)  # load + warm-up
        print("READY")
        for line in sys.stdin:
            if line.strip() != "go":
                break
            shown.clear()
            begin = time.perf_counter()
            result = engine.generate(
                name, request, progress=lambda e: shown.append(e) if e.preview else None
            )
            print(f"TIME {time.perf_counter() - begin}")
        digest = hashlib.sha256(result.images[0].tobytes()).hexdigest()
    finally:
        engine.close()
    print("DONE " + json.dumps({"digest": digest, "previews_seen": len(shown)}))


class Contender:
    """A child process holding one loaded model, driven one generation at a time."""

    def __init__(self, args: list[str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--child", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        self.times: list[float] = []
        self._expect("READY")

    def _expect(self, prefix: str) -> str:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith(prefix):
                return line[len(prefix) :].strip()
        raise SystemExit(f"a contender exited (code {self.process.wait()}) before {prefix}")

    def run(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        self.times.append(float(self._expect("TIME ")))

    def finish(self) -> dict:
        assert self.process.stdin is not None
        self.process.stdin.write("quit\n")
        self.process.stdin.flush()
        out = json.loads(self._expect("DONE "))
        self.process.wait()
        return out  # type: ignore[no-any-return]


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
        plain = Contender([*common, "0", str(args.steps), str(size)])
        shown = Contender([*common, str(args.previews), str(args.steps), str(size)])
        for index in range(args.runs):
            for contender in (plain, shown) if index % 2 == 0 else (shown, plain):
                time.sleep(SETTLE)
                contender.run()
        plain_out, shown_out = plain.finish(), shown.finish()
        a, b = statistics.median(shown.times), statistics.median(plain.times)
        same = "same" if plain_out["digest"] == shown_out["digest"] else "DIFFERENT"
        print(
            f"{engine:10s} {args.previews} previews {a:7.3f}s   none {b:7.3f}s   "
            f"ratio {a / b:.3f} ({(a / b - 1) * 100:+.1f}%)   "
            f"{shown_out['previews_seen']} previews per image, {same} final pixels"
        )


if __name__ == "__main__":
    main()
