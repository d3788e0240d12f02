"""The accelerators table: each speed-up against the same generation without it, and how far it
moves the image.

For every method and model: two contenders run the same generation (prompt, seed, steps, size,
threads) through localimg's own interfaces, each in a clean process of its own
(bench/contenders.py), loaded and warmed up, alternating `--runs` rounds (who goes first rotates,
with a pause before each): the plain model, and the model with the method, asked for as a user
would (`ImageRequest(cache=...)` for the step caches, YAML `options:` for the rest). It prints one
markdown row per method and model: the median seconds of each, the speed ratio (plain / with:
above 1 is faster), and the PSNR (dB; inf = the same pixels) and largest pixel difference (of
255) of the image with the method against the plain one.

Methods: diffusers' step caches (first_block_cache, taylorseer_cache, mag_cache, faster_cache),
torchao int8 and fp8 weights (`quantization:`), a GGUF Q8_0 transformer, the tiny decoder
(`vae:taesd`) and bfloat16 (`dtype:bfloat16` against the default float32); stable-diffusion.cpp's
step caches (easycache, ucache, dbcache, taylorseer, cachedit, spectrum), weight types (`wtype:`
f16, q8_0, q4_0 against the file's own type, and q8_0 against f16) and the tiny decoder. Each
runs with its default knobs: nothing is tuned to these models. A method a model cannot use (or
that this checkout does not have) shows as "n/a (reason)": localimg's own refusal.

The models have random weights (bench/speedup_models.py). Step caches decide to skip a step from
how much the model's output changes between steps, and random networks change theirs unlike
trained ones: a cache may skip more, or less, or nothing here than on a real model, so read
those rows as "what it costs and that it works", not as the speed-up on real weights.

    python bench/bench_speedups.py                       # tiny models (minutes)
    python bench/bench_speedups.py --model sd15 --runs 2 # SD1.5 size, 256 px, 20 steps (hours)
    python bench/bench_speedups.py --models sd,sd1-ggml --methods vae:taesd,wtype:q8_0
"""

from __future__ import annotations

import argparse
import functools
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
print = functools.partial(print, flush=True)  # progress shows as it happens

PROMPT = "a red fox in the snow"
SEED = 3


@dataclass(frozen=True)
class Method:
    name: str  # the table's method column (and what --methods names)
    engine: str  # diffusers | ggml
    cache: str | None = None  # ImageRequest.cache
    options: tuple[str, ...] = ()  # YAML options of the contender with the method
    # YAML options of a plain contender of its own (else the model's plain one is shared)
    plain_options: tuple[str, ...] = ()
    kind: str = ""  # taesd | gguf: options that depend on the model's files


def _caches(engine: str, names: str) -> list[Method]:
    return [Method(name, engine, cache=name) for name in names.split()]


# The noise floor: a second plain contender against the first (its speed should read 1.00x, its
# image the same pixels); a row far from that says the machine was too busy for the others.
AA = "plain again (A/A)"
METHODS = (
    Method(AA, "diffusers"),
    *_caches("diffusers", "first_block_cache taylorseer_cache mag_cache faster_cache"),
    Method("quantization:int8", "diffusers", options=("quantization:int8",)),
    Method("quantization:fp8", "diffusers", options=("quantization:fp8",)),
    Method("GGUF Q8_0 transformer", "diffusers", kind="gguf"),
    Method("vae:taesd", "diffusers", kind="taesd"),
    Method("dtype:bfloat16 (vs float32)", "diffusers", options=("dtype:bfloat16",)),
    Method(AA, "ggml"),
    *_caches("ggml", "easycache ucache dbcache taylorseer cachedit spectrum"),
    Method("wtype:f16", "ggml", options=("wtype:f16",)),
    Method("wtype:q8_0", "ggml", options=("wtype:q8_0",)),
    Method("wtype:q4_0", "ggml", options=("wtype:q4_0",)),
    Method(
        "wtype:q8_0 vs wtype:f16", "ggml", options=("wtype:q8_0",), plain_options=("wtype:f16",)
    ),
    Method("vae:taesd", "ggml", kind="taesd"),
)


@dataclass
class Row:
    method: str
    model: str
    engine: str
    na: str = ""  # why there is no measurement
    plain: float = math.nan
    with_it: float = math.nan
    psnr: float = math.nan
    max_diff: int = -1

    def markdown(self) -> str:
        head = f"| {self.method} | {self.model} | {self.engine} |"
        if self.na:
            return f"{head} n/a ({short(self.na)}) | | | | |"
        psnr = "inf" if math.isinf(self.psnr) else f"{self.psnr:.1f}"
        return (
            f"{head} {self.plain:.3f} | {self.with_it:.3f} | {self.plain / self.with_it:.2f}x "
            f"| {psnr} | {self.max_diff} |"
        )


