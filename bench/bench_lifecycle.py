"""Model lifecycle and throughput of `localimg serve`, measured side by side in one run.

Run: `python bench/bench_lifecycle.py [--model sd15|tiny] [--size 256] [--steps 4]
[--leak-model tiny|sd15] [--leak-runs 100] [--leak-size 128]`.

1. throughput: 4 and 16 concurrent clients against a real server (worker processes), batching
   off (`--max-batch 1`) vs on (`--max-batch 4`), in images per second;
2. peak memory: the worker's peak RSS (VmHWM) with the model loaded and one image made, vs a bare
   diffusers script doing the same (its own peak RSS);
3. unload: the RSS of the server's process tree before the model loads, loaded, and after
   `POST /models/{name}/unload`; and the same in one process (`--in-process`: the engine frees
   the pipeline and trims the heap);
4. leaks: the worker's RSS over `--leak-runs` generations (start, every tenth, end).

`--model sd15` is bench/sd15.py's random-weight pipeline with Stable Diffusion 1.5's shapes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

BARE_PEAK = """
import resource, sys, torch
from diffusers import StableDiffusionPipeline
torch.set_num_threads(int(sys.argv[4]))
pipe = StableDiffusionPipeline.from_pretrained(sys.argv[1], safety_checker=None)
pipe.set_progress_bar_config(disable=True)
with torch.inference_mode():
    pipe("a cute baby sea otter", negative_prompt="blurry", num_inference_steps=int(sys.argv[2]),
         width=int(sys.argv[3]), height=int(sys.argv[3]),
         generator=torch.Generator("cpu").manual_seed(42))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def mib(value: float | None) -> str:
    return "?" if value is None else f"{value / 1024**2:8.1f} MiB"


def status_field(pid: int, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def tree_rss(pid: int) -> int:
    """RSS of a process and all its descendants (the server and its workers)."""
    total = status_field(pid, "VmRSS") or 0
    children: list[str] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):  # workers are started by any thread
        try:
            children += (task / "children").read_text().split()
        except OSError:
            continue
    return total + sum(tree_rss(int(child)) for child in set(children))


class Server:
    """`localimg serve` as a user runs it, in a child process."""

    def __init__(self, models: Path, *options: str) -> None:
        from tests.support.server_support import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "localimg", "serve", "--port", str(self.port),
             "--models-path", str(models), "--log-level", "warning", *options],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        import httpx

        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("the server did not start")
            time.sleep(0.2)

    def model(self, name: str) -> dict:
        import httpx

        return dict(httpx.get(f"{self.url}/v1/models/{name}", timeout=60).json())

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=120)


def throughput(url: str, body: dict, clients: int) -> float:
    """Images per second with `clients` threads each sending requests in a loop."""
    import httpx

    per_client = 2 if clients <= 4 else 1
    errors: list[BaseException] = []

    def loop(index: int) -> None:
        try:
            with httpx.Client(timeout=3600) as client:
                for run in range(per_client):
                    seeded = {**body, "seed": 1000 * index + run}
                    client.post(f"{url}/v1/images/generations", json=seeded).raise_for_status()
        except BaseException as exc:  # reported below
            errors.append(exc)

    begin = time.perf_counter()
    threads = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return clients * per_client / (time.perf_counter() - begin)


def bench_throughput(models: Path, body: dict, client_counts: list[int]) -> list[str]:
    lines = []
    for clients in client_counts:
        rates = {}
        for batch in (1, 4):
            server = Server(models, "--max-batch", str(batch), "--max-queue", "32",
                            "--preload", "bench")  # fmt: skip
            try:
                import httpx

                while server.model("bench")["state"] != "loaded":
                    time.sleep(0.5)
                httpx.post(f"{server.url}/v1/images/generations", json=body, timeout=3600)
                rates[batch] = throughput(server.url, body, clients)
            finally:
                server.stop()
        lines.append(
            f"  {clients:2d} clients: batching off {rates[1]:.3f} img/s | --max-batch 4 "
            f"{rates[4]:.3f} img/s | ratio on/off {rates[4] / rates[1]:.3f}"
        )
        print(lines[-1], flush=True)
    return lines


