"""stablediffusion-ggml overhead: localimg vs the bare stable_diffusion_cpp call vs `sd-cli`.

All on the random SD1 tiny-UNet model of tests/support/tiny_ggml.py, with the same prompt, size,
steps, seed (1), sampler (euler, the default "discrete" schedule), cfg scale (4.5) and threads,
measured side by side in one run and printed as ratios (target: within 2%):

- in process: `Engine.generate` vs `StableDiffusion.generate_image` on loaded models (median of
  --runs generations each, interleaved, after a warm-up of each);
- over HTTP: POST /v1/images/generations to a real uvicorn `localimg serve` app whose model is
  loaded in its worker process (started with the same thread count) vs the same bare call in a
  clean process of its own with the same threads (bench/contenders.py; in this process, next to
  the HTTP client and the server's event loop, it came out slower than the worker: a ratio below
  1 that measured the yardstick); the returned b64 PNG is decoded and compared with its pixels;
- whole command: `localimg generate` vs a bare Python script vs stable-diffusion.cpp's own `sd-cli`,
  each a fresh process that loads the model, generates and writes a PNG (the three images are
  compared pixel for pixel, which checks that they really ran the same generation).

The bare model of the first two legs is built with localimg's `ggml_native` callbacks (one process
can have only one set) and its leak-free subclass; the bare script in the whole-command leg is
plain `stable_diffusion_cpp`.

    python bench/bench_ggml.py --size 128 --steps 4 --runs 5 --sd-cli /path/to/sd-cli

`sd-cli` is not part of the Python package; build it from the package's own vendored source, so
both run the same stable-diffusion.cpp (never commit the binary), and pass it with `--sd-cli` or
$LOCALIMG_SD_CLI (which `make bench` forwards):

    pip download --no-deps --no-binary :all: stable-diffusion-cpp-python==0.4.7 -d /tmp/sdsrc
    tar xzf /tmp/sdsrc/stable_diffusion_cpp_python-0.4.7.tar.gz -C /tmp/sdsrc
    cd /tmp/sdsrc/stable_diffusion_cpp_python-0.4.7
    cmake -S vendor/stable-diffusion.cpp -B build -DCMAKE_BUILD_TYPE=Release \\
        -DSD_BUILD_EXAMPLES=ON -DSD_WEBP=OFF -DSD_WEBM=OFF
    cmake --build build -j --target sd-cli        # the binary is build/bin/sd-cli
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
print = functools.partial(print, flush=True)  # progress shows as it happens

PROMPT = "a red fox"
SEED = 1
CFG = 4.5
SAMPLER = "euler"

BARE = f"""
import sys, stable_diffusion_cpp as sd
model, taesd, threads, size, steps, out = sys.argv[1:]
m = sd.StableDiffusion(model_path=model, taesd_path=taesd, n_threads=int(threads), verbose=True)
images = m.generate_image(prompt={PROMPT!r}, width=int(size), height=int(size),
                          sample_steps=int(steps), seed={SEED}, cfg_scale={CFG},
                          sample_method={SAMPLER!r}, eta=float("inf"))
