"""`localimg serve` over HTTP against a direct `Engine.generate` call, side by side in one run.

Run: `python bench/bench_server.py [--model sd15|tiny] [--runs 3] [--steps 4] [--size 256]`.

1. latency: the same model, size, steps, seed and threads, alternating a direct
   `Engine.generate` call (model loaded) with a POST /v1/images/generations to a real uvicorn
   server whose model runs in a worker process (also loaded); the ratio is the server's overhead
   (HTTP, JSON, worker pipe, PNG + base64 encoding). The direct call runs in a clean process of
   its own (bench/contenders.py), as the server's worker does: inside this process, next to the
   HTTP client and the server's event loop, it came out slower than the worker (ratios below 1
   that measured the yardstick). Both images must be the same pixels, so the two really ran the
   same generation;
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
print = functools.partial(print, flush=True)  # progress shows as it happens
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

PROMPT = "a cute baby sea otter|blurry"
SEED = 42


def child(models: Path, size: int, steps: int, threads: int) -> None:
    """The direct contender (bench/contenders.py): `Engine.generate` with the model loaded in
    this clean process, the same threads as the server's worker."""
    from contenders import serve

    from localimg.backends.base import RuntimeSettings
    from localimg.engine import Engine, EngineSettings
    from localimg.requests import ImageRequest

    engine = Engine(EngineSettings(models_path=models, runtime=RuntimeSettings(threads=threads)))
    request = ImageRequest(prompt=PROMPT, width=size, height=size, steps=steps, seed=SEED)

    def generate() -> Any:
        image = engine.generate("bench", request).images[0]
        assert image.size == (size, size), image.size
        return image

    def setup() -> Callable[[], Any]:
        generate()  # load + warm-up
        return generate

    try:
        serve(setup)
    finally:
        engine.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["sd15", "tiny"], default="sd15")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--per-client", type=int, default=2, help="requests per client")
    parser.add_argument("--threads", type=int, default=0, help="[default: physical cores]")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        models_dir, child_size, child_steps, child_threads = args.child
        child(Path(models_dir), int(child_size), int(child_steps), int(child_threads))
        return

    import httpx
    from contenders import Contender, alternate, describe_difference
    from PIL import Image

    from localimg._util.system import physical_cores
    from localimg.backends.base import RuntimeSettings
    from localimg.engine import Engine, EngineSettings, worker_slot_factory
    from localimg.server.app import ServerSettings, create_app
    from tests.support.server_support import serve_in_thread, write_model

    threads = args.threads or physical_cores()

    started = time.perf_counter()
    from sd15 import model_folder

    folder = model_folder(args.model)
    print(f"model: {args.model} ({folder}), ready in {time.perf_counter() - started:.1f} s")
    work = Path(tempfile.mkdtemp(prefix="bench-server-"))
    models = work / "models"
    models.mkdir()
    write_model(models, "bench", folder)
    size = f"{args.size}x{args.size}"
    body = {"model": "bench", "prompt": PROMPT, "size": size, "steps": args.steps, "seed": SEED}
    served = Engine(
        EngineSettings(models_path=models, max_queue=16, runtime=RuntimeSettings(threads=threads)),
        slot_factory=worker_slot_factory(),
    )
    app = create_app(ServerSettings(output_dir=work / "out"), served)
    print(f"warming up (loading the model in both; {threads} threads each)...")
    direct = Contender(
        __file__, [str(models), str(args.size), str(args.steps), str(threads)], "direct"
    )
    with serve_in_thread(app) as url, httpx.Client(timeout=3600) as client:
        last: list[Any] = []
        http_times: list[float] = []

        def over_http() -> float:
            begin = time.perf_counter()
            response = client.post(f"{url}/v1/images/generations", json=body)
            elapsed = time.perf_counter() - begin
            response.raise_for_status()
            data = base64.b64decode(response.json()["data"][0]["b64_json"])
            image = Image.open(io.BytesIO(data))
            image.load()
            assert image.size == (args.size, args.size)
            last[:] = [image]
            return elapsed

        def timed_http() -> float:
            http_times.append(over_http())
            return http_times[-1]

        try:
            over_http()  # starts the worker, loads the model there, warms it up
            worker = served.slots["bench"].info()  # type: ignore[attr-defined]
            assert worker.get("threads", str(threads)) == str(threads), worker
            alternate(args.runs, [direct.run, timed_http])
            _, direct_pixels = direct.finish()  # frees its copy before the throughput run
        finally:
            direct.close()
        d, h = direct.median(), statistics.median(http_times)
        print(f"\nlatency, {size}, {args.steps} steps, {threads} threads, median of {args.runs}:")
        print(f"  Engine.generate (own process): {d:8.3f} s   runs {_fmt(direct.times)}")
        print(f"  HTTP via localimg serve:       {h:8.3f} s   runs {_fmt(http_times)}")
        print(f"  ratio HTTP / direct: {h / d:.4f}  (server overhead {100 * (h / d - 1):+.2f}%), "
              f"{describe_difference(direct_pixels, last[0])}")  # fmt: skip
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
