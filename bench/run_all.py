"""`make bench`: run every benchmark of bench/ and write bench/RESULTS.md.

Each benchmark runs as its own process (as a user would run it) and prints ratios measured side
by side; this script adds the machine's description and copies each output into RESULTS.md
verbatim, with the command that made it, so a result can be re-run alone. Each figure that has
a goal (goals.py) gets a line saying its value, its goal and "over goal" where it misses it,
after its benchmark and again in a summary at the end.

Run: `python bench/run_all.py [--quick] [--only NAME,...] [--output bench/RESULTS.md]`.
`--quick` uses the tiny model everywhere (a smoke test of the suite, minutes instead of an hour).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

from goals import verdicts  # noqa: E402  (bench/ is not a package)


def suite(quick: bool) -> list[tuple[str, list[str]]]:
    """(name, arguments of `python bench/...`) in the order they run.

    The full suite runs the SD1.5-size model at 256x256 and 512x512, with fewer repeats at 512
    (about 50 s per image on 2 CPU cores; seconds on a GPU). `--quick` runs the tiny model.
    """
    if quick:
        tiny = ["--model", "tiny", "--size", "64", "--steps", "4"]
        return [
            ("start-up and overhead, tiny model", ["bench_generate.py", "--runs", "2"]),
            ("server overhead (tiny, 64px)", ["bench_server.py", *tiny, "--runs", "2"]),
            ("memory (tiny, 64px)", ["bench_lifecycle.py", *tiny, "--skip", "throughput,leak"]),
            (
                "bfloat16 vs float32 peak memory (tiny)",
                ["bench_precision_memory.py", "--model", "tiny"],
            ),
            (
                "throughput with batching on/off, RSS over 20 generations (tiny, 64px)",
                [
                    "bench_lifecycle.py",
                    *tiny,
                    "--skip",
                    "memory",
                    "--clients",
                    "4",
                    "--leak-runs",
                    "20",
                ],
            ),
            ("ggml backend (tiny SD1, 64px)", ["bench_ggml.py", "--size", "64", "--runs", "2"]),
            ("model families vs bare diffusers (tiny)", ["bench_families.py", "--runs", "3"]),
            ("previews: 3 of 20 steps vs none (tiny)", ["bench_previews.py", "--runs", "3"]),
            (
                "load: 16 clients for 20 s (tiny)",
                ["bench_load.py", "--clients", "16", "--duration", "20"],
            ),
            ("serve --ray: 1 vs 2 replicas (tiny)", ["bench_ray.py", "--rounds", "2"]),
            (
                "ESRGAN x4 upscale (32px) and its memory (512px -> 2048px, 1 block)",
                ["bench_upscale.py", "--input", "32", "--memory-blocks", "1"],
            ),
        ]
    sd15 = ["--model", "sd15", "--steps", "4"]
    return [
        ("start-up and overhead, tiny model", ["bench_generate.py", "--runs", "3"]),
        (
            "localimg vs bare diffusers, cold start and in process (sd15, 256px)",
            ["bench_generate.py", *sd15, "--size", "256", "--runs", "2"],
        ),
        (
            "localimg vs bare diffusers, cold start and in process (sd15, 512px)",
            ["bench_generate.py", *sd15, "--size", "512", "--runs", "1", "--in-process-runs", "2"],
        ),
        (
            "server overhead (sd15, 256px)",
            ["bench_server.py", *sd15, "--size", "256", "--runs", "3"],
        ),
        (
            "server overhead (sd15, 512px)",
            [
                "bench_server.py",
                *sd15,
                "--size",
                "512",
                "--runs",
                "1",
                "--clients",
                "2",
                "--per-client",
                "1",
            ],
        ),
        (
            "prompt weights and LoRA tags (sd15, 256px, 4 steps)",
            ["bench_prompts.py", "--model", "sd15", "--size", "256", "--runs", "3"],
        ),
        (
            "bfloat16 vs float32 peak memory (sd15, 64px, 1 step)",
            ["bench_precision_memory.py", "--model", "sd15", "--runs", "2"],
        ),
        (
            "memory: peak, unload, in-process (sd15, 256px)",
            ["bench_lifecycle.py", *sd15, "--size", "256", "--skip", "throughput,leak"],
        ),
        (
            "throughput with batching on/off (sd15, 256px), RSS over 100 generations (sd15, 128px)",
            [
                "bench_lifecycle.py",
                *sd15,
                "--size",
                "256",
                "--skip",
                "memory",
                "--leak-model",
                "sd15",
                "--leak-size",
                "128",
            ],
        ),
        (
            "ggml backend vs bare stable_diffusion_cpp and sd-cli (tiny SD1, 128px)",
            ["bench_ggml.py", "--size", "128", "--runs", "3"],
        ),
        (
            "previews: 3 of 20 steps vs none (sd15 256px, diffusers)",
            ["bench_previews.py", "--model", "sd15", "--engine", "diffusers", "--size", "256"],
        ),
        ("load: 64 clients for 60 s, queue 8 (tiny)", ["bench_load.py"]),
        (
            "ESRGAN x4 upscale (RealESRGAN_x4plus shapes, 128px) and a 2048x2048 upscale's memory",
            ["bench_upscale.py", "--input", "128", "--runs", "2", "--memory-blocks", "1"],
        ),
        ("serve --ray: 1 vs 2 replicas, one thread each (tiny, 64px)", ["bench_ray.py"]),
        (
            "model families vs bare diffusers (tiny pipelines, 64px)",
            ["bench_families.py", "--runs", "5", "--rounds", "2"],
        ),
        (
            "diffusers vs stablediffusion-ggml on the same weights (sd15, 256px)",
            ["bench_backends.py", "--size", "256", "--steps", "4", "--runs", "3"],
        ),
        (
            "accelerators: speed and image change (sd15, 256px, 20 steps)",
            ["bench_speedups.py", "--model", "sd15", "--runs", "2"],
        ),
        ("accelerators: speed and image change (tiny models)", ["bench_speedups.py"]),
    ]


def gpu() -> str:
    """The CUDA device torch sees, or a sentence saying there is none."""
    try:
        import torch
    except ImportError:
        return "unknown (torch not installed)"
    if not torch.cuda.is_available():
        return (
            "none. No GPU was available for this run, so the GPU table (fp16, batching, "
            "torch.compile) is not measured here."
        )
    props = torch.cuda.get_device_properties(0)
    return f"{props.name}, {props.total_memory / 1024**3:.0f} GiB (CUDA {torch.version.cuda})"


def machine() -> list[str]:
    from localimg._util.system import cpu_has_bf16, physical_cores, usable_cpus

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram = "?"
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        kib = int(meminfo.read_text().split("MemTotal:")[1].split()[0])
        ram = f"{kib / 1024**2:.1f} GiB"
    versions = []
    for name in ("torch", "diffusers", "transformers", "stable_diffusion_cpp"):
        try:
            module = __import__(name)
            versions.append(f"{name} {getattr(module, '__version__', '?')}")
        except ImportError:
            versions.append(f"{name} not installed")
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return [
        f"- CPU: {cpu}; {physical_cores()} physical cores usable ({usable_cpus()} logical); "
        f"native bfloat16: {'yes' if cpu_has_bf16() else 'no'}",
        f"- RAM: {ram}",
        f"- GPU: {gpu()}",
        f"- OS: {platform.platform()}; Python {platform.python_version()}",
        f"- {', '.join(versions)}",
        f"- load average when the suite started: {load[0]:.2f} (other work on the machine "
        "slows both sides of each ratio alike, but adds noise)",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default="", help="comma list of script names to run")
    parser.add_argument("--output", type=Path, default=BENCH / "RESULTS.md")
    args = parser.parse_args()
    only = set(filter(None, args.only.split(",")))

    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "# Benchmark results",
        "",
        f"Made by `make bench` (`python bench/run_all.py{' --quick' if args.quick else ''}`) "
        f"on {started}. Every ratio is measured side by side in one run; the models have random "
        "weights and real shapes (`sd15`: Stable Diffusion 1.5's UNet, VAE and text encoder), "
        "so the compute is real and nothing is downloaded.",
        "",
        "## Machine",
        "",
        *machine(),
        "",
    ]
    summary: list[str] = []
    for name, command in suite(args.quick):
        if only and command[0] not in only:
            continue
        print(f"== {name}: python bench/{' '.join(command)}", flush=True)
        begin = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, str(BENCH / command[0]), *command[1:]],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        took = time.perf_counter() - begin
        print(proc.stdout, flush=True)
        out += [f"## {name}", "", f"`python bench/{' '.join(command)}` ({took:.0f} s)", ""]
        text = proc.stdout.strip()
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
            text += f"\n\nFAILED (exit {proc.returncode}):\n{tail}"
            print(tail, file=sys.stderr)
        out += ["```", text, "```", ""]
        found = verdicts(proc.stdout)
        if found:
            print("goals:\n" + "\n".join(f"  {line}" for line in found), flush=True)
            out += ["Goals:", "", *(f"- {line}" for line in found), ""]
            summary += [f"- {name}: {line}" for line in found]
        args.output.write_text("\n".join(out), encoding="utf-8")  # keep what is done so far
    over = [line for line in summary if line.endswith("over goal")]
    out += ["## Goals", "", f"{len(over)} of {len(summary)} figures over goal.", "", *summary, ""]
    args.output.write_text("\n".join(out), encoding="utf-8")
    print(f"goals: {len(over)} of {len(summary)} figures over goal")
    for line in over:
        print(f"  {line}")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
