"""Throughput of `serve --ray` with 1 and 2 replicas of one model, side by side, as a ratio.

Run: `python bench/bench_ray.py [--steps 20] [--size 64] [--clients 4] [--requests 16]
[--rounds 3] [--threads 1]`.

One local Ray instance and one `serve --ray` app (the real ingress, slots and replicas, in this
process under uvicorn). Two models on the same tiny pipeline are deployed at once: `one` with 1
replica and `two` with 2, each replica with `--threads` CPU threads. Ray gets 3 logical CPUs so
all three replicas run, though only the model under test works at a time. Each round sends
`--requests` generations from `--clients` concurrent HTTP clients to `one`, then to `two`
(alternating, so the machine's drifting load hits both alike), and the ratio is the median
images/s of `two` over `one`. Every answer must be 200, and `two`'s answers must name both of
its replicas (X-Localimg-Replica); otherwise it exits 1.

Two replicas can double throughput only where two replicas get a core each that nothing else
uses: on a 2-core machine the ingress (HTTP, PNG encoding) and Ray's own processes share the
cores with the replicas, so the ratio there says what 2 cores allow, not what Ray does. Where
other processes compete for the cores (the load average is printed before and after), two
replica processes also win a larger share of the CPU than one, which can push the ratio above 2.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
print = functools.partial(print, flush=True)  # progress shows as it happens


def write_models(folder: Path, tiny: Path) -> None:
    for name, replicas in (("one", 1), ("two", 2)):
        (folder / f"{name}.yaml").write_text(
            f"name: {name}\nbackend: diffusers\nparameters:\n  model: {tiny}\n"
            f"ray:\n  replicas: {replicas}\n",
            encoding="utf-8",
        )


def burst(url: str, model: str, args: argparse.Namespace) -> tuple[float, set[str]]:
    """`--requests` generations from `--clients` clients: (images per second, replicas seen)."""
    body = {"model": model, "prompt": "a lighthouse", "size": f"{args.size}x{args.size}"}
    body |= {"steps": args.steps}

    def one(index: int) -> str:
        answer = httpx.post(
            f"{url}/v1/images/generations", json={**body, "seed": index}, timeout=600
        )
        if answer.status_code != 200:
            raise SystemExit(f"{model}: {answer.status_code} {answer.text[:200]}")
        return answer.headers["x-localimg-replica"]

    began = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
        replicas = set(pool.map(one, range(args.requests)))
    return args.requests / (time.perf_counter() - began), replicas


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    from localimg.backends.base import RuntimeSettings
    from localimg.engine import EngineSettings
    from localimg.ray.app import create_ray_app
    from localimg.ray.cluster import RayCluster, RayServeOptions
    from localimg.server.app import ServerSettings
    from tests.support.server_support import serve_in_thread
    from tests.support.tiny_models import tiny_sd_path

    cores = os.cpu_count() or 1
    print(f"machine: {cores} CPU cores; replicas of {args.threads} thread(s) each")
    print(f"load average before: {os.getloadavg()[0]:.1f} (other processes share the cores)")
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as temp:
        models = Path(temp) / "models"
        models.mkdir()
        write_models(models, tiny_sd_path())
        cluster = RayCluster(RayServeOptions(num_cpus=3 * args.threads)).start()
        try:
            settings = EngineSettings(
                models_path=models,
                runtime=RuntimeSettings(threads=args.threads),
                max_queue=max(64, args.requests),
            )
            app = create_ray_app(ServerSettings(output_dir=Path(temp) / "out"), settings, cluster)
            with serve_in_thread(app) as url:
                for model in ("one", "two"):  # deploy and warm up both
                    burst(url, model, argparse.Namespace(**{**vars(args), "requests": 4}))
                rates: dict[str, list[float]] = {"one": [], "two": []}
                for round_ in range(1, args.rounds + 1):
                    for model in ("one", "two"):
                        rate, seen = burst(url, model, args)
                        expected = 1 if model == "one" else 2
                        if len(seen) != expected:
                            print(f"{model}: answers came from {sorted(seen)}, not {expected}")
                            return 1
                        rates[model].append(rate)
                        print(f"round {round_}: {model} replica(s): {rate:.2f} images/s")
        finally:
            cluster.stop()
    one, two = statistics.median(rates["one"]), statistics.median(rates["two"])
    size = f"{args.size}x{args.size}, {args.steps} steps"
    print()
    print(f"| replicas | images/s (median of {args.rounds}) | ratio |")
    print("| --- | --- | --- |")
    print(f"| 1 | {one:.2f} | 1.00 |")
    print(f"| 2 | {two:.2f} | {two / one:.2f} |")
    print(
        f"\ntiny model, {size}, {args.clients} clients x {args.requests} requests per burst, "
        f"{cores} cores, load average after {os.getloadavg()[0]:.1f}: "
        f"2 replicas / 1 replica = {two / one:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
