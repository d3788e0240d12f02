"""One log line per request, its request id, and the request counter of /metrics.

`AccessLogMiddleware` (the outermost of the app's) gives every request an id (the x-request-id
response header), and when the response is done logs one line on `localimg.access` and counts
the request by route template and status (metrics.py). A route that runs a job calls
`record_job(request, job)`; the line then names the job's model, its queue seconds and its
generation seconds (a request running several jobs, as A1111's n_iter, adds them up).

The record carries every value as a field (`extra=`), which the JSON log format writes out
(`--log-format json`, _util/logs.py); the text format writes the message alone.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.routing import Match

from localimg.server.http.asgi import Message, Receive, Scope, Send

if TYPE_CHECKING:
    from localimg.engine import Job
    from localimg.server.metrics import ServerMetrics

access_log = logging.getLogger("localimg.access")

UNMATCHED = "unmatched"  # the route label of a path no route serves (bounded cardinality)


def record_job(request: Request, job: Job) -> None:
    """Name a job this request ran (or queued), for its access log line."""
    request.scope.setdefault("state", {}).setdefault("jobs", []).append(job)


def route_template(scope: Scope) -> str:
    """The path template of the route that served (or would serve) the request."""
    route = scope.get("route")
    if route is None:  # answered before routing (API key, body limit): find its route
        app = scope.get("app")
        for candidate in getattr(getattr(app, "router", None), "routes", []):
            match, _ = candidate.matches(scope)
            if match != Match.NONE:
                route = candidate
                break
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


def job_fields(jobs: list[Job]) -> dict[str, Any]:
    """The model, queue and generation seconds of the jobs a request ran (None: not known yet,
    as for a job that is still queued when a 202 answers)."""
    if not jobs:
        return {"model": None, "queue_seconds": None, "generation_seconds": None}
    queue: float | None = None
    generation: float | None = None
    for job in jobs:
        waited = job.queue_seconds
        if waited is not None:
            queue = (queue or 0.0) + waited
        ran = job_generation_seconds(job)
        if ran is not None:
            generation = (generation or 0.0) + ran
    return {
        "model": jobs[0].model,
        "queue_seconds": round(queue, 4) if queue is not None else None,
        "generation_seconds": round(generation, 4) if generation is not None else None,
    }


def job_generation_seconds(job: Job) -> float | None:
    """The backend's generation time of a finished job (its result's timings), else the time it
    ran (a failed or cancelled job; a model load included); None if it never ran."""
    future = job.future
    if future.done() and not future.cancelled() and future.exception() is None:
        inference = future.result().timings.get("inference")
        if inference is not None:
            return float(inference)
    return job.run_seconds


class AccessLogMiddleware:
    """A request id on every request and response, one log line and one count per request."""

    def __init__(
        self, app: Any, metrics: ServerMetrics | None = None, log_format: str = "text"
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.log_format = log_format

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = "req_" + secrets.token_hex(8)
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.monotonic()
        status = 0
        generation = ""

        async def send_with_id(message: Message) -> None:
            nonlocal status, generation
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                for name, value in headers:
                    if name == b"x-localimg-generation-time":
                        generation = f" gen={value.decode()}s"
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if status == 0:  # an exception escaped: the outer error middleware answers 500
                status = 500
            self._done(scope, request_id, status, time.monotonic() - started, generation)

    def _done(
        self, scope: Scope, request_id: str, status: int, duration: float, generation: str
    ) -> None:
        route = route_template(scope)
        if self.metrics is not None:
            self.metrics.request_done(scope["method"], route, status)
        client = scope.get("client") or ("-", 0)
        fields: dict[str, Any] = {
            "request_id": request_id,
            "method": scope["method"],
            "path": scope["path"],
            "route": route,
            "client": client[0],
            "status": status,
            "duration_seconds": round(duration, 4),
            **job_fields(scope.get("state", {}).get("jobs", [])),
        }
        model = f" model={fields['model']}" if fields["model"] else ""
        if self.log_format == "json":  # the fields are the line; the message is a summary
            message = f"{scope['method']} {scope['path']} {status}"
        else:
            message = (
                f"{request_id} {client[0]} {scope['method']} {scope['path']} {status} "
                f"{duration:.3f}s{generation}{model}"
            )
        access_log.info("%s", message, extra=fields)