HEADER = (
    "| method | model | engine | plain s | with it s | speed | PSNR dB | max px diff |\n"
    "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"
)


# -- the child: one contender ---------------------------------------------------------------


def child(args: list[str]) -> None:
    """`--child MODELS NAME CACHE SIZE STEPS THREADS FRAMES`: load NAME from the folder MODELS,
    warm up, then one timed generation per `go` (contenders.py); CACHE "-" is none, FRAMES 0 an
    image. Load `name` from `models`, warm up, then one timed generation per `go` (contenders.py).
    A localimg error at load or warm-up (the method refused, or not in this checkout) is
    reported as the contender's refusal."""
    from contenders import serve

    from localimg.backends.base import RuntimeSettings
    from localimg.engine import Engine, EngineSettings
    from localimg.errors import BackendError, LocalimgError
    from localimg.requests import ImageRequest

    folder, name, cache = Path(args[0]), args[1], args[2]
    size, steps, threads, frames = (int(value) for value in args[3:])
    runtime = RuntimeSettings(threads=threads)
    engine = Engine(EngineSettings(models_path=folder, runtime=runtime))

    def generate() -> Any:
        request = ImageRequest(
            prompt=PROMPT,
            seed=SEED,
            steps=steps,
            width=size,
            height=size,
            cache=None if cache == "-" else cache,
            num_frames=frames or None,
        )
        result = engine.generate(name, request)
        return list(result.images) if frames else result.images[0]

    def setup() -> Callable[[], Any]:
        try:
            generate()  # load + warm-up
        except BackendError as exc:
            raise LocalimgError(f"failed: {exc}") from exc
        return generate

    try:
        serve(setup, refusals=(LocalimgError,))
    finally:
        engine.close()


# -- the parent -----------------------------------------------------------------------------


class Bench:
    """Writes each contender's YAML into one models folder and starts contenders on it."""

    def __init__(self, args: argparse.Namespace, folder: Path) -> None:
        self.args, self.folder, self.count = args, folder, 0

    def contender(
        self, model: Any, options: tuple[str, ...], cache: str | None, path: str | None = None
    ) -> Any:
        from contenders import Contender
        from speedup_models import yaml_text

        self.count += 1
        name = f"m{self.count}"
        text = yaml_text(name, model, options, path)
        (self.folder / f"{name}.yaml").write_text(text, encoding="utf-8")
        args = [str(self.folder), name, cache or "-", str(self.args.size), str(self.args.steps)]
        args += [str(self.args.threads), str(model.frames)]
        return Contender(__file__, args, label=f"{model.label} {options} {cache}")


@dataclass(frozen=True)
class Plan:
    """The YAML of the contender with a method, and of a plain contender of its own if it
    needs one (else the model's plain contender is its reference)."""

    options: tuple[str, ...]
    path: str | None = None  # parameters.model, when not the model's own
    own_plain: bool = False
    plain_options: tuple[str, ...] = ()
    plain_path: str | None = None


def plan(model: Any, method: Method) -> Plan | str:
    """How a method runs on a model, or why it is not measured there."""
    if method.kind == "taesd":
        if model.taesd is None:
            return str(model.no_taesd)
        if model.engine == "diffusers":
            return Plan(("vae:taesd", f"taesd_path:{model.taesd}"))
        if model.full_vae:  # the model file has no VAE: the plain side loads a full one
            full = (f"vae_path:{model.full_vae}", "vae:full")
            return Plan(("vae:taesd",), own_plain=True, plain_options=full)
        return Plan((f"taesd_path:{model.taesd}", "vae:taesd"))
    if method.kind == "gguf":
        if model.gguf is None:
            return str(model.no_gguf)
        base, gguf = model.gguf
        return Plan((f"base_model:{base}",), gguf, own_plain=True, plain_path=base)
    own = bool(method.plain_options)
    return Plan(method.options, own_plain=own, plain_options=method.plain_options)


def short(reason: str, limit: int = 200) -> str:
    """A refusal's first clause, cut to a table cell's length."""
    text = " ".join(reason.split()).split("; ")[0]
    return text if len(text) <= limit else text[: limit - 1].rsplit(" ", 1)[0] + "…"


