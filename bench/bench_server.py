"""`localimg serve` over HTTP against a direct `Engine.generate` call, side by side in one run.

Run: `python bench/bench_server.py [--model sd15|tiny] [--runs 3] [--steps 4] [--size 256]`.

1. latency: the same model, size, steps and seed, alternating a direct in-process
   `Engine.generate` (model loaded) with a POST /v1/images/generations to a real uvicorn server
   whose model runs in a worker process (also loaded); the ratio is the server's overhead (HTTP,
   JSON, worker pipe, PNG + base64 encoding);
2. throughput: 4 concurrent clients against the server (one generation at a time per model, so
   this measures that queueing adds nothing), in images per second, next to the sequential rate.

`--model sd15` (bench/sd15.py) builds (once, cached in .test-cache/) a pipeline with Stable
Diffusion 1.5's shapes (UNet 860M, VAE 84M, CLIP ViT-L text encoder 123M) and random weights: real
compute, no download. `--model tiny` is the test suite's toy pipeline (fast; overhead dominates
there).
"""

from __future__ import annotations

import argparse
import base64
import functools
import io
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
print = functools.partial(print, flush=True)  # progress shows as it happens
sys.path.insert(0, str(ROOT))


SETTLE = 1.0  # seconds between contenders (see the loop in main)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["sd15", "tiny"], default="sd15")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--per-client", type=int, default=2, help="requests per client")
    args = parser.parse_args()

    import httpx
    from PIL import Image

    from localimg.engine import Engine, EngineSettings, worker_slot_factory
    from localimg.requests import ImageRequest
    from localimg.server.app import ServerSettings, create_app
    from tests.server_support import serve_in_thread, write_model

    started = time.perf_counter()
    from sd15 import model_folder

    folder = model_folder(args.model)
    print(f"model: {args.model} ({folder}), ready in {time.perf_counter() - started:.1f} s")
    work = Path(tempfile.mkdtemp(prefix="bench-server-"))
    models = work / "models"
    models.mkdir()
    write_model(models, "bench", folder)
    size = f"{args.size}x{args.size}"
    body = {
        "model": "bench",
        "prompt": "a cute baby sea otter|blurry",
        "size": size,
        "steps": args.steps,
        "seed": 42,
    }
    request = ImageRequest(
        prompt=body["prompt"], width=args.size, height=args.size, steps=args.steps, seed=42
    )

    direct = Engine(EngineSettings(models_path=models))
    served = Engine(
        EngineSettings(models_path=models, max_queue=16), slot_factory=worker_slot_factory()
    )
    app = create_app(ServerSettings(output_dir=work / "out"), served)
    with serve_in_thread(app) as url, httpx.Client(timeout=3600) as client:

        def over_http() -> float:
            begin = time.perf_counter()
            response = client.post(f"{url}/v1/images/generations", json=body)
            elapsed = time.perf_counter() - begin
            response.raise_for_status()
            data = base64.b64decode(response.json()["data"][0]["b64_json"])
            assert Image.open(io.BytesIO(data)).size == (args.size, args.size)
            return elapsed

        def in_process() -> float:
            begin = time.perf_counter()
            result = direct.generate("bench", request)
            elapsed = time.perf_counter() - begin
            assert result.images[0].size == (args.size, args.size)
            return elapsed

        print("warming up (loading the model in both)...")
        in_process()
        over_http()
        http_times, direct_times = [], []
        for _ in range(args.runs):
            # A pause before each contender: torch's OpenMP threads spin for a while after a
            # generation, and in this process they would steal cores from the worker's.
            time.sleep(SETTLE)
            direct_times.append(in_process())
            time.sleep(SETTLE)
            http_times.append(over_http())
        d, h = statistics.median(direct_times), statistics.median(http_times)
        print(f"\nlatency, {size}, {args.steps} steps, median of {args.runs}:")
        print(f"  Engine.generate (in process): {d:8.3f} s   runs {_fmt(direct_times)}")
        print(f"  HTTP via localimg serve:      {h:8.3f} s   runs {_fmt(http_times)}")
        print(f"  ratio HTTP / direct: {h / d:.4f}  (server overhead {100 * (h / d - 1):+.2f}%)")

        direct.close()  # free the in-process copy before the throughput run
        total = args.clients * args.per_client
        errors: list[BaseException] = []

        def client_loop(count: int) -> None:
            try:
                for _ in range(count):
                    over_http()
            except BaseException as exc:  # reported below
                errors.append(exc)

        begin = time.perf_counter()
        threads = [
            threading.Thread(target=client_loop, args=(args.per_client,))
            for _ in range(args.clients)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - begin
        if errors:
            raise errors[0]
        print(f"\nthroughput, {args.clients} concurrent clients, {total} requests:")
        print(
            f"  {total / wall:.3f} images/s (wall {wall:.1f} s); sequential HTTP rate "
            f"{1 / h:.3f} images/s; ratio concurrent / sequential {(total / wall) * h:.3f}"
        )
    served.close()


def _fmt(values: list[float]) -> str:
    return ", ".join(f"{v:.3f}" for v in values)


if __name__ == "__main__":
    main()
