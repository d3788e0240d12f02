"""`make bench`: run every benchmark of bench/ and write bench/RESULTS.md.

Each benchmark runs as its own process (as a user would run it) and prints ratios measured side
by side; this script adds the machine's description and copies each output into RESULTS.md
verbatim, with the command that made it, so a result can be re-run alone.

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


def suite(quick: bool) -> list[tuple[str, list[str]]]:
    """(name, arguments of `python bench/...`) in the order they run."""
    model = "tiny" if quick else "sd15"
    size = "64" if quick else "256"
    runs = [
        ("start-up and overhead, tiny model", ["bench_generate.py", "--runs", "5"]),
        (
            f"localimg vs bare diffusers, cold start ({model}, {size}px)",
            ["bench_generate.py", "--model", model, "--size", size, "--steps", "4", "--runs", "2"],
        ),
        (
            f"server overhead ({model}, {size}px)",
            ["bench_server.py", "--model", model, "--size", size, "--steps", "4", "--runs", "3"],
        ),
        (
            f"memory: peak, unload, in-process ({model}, {size}px)",
            [
                "bench_lifecycle.py",
                "--model",
                model,
                "--size",
                size,
                "--steps",
                "4",
                "--skip",
                "throughput,leak",
            ],
        ),
        # On 2 CPU cores an SD1.5-size image at 256px takes about a minute, so the 48 images of
        # the throughput runs and the 100 of the leak run use the tiny model there; with more
        # cores pass `--model sd15` to bench_lifecycle.py directly.
        (
            "throughput with batching on/off, RSS over 100 generations (tiny, 64px)",
            [
                "bench_lifecycle.py",
                "--model",
                "tiny",
                "--size",
                "64",
                "--steps",
                "4",
                "--skip",
                "memory",
                *(["--clients", "4", "--leak-runs", "20"] if quick else []),
            ],
        ),
    ]
    if (BENCH / "bench_ggml.py").is_file():
        quick_ggml = ["--size", "64", "--runs", "2"] if quick else []
        runs.append(("ggml backend", ["bench_ggml.py", *quick_ggml]))
    return runs


def machine() -> list[str]:
    from localimg.system import cpu_has_bf16, physical_cores, usable_cpus

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
        "- GPU: none. No GPU was lent for this run, so the GPU table (fp16, batching, "
        "torch.compile) is not measured here.",
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
        args.output.write_text("\n".join(out), encoding="utf-8")  # keep what is done so far
    args.output.write_text("\n".join(out), encoding="utf-8")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