images[0].save(out)
"""


SETTLE = 1.0  # seconds of pause between contenders, so one's idle threads do not slow the other


def timed(command: list[str], env: dict[str, str] | None = None) -> float:
    begin = time.perf_counter()
    done = subprocess.run(command, capture_output=True, env=env)
    elapsed = time.perf_counter() - begin
    if done.returncode:
        tail = (done.stdout + done.stderr).decode(errors="replace")[-2000:]
        raise SystemExit(f"{command[0]} failed (exit {done.returncode}):\n{tail}")
    return elapsed


def interleaved(runs: int, first: Callable[[], float], second: Callable[[], float]) -> tuple:
    """Median seconds of `first` and `second`, alternated (which goes first swaps every round, so
    neither always follows the other), with a pause before each."""
    a: list[float] = []
    b: list[float] = []
    for index in range(runs):
        order = ((first, a), (second, b)) if index % 2 == 0 else ((second, b), (first, a))
        for contender, times in order:
            time.sleep(SETTLE)
            times.append(contender())
    return statistics.median(a), statistics.median(b)


def bare_model(model: str, taesd: str, threads: int) -> Any:
    """The bare stable_diffusion_cpp model, with localimg's native callbacks installed (one set
    per process) and its leak-free subclass, loaded quietly."""
    from localimg.backends.ggml import native as ggml_native

    native = ggml_native.install()
    with contextlib.redirect_stdout(io.StringIO()):  # the wrapper print()s a blank line on load
        bare = ggml_native.leak_free_class(native)(
            model_path=model, taesd_path=taesd, n_threads=threads, verbose=True
        )
    ggml_native.quiet_wrapper()
    return bare


def bare_call_args(size: int, steps: int) -> dict[str, Any]:
    return dict(prompt=PROMPT, width=size, height=size, sample_steps=steps, seed=SEED,
                cfg_scale=CFG, sample_method=SAMPLER, eta=float("inf"))  # fmt: skip


def child(model: str, taesd: str, threads: int, size: int, steps: int) -> None:
    """The bare contender of the HTTP leg (bench/contenders.py): the model loaded in this clean
    process, one timed `generate_image` per `go`."""
    from contenders import serve

    bare = bare_model(model, taesd, threads)
    call = bare_call_args(size, steps)

    def generate() -> Any:
        image = bare.generate_image(**call)[0]
        assert image.size == (size, size), image.size
        return image

    def setup() -> Callable[[], Any]:
        generate()  # warm-up
        return generate

    try:
        serve(setup)
    finally:
        bare.close()


def row(leg: str, name: str, a: float, other: str, b: float, note: str = "") -> None:
    print(f"{leg:12s} {name:18s} {a:7.3f}s  {other:19s} {b:7.3f}s  ratio {a / b:.3f}{note}")


def same_pixels(first: Any, second: Any) -> str:
    import numpy as np

    x = np.asarray(first.convert("RGB"), dtype=np.int16)
    y = np.asarray(second.convert("RGB"), dtype=np.int16)
    if x.shape != y.shape:
        return f"  (images differ: {x.shape} vs {y.shape})"
    diff = int(np.abs(x - y).max())
    return "  (same pixels)" if diff == 0 else f"  (pixels differ, max {diff}/255)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="width = height (multiple of 64)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per contender and leg")
    parser.add_argument("--threads", type=int, default=None, help="[default: physical cores]")
    parser.add_argument(
        "--sd-cli",
        type=Path,
        default=Path(os.environ["LOCALIMG_SD_CLI"]) if os.environ.get("LOCALIMG_SD_CLI") else None,
        help="stable-diffusion.cpp's sd-cli binary [default: $LOCALIMG_SD_CLI]",
    )
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        model, taesd, threads, size, steps = args.child
        child(model, taesd, int(threads), int(size), int(steps))
        return
    if args.size % 64:
        parser.error("--size must be a multiple of 64 (SD1)")
    if args.sd_cli is not None and not os.access(args.sd_cli, os.X_OK):
        parser.error(f"--sd-cli {args.sd_cli}: not an executable file")

    import httpx
    import stable_diffusion_cpp as sd
    from contenders import Contender, alternate, describe_difference
    from PIL import Image

    from localimg._util.system import physical_cores
    from localimg.backends.base import RuntimeSettings
    from localimg.engine import Engine, EngineSettings, worker_slot_factory
    from localimg.requests import ImageRequest
    from localimg.server.app import ServerSettings, create_app
    from tests.support.server_support import serve_in_thread
    from tests.support.tiny_ggml import (
        populate_models_dir,
        tiny_checkpoint_path,
        tiny_lora_path,
        tiny_taesd_path,
    )

    threads = args.threads or physical_cores()
    files = {"model": tiny_checkpoint_path(), "taesd": tiny_taesd_path(), "lora": tiny_lora_path()}
    work = Path(tempfile.mkdtemp(prefix="bench-ggml-"))
    models = populate_models_dir(work / "models", files)
    model, taesd = str(models / "gguf_model.safetensors"), str(models / "taesd.safetensors")
    size, steps = args.size, args.steps
    print(
        f"model tiny SD1 (random weights), {size}x{size}, {steps} steps, sampler {SAMPLER}, "
        f"cfg {CFG}, seed {SEED}, {threads} threads, median of {args.runs} runs, "
        f"stable-diffusion-cpp-python {sd.__version__}"
    )
    settings = EngineSettings(
        models_path=models,
        runtime=RuntimeSettings(threads=threads),
        max_queue=16,
        keep_alive=None,  # never unloaded between runs
    )

    # The bare model, in this process (the in-process leg).
    bare = bare_model(model, taesd, threads)
    call = bare_call_args(size, steps)
    reference = bare.generate_image(**call)[0]  # warm-up
    assert reference.size == (size, size), reference.size

    def bare_call() -> float:
        begin = time.perf_counter()
        bare.generate_image(**call)
        return time.perf_counter() - begin

    # -- in process ------------------------------------------------------------------------
    engine = Engine(settings)
    request = ImageRequest(
        prompt=PROMPT, width=size, height=size, steps=steps, seed=SEED, cfg_scale=CFG,
        scheduler=SAMPLER,
    )  # fmt: skip
    ours = engine.generate("stablediffusion", request)  # load + warm up
    assert ours.images[0].size == (size, size), ours.images[0].size
    slot: Any = engine.slots["stablediffusion"]
    assert slot.backend.threads == threads, (slot.backend.threads, threads)

    def engine_call() -> float:
        begin = time.perf_counter()
        engine.generate("stablediffusion", request)
        return time.perf_counter() - begin

    a, b = interleaved(args.runs, engine_call, bare_call)
    engine.close()  # only one localimg copy of the model at a time
    bare.close()  # the HTTP leg's bare model is in a process of its own
    row("in process", "Engine.generate", a, "bare generate_image", b,
        same_pixels(ours.images[0], reference))  # fmt: skip

    # -- over HTTP ---------------------------------------------------------------------------
    served = Engine(settings, slot_factory=worker_slot_factory())
    body = {
        "model": "stablediffusion",
        "prompt": PROMPT,
        "size": f"{size}x{size}",
        "steps": steps,
        "seed": SEED,
        "cfg_scale": CFG,
        "scheduler": SAMPLER,
        "response_format": "b64_json",
    }
    app = create_app(ServerSettings(output_dir=work / "out"), served)
    with serve_in_thread(app) as url, httpx.Client(timeout=3600) as client:
        last: list[Any] = []

        def over_http() -> float:
            begin = time.perf_counter()
            reply = client.post(f"{url}/v1/images/generations", json=body)
            elapsed = time.perf_counter() - begin
            reply.raise_for_status()
            image = Image.open(io.BytesIO(base64.b64decode(reply.json()["data"][0]["b64_json"])))
            image.load()
            assert image.size == (size, size), image.size
            last[:] = [image]
            return elapsed

        http_times: list[float] = []

        def timed_http() -> float:
            http_times.append(over_http())
            return http_times[-1]

        over_http()  # starts the worker, loads the model there, warms it up
        worker = served.slots["stablediffusion"].info()  # type: ignore[attr-defined]
        assert worker.get("threads") == str(threads), worker
        clean = Contender(__file__, [model, taesd, str(threads), str(size), str(steps)], "bare")
        try:
            alternate(args.runs, [timed_http, clean.run])
            _, clean_pixels = clean.finish()
        finally:
            clean.close()
    served.close()
    row("over HTTP", "localimg serve", statistics.median(http_times),
        "bare, own process", clean.median(),
        f"  ({describe_difference(clean_pixels, last[0])})")  # fmt: skip

    # -- whole commands ----------------------------------------------------------------------
    env = {**os.environ, "LOCALIMG_MODELS_PATH": str(models)}
    outputs = {name: work / f"{name}.png" for name in ("localimg", "bare", "sd-cli")}
    cli = [sys.executable, "-m", "localimg", "generate", PROMPT, "-m", "stablediffusion",
           "--size", f"{size}x{size}", "--steps", str(steps), "--seed", str(SEED),
           "--cfg-scale", str(CFG), "--scheduler", SAMPLER, "--threads", str(threads),
           "-o", str(outputs["localimg"])]  # fmt: skip
    script = [sys.executable, "-c", BARE, model, taesd, str(threads), str(size), str(steps),
              str(outputs["bare"])]  # fmt: skip
    # Flags as in `sd-cli -h` of this version. Its defaults match the wrapper's (rng cuda, discrete
    # schedule, eta per sampler, no mmap, no flash attention); it differs only in loading: a
    # decode-only VAE and weights freed once used (a one-shot program). Same pixels either way.
    sd_cmd = (
        [str(args.sd_cli), "-m", model, "--taesd", taesd, "-p", PROMPT, "-W", str(size),
         "-H", str(size), "--steps", str(steps), "-s", str(SEED), "--cfg-scale", str(CFG),
         "--sampling-method", SAMPLER, "-t", str(threads), "-o", str(outputs["sd-cli"])]
        if args.sd_cli is not None else []
    )  # fmt: skip
    commands = {"localimg": (cli, env), "bare": (script, None)}
    if sd_cmd:
        commands["sd-cli"] = (sd_cmd, None)
    times: dict[str, list[float]] = {name: [] for name in commands}
    names = list(commands)
    for index in range(args.runs):
        for name in names[index % len(names) :] + names[: index % len(names)]:  # rotated
            time.sleep(SETTLE)
            times[name].append(timed(*commands[name]))
    images = {name: Image.open(path) for name, path in outputs.items() if path.exists()}
    for name in ("localimg", "bare") + (("sd-cli",) if sd_cmd else ()):
        assert name in images, f"{name} wrote no image at {outputs[name]}"
        assert images[name].size == (size, size), (name, images[name].size)
    base = statistics.median(times["bare"])
    row("process", "localimg generate", statistics.median(times["localimg"]), "bare python", base,
        same_pixels(images["localimg"], images["bare"]))  # fmt: skip
    if sd_cmd:
        row("process", "sd-cli", statistics.median(times["sd-cli"]), "bare python", base,
            same_pixels(images["sd-cli"], images["bare"]))  # fmt: skip
    else:
        print("sd-cli: not given (set LOCALIMG_SD_CLI or --sd-cli)")


if __name__ == "__main__":
    main()