def measure_model(bench: Bench, model: Any, methods: list[Method], runs: int) -> list[Row]:
    """Every method on one model: the model's plain contender stays loaded throughout (started
    when the first method needs it), each method gets fresh contenders, and they alternate. A
    contender that dies makes its row "failed" and the rest go on."""
    from contenders import psnr_and_max_diff

    rows: list[Row] = []
    pending: list[tuple[Row, Any]] = []  # rows against the shared plain image (known at the end)
    plain: Any = None
    for method in methods:
        row = Row(method.name, model.label, model.engine)
        rows.append(row)
        how = plan(model, method)
        if isinstance(how, str):
            row.na = how
            continue
        if plain is None or (plain.refused is None and plain.process.poll() is not None):
            plain = bench.contender(model, (), None)
        if plain.refused:
            row.na = f"plain model: {plain.refused}"
            continue
        print(f"  {method.name} on {model.label} ...", file=sys.stderr)
        started: list[Any] = []
        try:
            reference, pixels = measure_row(bench, model, method, how, plain, row, runs, started)
            if reference is not None:
                row.psnr, row.max_diff = psnr_and_max_diff(reference, pixels)
            elif pixels is not None:
                pending.append((row, pixels))
        except SystemExit as exc:  # a contender died: contenders.py says how
            row.na = "failed: " + " ".join(str(exc).split())[:300]
        finally:
            for contender in started:
                contender.close()
    if plain is not None and plain.refused is None:
        _, plain_pixels = plain.finish()
        for row, pixels in pending:
            row.psnr, row.max_diff = psnr_and_max_diff(plain_pixels, pixels)
    return rows


def measure_row(
    bench: Bench,
    model: Any,
    method: Method,
    how: Plan,
    plain: Any,
    row: Row,
    runs: int,
    started: list[Any],
) -> tuple[Any, Any]:
    """Time one method against its plain contender into `row`: (the plain pixels when it had a
    plain contender of its own, else None; the pixels with the method, None when refused)."""
    from contenders import alternate

    own = None
    if how.own_plain:
        own = bench.contender(model, how.plain_options, None, how.plain_path)
        started.append(own)
        if own.refused:
            row.na = f"plain: {own.refused}"
            return None, None
    with_it = bench.contender(model, how.options, method.cache, how.path)
    started.append(with_it)
    if with_it.refused:
        row.na = with_it.refused
        return None, None
    reference = own or plain
    first = len(reference.times)
    alternate(runs, [reference.run, with_it.run])
    row.plain = statistics.median(reference.times[first:])
    row.with_it = with_it.median()
    _, pixels = with_it.finish()
    return (own.finish()[1] if own is not None else None), pixels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["tiny", "sd15"], default="tiny")
    parser.add_argument("--models", default="", help="comma list of model keys [all of the set]")
    parser.add_argument("--methods", default="", help="comma list of method names [all]")
    parser.add_argument("--engine", choices=["both", "diffusers", "ggml"], default="both")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=None, help="[default: 64 tiny, 256 sd15]")
    parser.add_argument("--runs", type=int, default=3, help="timed generations per contender")
    parser.add_argument("--threads", type=int, default=0, help="[default: physical cores]")
    parser.add_argument("--child", nargs=7, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return

    from speedup_models import TINY_FAMILIES, sd15_models, tiny_models

    from localimg._util.system import physical_cores

    args.threads = args.threads or physical_cores()
    args.size = args.size or (64 if args.model == "tiny" else 256)
    wanted_models = [m for m in args.models.split(",") if m]
    wanted_methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in wanted_methods if m not in {method.name for method in METHODS}]
    if unknown:
        parser.error(f"unknown methods {unknown}; known: {', '.join(m.name for m in METHODS)}")
    begin = time.perf_counter()
    families = tuple(m for m in wanted_models if m.endswith("Pipeline"))
    if not wanted_models:
        families = TINY_FAMILIES
    models = tiny_models(families) if args.model == "tiny" else sd15_models()
    models = [m for m in models if not wanted_models or m.key in wanted_models]
    models = [m for m in models if args.engine in ("both", m.engine)]
    print(
        f"accelerators on the {args.model} models (random weights), {args.size}x{args.size}, "
        f"{args.steps} steps, seed {SEED}, {args.threads} threads; median of {args.runs} "
        "alternating runs per contender, each contender a clean process of its own "
        f"(models ready in {time.perf_counter() - begin:.0f} s)\n"
    )
    print(HEADER)
    with tempfile.TemporaryDirectory(prefix="bench-speedups-") as tmp:
        bench = Bench(args, Path(tmp))
        for model in models:
            methods = [
                m
                for m in METHODS
                if m.engine == model.engine and (not wanted_methods or m.name in wanted_methods)
            ]
            for row in measure_model(bench, model, methods, args.runs):
                print(row.markdown())
    print(
        "\nspeed: plain seconds / seconds with the method (above 1: faster). PSNR and max px diff: "
        "the image with the method against the plain one (inf and 0: the same pixels). Every "
        "method runs with its default knobs. The weights are random: step caches decide what "
        "to skip from how much the model's output changes between steps, which random networks "
        "do unlike trained ones, so a cache row says what the method costs and that it works, "
        "not what it saves on a real model (never tune a threshold to this table). "
        f"Whole run: {time.perf_counter() - begin:.0f} s."
    )


if __name__ == "__main__":
    main()
