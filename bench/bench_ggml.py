"""stablediffusion-ggml overhead: localimg vs the bare stable_diffusion_cpp call vs the `sd` CLI.

All on the random SD1 tiny-UNet model of tests/tiny_ggml.py, same size, steps, seed, sampler and
threads, measured side by side in one run and printed as ratios (target: within 2%):

- in process: `Engine.generate` vs `StableDiffusion.generate_image` on loaded models (median of
  --runs generations each, interleaved);
- over HTTP: POST /v1/images/generations to a real `localimg serve` app (model loaded in its
  worker process) vs the same bare call;
- whole command: `localimg generate` vs a bare Python script vs stable-diffusion.cpp's own `sd-cli`
  (built from the same source, see README's Benchmarks; `--sd-cli PATH` or $LOCALIMG_SD_CLI),
  each a fresh process that loads the model.

    python bench/bench_ggml.py --size 128 --steps 4 --runs 5 --sd-cli /tmp/sdsrc/.../sd-cli
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BARE = """
import sys, stable_diffusion_cpp as sd
m = sd.StableDiffusion(model_path=sys.argv[1], taesd_path=sys.argv[2], n_threads=int(sys.argv[3]),
                       verbose=True)
m.generate_image(prompt="a red fox", width=int(sys.argv[4]), height=int(sys.argv[4]),
                 sample_steps=int(sys.argv[5]), seed=1, cfg_scale=4.5, sample_method="euler",
                 eta=float("inf"))
