"""`localimg generate` against the same generation written as a bare diffusers script.

Run: `python bench/bench_generate.py [--runs 5] [--steps 4] [--size 64]`. Everything is measured
side by side in this one run, alternating the two contenders so machine noise hits both alike:

1. whole process: `localimg generate` vs `python bare_script.py` (imports, load, generate, save);
2. in process, model loaded: `Engine.generate` vs the bare `pipe(...)` call (the engine's overhead);
3. start-up: `localimg --help` wall time, and whether it imported torch.

The model is the tiny random pipeline of the tests (built offline, cached in .test-cache/).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BARE_SCRIPT = """
import sys, torch
from diffusers import StableDiffusionPipeline
pipe = StableDiffusionPipeline.from_pretrained(sys.argv[1], safety_checker=None)
pipe.set_progress_bar_config(disable=True)
image = pipe("a cute baby sea otter", negative_prompt="blurry",
             num_inference_steps=int(sys.argv[2]),
             width=int(sys.argv[3]), height=int(sys.argv[3]), guidance_scale=7.5,
             generator=torch.Generator("cpu").manual_seed(42)).images[0]
image.save(sys.argv[4])
"""


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - start


def median(values: list[float]) -> float:
    return statistics.median(values)


def bench_processes(
    model: Path, runs: int, steps: int, size: int, work: Path
) -> tuple[float, float]:
    script = work / "bare.py"
    script.write_text(textwrap.dedent(BARE_SCRIPT))
    cli = [
        sys.executable,
        "-m",
        "localimg",
        "generate",
        "a cute baby sea otter|blurry",
        "-m",
        str(model),
        "--steps",
        str(steps),
        "--size",
        f"{size}x{size}",
        "--seed",
        "42",
        "--cfg-scale",
        "7.5",
        "-o",
        str(work / "cli.png"),
    ]
    bare = [sys.executable, str(script), str(model), str(steps), str(size), str(work / "bare.png")]
    timed(cli), timed(bare)  # warm the file cache
    cli_times, bare_times = [], []
    for _ in range(runs):
        cli_times.append(timed(cli))
        bare_times.append(timed(bare))
    return median(cli_times), median(bare_times)


def bench_in_process(model: Path, runs: int, steps: int, size: int) -> tuple[float, float]:
    import torch
    from diffusers import StableDiffusionPipeline

    from localimg.engine import Engine, EngineSettings
    from localimg.requests import ImageRequest

    engine = Engine(EngineSettings(models_path=model.parent))
    request = ImageRequest(
        "a cute baby sea otter|blurry", width=size, height=size, steps=steps, seed=42, cfg_scale=7.5
    )
    engine.generate(str(model), request)  # load + warm-up
    pipe = StableDiffusionPipeline.from_pretrained(str(model), safety_checker=None)
    pipe.set_progress_bar_config(disable=True)

    def bare() -> None:
        with torch.inference_mode():
            pipe(
                "a cute baby sea otter",
                negative_prompt="blurry",
                num_inference_steps=steps,
                width=size,
                height=size,
                guidance_scale=7.5,
                generator=torch.Generator("cpu").manual_seed(42),
            )

    bare()
    engine_times, bare_times = [], []
    for _ in range(runs):
        # The engine runs in its own thread with its own OpenMP team, which spins for a while
        # after a generation: a pause keeps it from slowing the next contender.
        time.sleep(1.0)
        start = time.perf_counter()
        engine.generate(str(model), request)
        engine_times.append(time.perf_counter() - start)
        time.sleep(1.0)
        start = time.perf_counter()
        bare()
        bare_times.append(time.perf_counter() - start)
    engine.close()
    return median(engine_times), median(bare_times)


def bench_help(runs: int) -> tuple[float, bool]:
    cmd = [sys.executable, "-m", "localimg", "--help"]
    times = [timed(cmd) for _ in range(runs)]
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from typer.testing import CliRunner; from localimg.cli import app; "
            "CliRunner().invoke(app, ['--help']); print('torch' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return median(times), probe.stdout.strip() == "True"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument(
        "--model",
        choices=["tiny", "sd15"],
        default="tiny",
        help="sd15: bench/sd15.py's random-weight pipeline with SD1.5's shapes",
    )
    parser.add_argument("--in-process-runs", type=int, default=None, help="[default: 4 x --runs]")
    args = parser.parse_args()
    in_process_runs = args.in_process_runs or args.runs * 4
    sys.path.insert(0, str(ROOT / "bench"))
    from sd15 import model_folder

    model = model_folder(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        cli_s, bare_s = bench_processes(model, args.runs, args.steps, args.size, Path(tmp))
    engine_s, pipe_s = bench_in_process(model, in_process_runs, args.steps, args.size)
    help_s, help_torch = bench_help(args.runs)
    print(
        f"model: {args.model} random SD pipeline, {args.size}x{args.size}, {args.steps} steps, "
        f"median of {args.runs} (in-process: {in_process_runs}) runs"
    )
    print(
        f"whole process  localimg generate {cli_s:7.3f} s | bare diffusers script {bare_s:7.3f} s "
        f"| ratio {cli_s / bare_s:.3f}"
    )
    print(
        f"in process     Engine.generate   {engine_s:7.3f} s | bare pipe() call      "
        f"{pipe_s:7.3f} s | ratio {engine_s / pipe_s:.3f}"
    )
    print(f"start-up       localimg --help   {help_s:7.3f} s | imports torch: {help_torch}")


if __name__ == "__main__":
    main()
