"""Prometheus metrics of the server and its model workers (`GET /metrics`).

Each app has its own `CollectorRegistry` (several apps in one process never clash). Counters and
histograms move on engine events (engine/events.py: job outcomes, loads, rejections, worker
restarts), which the engine reports in this process even when the models run in worker
processes, and on each HTTP request (the access log middleware). Gauges (queues, running jobs,
loaded models, each worker's memory) are read from the engine's slots at scrape time, so they
are never stale. The route is behind the API key (ApiKeyMiddleware) unless the server runs with
`--public-metrics`, which puts it on the middleware's public list.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from localimg import __version__
from localimg.engine import EngineListener, JobFinished, WorkerSlot
from localimg.server.errors import NotFound

if TYPE_CHECKING:
    from localimg.engine import Engine

GENERATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800)
QUEUE_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
LOAD_BUCKETS = (0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
MODEL = ["model", "backend"]


class SlotCollector(Collector):
    """The gauges read from the engine's slots at each scrape."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def describe(self) -> list[Metric]:
        return []  # computed at scrape time; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        queue = GaugeMetricFamily(
            "localimg_queue_depth", "Jobs waiting in the model's queue.", labels=["model"]
        )
        running = GaugeMetricFamily(
            "localimg_running_jobs", "Jobs the model is running now.", labels=["model"]
        )
        loaded = GaugeMetricFamily(
            "localimg_model_loaded", "1 while the model is loaded, else 0.", labels=MODEL
        )
        rss = GaugeMetricFamily(
            "localimg_worker_resident_memory_bytes",
            "Resident memory of the model's worker process.",
            labels=["model", "pid"],
        )
        gpu = GaugeMetricFamily(
            "localimg_worker_gpu_memory_bytes",
            "CUDA memory allocated by the model's worker process (only where CUDA is in use).",
            labels=["model", "pid"],
        )
        in_process_gpu: int | None = None
        count = 0
        for name, slot in sorted(self.engine.slots.items()):
            queue.add_metric([name], slot.queue_depth)
            running.add_metric([name], slot.running_jobs)
            is_loaded = slot.state == "loaded"
            count += is_loaded
            loaded.add_metric([name, slot.backend_name], 1.0 if is_loaded else 0.0)
            if isinstance(slot, WorkerSlot):
                pid = slot.pid
                resident = slot.resident_bytes
                if pid is not None and resident is not None:
                    rss.add_metric([name, str(pid)], resident)
                cuda = slot.gpu_memory_bytes
                if pid is not None and cuda is not None:
                    gpu.add_metric([name, str(pid)], cuda)
            elif (cuda := slot.gpu_memory_bytes) is not None:
                in_process_gpu = cuda  # the server process's own: the same for each such slot
        yield queue
        yield running
        yield loaded
        yield GaugeMetricFamily(
            "localimg_loaded_models", "Models loaded now (in this process or a worker).", count
        )
        yield rss
        yield gpu
        if in_process_gpu is not None:
            yield GaugeMetricFamily(
                "localimg_process_gpu_memory_bytes",
                "CUDA memory allocated by the server process (models run with --in-process).",
                in_process_gpu,
            )


class ServerMetrics(EngineListener):
    """The app's registry and its metrics; subscribed to the engine's events."""

    def __init__(self, engine: Engine) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        Gauge("localimg_build_info", "localimg's version.", ["version"], registry=r).labels(
            __version__
        ).set(1)
        self.requests = Counter(
            "localimg_http_requests",
            'HTTP requests answered, by route template (unknown paths: route="unmatched").',
            ["method", "route", "status"],
            registry=r,
        )
        self.jobs = Counter(
            "localimg_jobs",
            "Jobs finished, by outcome: ok, error or cancelled.",
            [*MODEL, "outcome"],
            registry=r,
        )
        self.rejected = Counter(
            "localimg_jobs_rejected",
            "Jobs refused because the model's queue was full (429).",
            MODEL,
            registry=r,
        )
        self.queue_seconds = Histogram(
            "localimg_queue_seconds",
            "Seconds a job waited for its model (cancelled jobs included).",
            MODEL,
            buckets=QUEUE_BUCKETS,
            registry=r,
        )
        self.generation_seconds = Histogram(
            "localimg_generation_seconds",
            "Seconds of the backend's generation of a successful job (no queue, no load).",
            MODEL,
            buckets=GENERATION_BUCKETS,
            registry=r,
        )
        self.steps = Counter(
            "localimg_steps", "Denoising steps of successful jobs.", MODEL, registry=r
        )
        self.steps_per_second = Gauge(
            "localimg_steps_per_second",
            "Denoising steps per second of the model's latest successful job.",
            MODEL,
            registry=r,
        )
        self.loads = Counter("localimg_model_loads", "Model loads.", MODEL, registry=r)
        self.load_seconds = Histogram(
            "localimg_model_load_seconds",
            "Seconds a model load took.",
            MODEL,
            buckets=LOAD_BUCKETS,
            registry=r,
        )
        self.restarts = Counter(
            "localimg_worker_restarts",
            "Worker processes started again after one died or was killed.",
            MODEL,
            registry=r,
        )
        ProcessCollector(registry=r)  # process_resident_memory_bytes &c. of the server itself
        r.register(SlotCollector(engine))

    # -- engine events (engine threads) -----------------------------------------------------

    def job_finished(self, event: JobFinished) -> None:
        labels = (event.model, event.backend)
        self.jobs.labels(*labels, event.outcome).inc()
        self.queue_seconds.labels(*labels).observe(event.queue_seconds)
        if event.outcome != "ok" or event.generation_seconds is None:
            return
        self.generation_seconds.labels(*labels).observe(event.generation_seconds)
        self.steps.labels(*labels).inc(event.steps)
        pace = event.steps_per_second
        if pace is not None:
            self.steps_per_second.labels(*labels).set(pace)

    def job_rejected(self, model: str, backend: str) -> None:
        self.rejected.labels(model, backend).inc()

    def model_loaded(self, model: str, backend: str, seconds: float) -> None:
        self.loads.labels(model, backend).inc()
        self.load_seconds.labels(model, backend).observe(seconds)

    def worker_restarted(self, model: str, backend: str, reason: str) -> None:
        self.restarts.labels(model, backend).inc()

    # -- HTTP ------------------------------------------------------------------------------

    def request_done(self, method: str, route: str, status: int) -> None:
        self.requests.labels(method, route, str(status)).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


async def metrics(request: Request) -> Response:
    """GET /metrics: the Prometheus text format."""
    state = request.app.state
    server_metrics: ServerMetrics | None = state.metrics
    if server_metrics is None:  # a ServerState built without create_app
        raise NotFound("metrics are not enabled on this server")
    body = await asyncio.to_thread(server_metrics.exposition)  # reads /proc, takes slot locks
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def routes() -> list[Route]:
    return [Route("/metrics", metrics, methods=["GET"])]