"""


SETTLE = 1.0  # seconds of pause between contenders, so one's idle threads do not slow the other


def timed(command: list[str]) -> float:
    begin = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - begin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--sd-cli",
        type=Path,
        default=Path(os.environ["LOCALIMG_SD_CLI"]) if os.environ.get("LOCALIMG_SD_CLI") else None,
        help="stable-diffusion.cpp's sd-cli [default: $LOCALIMG_SD_CLI]",
    )
    args = parser.parse_args()

    import stable_diffusion_cpp as sd

    from localimg.backends import ggml_native
    from localimg.backends.base import RuntimeSettings
    from localimg.engine import Engine, EngineSettings
    from localimg.requests import ImageRequest
    from localimg.system import physical_cores
    from tests.tiny_ggml import (
        populate_models_dir,
        tiny_checkpoint_path,
        tiny_lora_path,
        tiny_taesd_path,
    )

    threads = args.threads or physical_cores()
    files = {"model": tiny_checkpoint_path(), "taesd": tiny_taesd_path(), "lora": tiny_lora_path()}
    models = populate_models_dir(Path(tempfile.mkdtemp(prefix="bench-ggml-")), files)
    model, taesd = str(models / "gguf_model.safetensors"), str(models / "taesd.safetensors")
    size, steps = args.size, args.steps
    print(f"tiny SD1 (random), {size}x{size}, {steps} steps, euler, {threads} threads")

    # -- in process ------------------------------------------------------------------------
    engine = Engine(EngineSettings(models_path=models, runtime=RuntimeSettings(threads=threads)))
    request = ImageRequest(
        prompt="a red fox", width=size, height=size, steps=steps, seed=1, scheduler="euler"
    )
    engine.generate("stablediffusion", request)  # load + warm up
    native = ggml_native.install()
    bare = ggml_native.leak_free_class(native)(
        model_path=model, taesd_path=taesd, n_threads=threads, verbose=True
    )
    ggml_native.quiet_wrapper()
    call = dict(prompt="a red fox", width=size, height=size, sample_steps=steps, seed=1,
                cfg_scale=4.5, sample_method="euler", eta=float("inf"))  # fmt: skip
    bare.generate_image(**call)
    ours, theirs = [], []
    for _ in range(args.runs):
        time.sleep(SETTLE)
        begin = time.perf_counter()
        engine.generate("stablediffusion", request)
        ours.append(time.perf_counter() - begin)
        time.sleep(SETTLE)
        begin = time.perf_counter()
        bare.generate_image(**call)
        theirs.append(time.perf_counter() - begin)
    engine.close()
    a, b = statistics.median(ours), statistics.median(theirs)
    print(
        f"in process   Engine.generate    {a:.3f}s  bare generate_image {b:.3f}s  ratio {a / b:.3f}"
    )

    # -- over HTTP ---------------------------------------------------------------------------
    import httpx
    from PIL import Image

    from localimg.server.app import ServerSettings, create_app
    from localimg.workers import worker_slot_factory
    from tests.server_support import serve_in_thread

    served = Engine(
        EngineSettings(models_path=models, runtime=RuntimeSettings(threads=threads)),
        slot_factory=worker_slot_factory(),
    )
    body = {
        "model": "stablediffusion",
        "prompt": "a red fox",
        "size": f"{size}x{size}",
        "steps": steps,
        "seed": 1,
        "scheduler": "euler",
        "response_format": "b64_json",
    }
    app = create_app(ServerSettings(output_dir=models / "out"), served)
    with serve_in_thread(app) as url, httpx.Client(timeout=3600) as client:

        def over_http() -> float:
            begin = time.perf_counter()
            reply = client.post(f"{url}/v1/images/generations", json=body)
            elapsed = time.perf_counter() - begin
            reply.raise_for_status()
            image = Image.open(io.BytesIO(base64.b64decode(reply.json()["data"][0]["b64_json"])))
            assert image.size == (size, size), image.size
            return elapsed

        over_http()  # loads the model in the worker
        http, direct = [], []
        for _ in range(args.runs):
            time.sleep(SETTLE)
            http.append(over_http())
            time.sleep(SETTLE)
            begin = time.perf_counter()
            bare.generate_image(**call)
            direct.append(time.perf_counter() - begin)
    served.close()
    bare.close()
    a, b = statistics.median(http), statistics.median(direct)
    print(
        f"over HTTP    localimg serve     {a:.3f}s  bare generate_image {b:.3f}s  ratio {a / b:.3f}"
    )

    # -- whole commands ----------------------------------------------------------------------
    env = {**os.environ, "LOCALIMG_MODELS_PATH": str(models)}
    out = models / "bench.png"
    cli = [sys.executable, "-m", "localimg", "generate", "a red fox", "-m", "stablediffusion",
           "--size", f"{size}x{size}", "--steps", str(steps), "--seed", "1", "--scheduler",
           "euler", "--threads", str(threads), "-o", str(out)]  # fmt: skip
    script = [sys.executable, "-c", BARE, model, taesd, str(threads), str(size), str(steps)]
    rows: dict[str, list[float]] = {"localimg generate": [], "bare python": []}
    sd_cli = args.sd_cli
    sd_cmd = []
    if sd_cli is not None and sd_cli.exists():
        rows["sd-cli"] = []
        sd_cmd = [str(sd_cli), "-m", model, "--taesd", taesd, "-p", "a red fox", "-W", str(size),
                  "-H", str(size), "--steps", str(steps), "-s", "1", "--cfg-scale", "4.5",
                  "--sampling-method", "euler", "-t", str(threads),
                  "-o", str(models / "sd.png")]  # fmt: skip
    for _ in range(max(1, args.runs // 2)):
        begin = time.perf_counter()
        subprocess.run(cli, check=True, capture_output=True, env=env)
        rows["localimg generate"].append(time.perf_counter() - begin)
        rows["bare python"].append(timed(script))
        if sd_cmd:
            rows["sd-cli"].append(timed(sd_cmd))
    if not sd_cmd:
        print("sd-cli: not given (set LOCALIMG_SD_CLI or --sd-cli)")
    base = statistics.median(rows["bare python"])
    for name, values in rows.items():
        median = statistics.median(values)
        print(f"process      {name:18s} {median:.3f}s  ratio to bare python {median / base:.3f}")
    print(f"(library {sd.__version__})")


if __name__ == "__main__":
    main()
