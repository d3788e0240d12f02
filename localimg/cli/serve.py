"""`localimg serve`: the HTTP server over an engine whose models run in worker processes (or,
with `--ray`, in the replicas of one Ray Serve deployment per model: ray/app.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from localimg.cli.app import (
    State,
    app,
    engine_settings,
    lifecycle_settings,
    prepare_runtime,
)
from localimg.cli.params import Device, ModelsPath, Threads


class LogFormat(StrEnum):
    """`--log-format`: the log lines of the server and its workers."""

    text = "text"
    json = "json"


@app.command()
def serve(
    host: Annotated[
        str, typer.Option("--host", help="Address to bind (0.0.0.0 for every interface).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", help="TCP port.")] = 8080,
    models_path: ModelsPath = None,
    api_key: Annotated[
        list[str] | None,
        typer.Option(
            "--api-key",
            envvar="LOCALIMG_API_KEY",
            help="Require 'Authorization: Bearer KEY' on /v1 routes (repeatable).",
        ),
    ] = None,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option("--cors-origin", help="Allow browser calls from this origin (repeatable)."),
    ] = None,
    max_queue: Annotated[
        int, typer.Option("--max-queue", min=1, help="Requests that may wait per model.")
    ] = 16,
    preload: Annotated[
        list[str] | None,
        typer.Option("--preload", help="Load this model at startup (repeatable)."),
    ] = None,
    output_dir: Annotated[
        Path | None,
        typer.Option(
            "--output-dir", help="Where url-format images are kept [default: a temporary folder]."
        ),
    ] = None,
    base_url: Annotated[
        str | None,
        typer.Option("--base-url", help="Public base URL for image links [default: Host header]."),
    ] = None,
    url_ttl: Annotated[
        float, typer.Option("--url-ttl", min=1, help="Seconds a url-format image is kept.")
    ] = 3600.0,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1, help="Per-request limit in seconds (queue too).")
    ] = 600.0,
    max_body_mb: Annotated[
        float, typer.Option("--max-body-mb", min=0.001, help="Largest request body, in MiB.")
    ] = 64.0,
    max_image_pixels: Annotated[
        int, typer.Option("--max-image-pixels", min=1, help="Largest decoded input image.")
    ] = 4096 * 4096,
    allow_private_urls: Annotated[
        bool,
        typer.Option(
            "--allow-private-urls", help="Let requests fetch loopback/private/link-local URLs."
        ),
    ] = False,
    grace: Annotated[
        float, typer.Option("--shutdown-grace", min=0, help="Seconds running jobs get to finish.")
    ] = 30.0,
    in_process: Annotated[
        bool,
        typer.Option("--in-process", help="Run models in this process (no crash isolation)."),
    ] = False,
    keep_alive: Annotated[
        str,
        typer.Option(
            "--keep-alive",
            help="Unload a model idle this long (300, 90s, 5m, 1h; 0: after each request; "
            "-1: never). A model's YAML `keep_alive:` wins.",
        ),
    ] = "5m",
    max_loaded_models: Annotated[
        int,
        typer.Option(
            "--max-loaded-models",
            min=0,
            help="Most models loaded at once; the least recently used idle one is unloaded "
            "to make room (0: no limit).",
        ),
    ] = 0,
    max_memory: Annotated[
        str | None,
        typer.Option(
            "--max-memory",
            help="Memory budget checked before loading: 12G (RAM) or ram=12G,vram=8G. Idle "
            "models are unloaded to make room, else the request gets 507. [default: the "
            "machine's free RAM]",
        ),
    ] = None,
    max_batch: Annotated[
        int,
        typer.Option(
            "--max-batch",
            min=1,
            max=64,
            help="Run up to N queued same-size text-to-image requests as one batch (1: off).",
        ),
    ] = 1,
    a1111: Annotated[
        bool,
        typer.Option(
            "--a1111/--no-a1111",
            help="Serve the AUTOMATIC1111 API under /sdapi/v1 (SillyTavern, Open WebUI).",
        ),
    ] = True,
    ui: Annotated[
        bool,
        typer.Option("--ui/--no-ui", help="Serve the web page at / (try models in a browser)."),
    ] = True,
    public_metrics: Annotated[
        bool,
        typer.Option(
            "--public-metrics",
            help="Serve /metrics without the API key (for a Prometheus that sends none).",
        ),
    ] = False,
    log_format: Annotated[
        LogFormat,
        typer.Option(
            "--log-format",
            case_sensitive=False,
            help="text or json: json logs one JSON object per line (each request with its id, "
            "route, model, status, queue and generation seconds).",
        ),
    ] = LogFormat.text,
    ray: Annotated[
        bool,
        typer.Option(
            "--ray",
            help="Run each model as a Ray Serve deployment (replicas, autoscaling, several "
            "GPUs or hosts); needs pip install 'localimg[ray]'.",
        ),
    ] = False,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address",
            help="With --ray: join this Ray cluster (auto, or HOST:6379) [default: start a local "
            "Ray instance, stopped with the server].",
        ),
    ] = None,
    replicas: Annotated[
        int | None,
        typer.Option(
            "--replicas", min=1, help="With --ray: replicas per model (a YAML's ray: wins) [1]."
        ),
    ] = None,
    autoscale: Annotated[
        str | None,
        typer.Option(
            "--autoscale",
            help="With --ray: autoscale each model between MIN:MAX replicas (e.g. 1:4).",
        ),
    ] = None,
    gpus_per_replica: Annotated[
        float | None,
        typer.Option(
            "--gpus-per-replica",
            min=0,
            help="With --ray: GPUs each replica reserves (0.5: two per GPU) [default: 1 where "
            "the cluster has GPUs, else 0].",
        ),
    ] = None,
    device: Device = None,
    threads: Threads = None,
    log_level: Annotated[
        str | None,
        typer.Option("--log-level", help="debug, info, warning or error [default: info]."),
    ] = None,
) -> None:
    """Run the OpenAI-compatible image server (POST /v1/images/generations ...)."""
    State.log_level = (log_level or "info").upper()
    prepare_runtime(log_format.value)
    from dataclasses import replace

    from localimg.config import scan_models
    from localimg.engine import Engine, WorkerOptions, worker_slot_factory
    from localimg.media.decode import ImageLimits
    from localimg.media.fetch import FetchPolicy
    from localimg.server.app import ServerSettings, create_app
    from localimg.server.run import build_server, startup_line

    engine_setup = replace(
        engine_settings(models_path, device, threads),
        max_queue=max_queue,
        **lifecycle_settings(keep_alive, max_loaded_models, max_memory, max_batch),
    )
    keys = tuple(k for k in (api_key or []) if k)
    settings = ServerSettings(
        api_keys=keys,
        cors_origins=tuple(cors_origin or ()),
        max_body_bytes=int(max_body_mb * 1024 * 1024),
        image_limits=ImageLimits(max_pixels=max_image_pixels),
        fetch_policy=FetchPolicy(allow_private=allow_private_urls),
        output_dir=output_dir,
        base_url=base_url,
        url_ttl=url_ttl,
        request_timeout=timeout,
        preload=tuple(preload or ()),
        a1111=a1111,
        ui=ui,
        public_metrics=public_metrics,
        log_format=log_format.value,
    )
    names = [e.name for e in scan_models(engine_setup.models_path) if e.config is not None]
    line = startup_line(host, port, engine_setup.models_path, names, len(keys))
    if ray:
        refuse_with_ray(in_process, max_loaded_models, max_memory, max_batch)

        def server_for(app_: Any) -> Any:
            announce(line, log_format)
            return build_server(app_, host, port, grace=grace)

        on_ray = ray_options(ray_address, replicas, autoscale, gpus_per_replica)
        run_on_ray(settings, engine_setup, on_ray, server_for)
        return
    ray_only = {
        "--ray-address": ray_address,
        "--replicas": replicas,
        "--autoscale": autoscale,
        "--gpus-per-replica": gpus_per_replica,
    }
    for flag, value in ray_only.items():
        if value is not None:
            raise typer.BadParameter("only applies with --ray", param_hint=flag)
    options = WorkerOptions(log_level=State.log_level, log_format=log_format.value)
    factory = None if in_process else worker_slot_factory(options)
    engine = Engine(engine_setup, slot_factory=factory)
    app_ = create_app(settings, engine)
    announce(line, log_format)
    build_server(app_, host, port, grace=grace).run()


def announce(line: str, log_format: LogFormat) -> None:
    if log_format is LogFormat.json:
        logging.getLogger("localimg.server").info("%s", line)  # a JSON line like the rest
    else:
        typer.echo(line, err=True)


def refuse_with_ray(
    in_process: bool, max_loaded_models: int, max_memory: str | None, max_batch: int
) -> None:
    """Options of the one-machine engine that mean nothing on Ray are refused, not ignored."""
    why = {
        "--in-process": (in_process, "models run in their Ray replicas"),
        "--max-loaded-models": (
            max_loaded_models != 0,
            "Ray places replicas by their CPUs and GPUs; use --replicas/--autoscale",
        ),
        "--max-memory": (max_memory is not None, "Ray places replicas by their CPUs and GPUs"),
        "--max-batch": (max_batch != 1, "each replica runs one request at a time"),
    }
    for flag, (given, reason) in why.items():
        if given:
            raise typer.BadParameter(f"cannot be used with --ray ({reason})", param_hint=flag)


def ray_options(
    address: str | None, replicas: int | None, autoscale: str | None, gpus: float | None
) -> Any:
    from localimg.ray.cluster import RayServeOptions, parse_autoscale

    if replicas is not None and autoscale is not None:
        raise typer.BadParameter(
            "give --replicas or --autoscale, not both", param_hint="--autoscale"
        )
    bounds = None
    if autoscale is not None:
        try:
            bounds = parse_autoscale(autoscale)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--autoscale") from None
    return RayServeOptions(
        address=address, replicas=replicas or 1, autoscale=bounds, gpus_per_replica=gpus
    )


def run_on_ray(
    settings: Any, engine_setup: Any, options: Any, server: Callable[[Any], Any]
) -> None:
    """Start (or join) Ray, serve the app over it, and stop what was started on the way out."""
    from localimg.ray.app import create_ray_app
    from localimg.ray.cluster import RayCluster

    cluster = RayCluster(options).start()  # without ray[serve]: the one-line install hint
    try:
        server(create_ray_app(settings, engine_setup, cluster)).run()
    finally:
        cluster.stop()