def bench_memory(models: Path, folder: Path, body: dict, size: int, steps: int) -> list[str]:
    import httpx

    from localimg._util.system import physical_cores

    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "bare.py"
        script.write_text(textwrap.dedent(BARE_PEAK))
        out = subprocess.run(
            [sys.executable, str(script), str(folder), str(steps), str(size),
             str(physical_cores())],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        bare_peak = int(out.stdout.strip().splitlines()[-1])

    for mode in ("workers", "in-process"):
        options = ["--in-process"] if mode == "in-process" else []
        server = Server(models, "--keep-alive", "-1", *options)
        try:
            pid = server.process.pid
            time.sleep(1)
            before = tree_rss(pid)
            response = httpx.post(f"{server.url}/v1/images/generations", json=body, timeout=3600)
            response.raise_for_status()
            loaded = tree_rss(pid)
            entry = server.model("bench")
            worker_pid = (entry.get("worker") or {}).get("pid")
            peak = status_field(worker_pid, "VmHWM") if worker_pid else status_field(pid, "VmHWM")
            httpx.post(f"{server.url}/models/bench/unload", timeout=600).raise_for_status()
            time.sleep(2)
            after = tree_rss(pid)
        finally:
            server.stop()
        where = "worker process" if mode == "workers" else "server process"
        returned = (loaded - after) / (loaded - before) if loaded > before else float("nan")
        lines.append(
            f"  {mode:10s}: RSS before load {mib(before)} | loaded {mib(loaded)} | after unload "
            f"{mib(after)} | after/before {after / before:.3f} | returned {100 * returned:.0f}%"
        )
        lines.append(
            f"  {mode:10s}: peak RSS of the {where} {mib(peak)} | bare diffusers script "
            f"{mib(bare_peak)} | ratio {peak / bare_peak if peak else float('nan'):.3f}"
        )
        print("\n".join(lines[-2:]), flush=True)
    return lines


def bench_leak(models: Path, runs: int, body: dict) -> list[str]:
    import httpx

    server = Server(models, "--keep-alive", "-1")
    samples: list[tuple[int, int]] = []
    try:
        with httpx.Client(timeout=3600) as client:
            for index in range(runs + 1):
                seeded = {**body, "seed": index}
                client.post(f"{server.url}/v1/images/generations", json=seeded).raise_for_status()
                if index % 10 == 0:
                    pid = server.model(body["model"])["worker"]["pid"]
                    samples.append((index, status_field(pid, "VmRSS") or 0))
    finally:
        server.stop()
    first, last = samples[0][1], samples[-1][1]
    growth = last - first
    series = ", ".join(f"{i}:{rss / 1024**2:.0f}" for i, rss in samples)
    return [
        f"  worker RSS after generation 1 {mib(first)} | after {runs + 1} {mib(last)} | growth "
        f"{growth / 1024**2:+.1f} MiB ({100 * growth / first:+.2f}%)",
        f"  samples (generation:MiB): {series}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["sd15", "tiny"], default="sd15")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--clients", default="4,16")
    parser.add_argument("--leak-model", choices=["sd15", "tiny"], default="tiny")
    parser.add_argument("--leak-runs", type=int, default=100)
    parser.add_argument(
        "--leak-size", type=int, default=None, help="[default: 64 on tiny, else --size]"
    )
    parser.add_argument("--skip", default="", help="comma list of: throughput,memory,leak")
    parser.add_argument("--json", type=Path, help="also write the lines here")
    args = parser.parse_args()

    from sd15 import model_folder

    from tests.support.server_support import write_model

    skip = set(filter(None, args.skip.split(",")))
    folder = model_folder(args.model)
    work = Path(tempfile.mkdtemp(prefix="bench-lifecycle-"))
    models = work / "models"
    models.mkdir()
    write_model(models, "bench", folder)
    body = {
        "model": "bench",
        "prompt": "a cute baby sea otter|blurry",
        "size": f"{args.size}x{args.size}",
        "steps": args.steps,
        "seed": 42,
    }
    sections: dict[str, list[str]] = {}
    title = f"{args.model}, {args.size}x{args.size}, {args.steps} steps"
    if "throughput" not in skip:
        print(f"throughput ({title}):", flush=True)
        counts = [int(c) for c in args.clients.split(",")]
        sections[f"throughput ({title})"] = bench_throughput(models, body, counts)
    if "memory" not in skip:
        print(f"memory ({title}):", flush=True)
        sections[f"memory ({title})"] = bench_memory(models, folder, body, args.size, args.steps)
    if "leak" not in skip:
        leak_models = work / "leak"
        leak_models.mkdir()
        write_model(leak_models, "leak", model_folder(args.leak_model))
        leak_size = args.leak_size or (64 if args.leak_model == "tiny" else args.size)
        leak_body = {**body, "model": "leak", "size": f"{leak_size}x{leak_size}", "steps": 2}
        name = f"RSS over {args.leak_runs} generations ({args.leak_model}, {leak_size}px, 2 steps)"
        print(name + ":", flush=True)
        sections[name] = bench_leak(leak_models, args.leak_runs, leak_body)
        print("\n".join(sections[name]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(sections, indent=2))


if __name__ == "__main__":
    main()
