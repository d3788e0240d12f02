"""One route factory for every job kind: create, list, get, delete and the kind's own sub-route.

`/v1/images/jobs` and `/v1/videos` are the same API over different records (jobs/base.py): POST
queues a job and answers at once, GET lists them newest first or shows one, DELETE cancels or
deletes one, and one more GET reads what the job made (an image job's `/events` stream, a
video's `/content`). A `JobKind` says what differs; `job_routes` builds the five routes, so an
unknown id, the listing and the store's registration behave alike for both kinds.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from localimg.errors import LocalimgError
from localimg.server.jobs.base import Job
from localimg.server.jobs.store import JobStore

Endpoint = Callable[[Request], Awaitable[Response]]
EntryHandler = Callable[[Request, Any], Awaitable[Response]]


@dataclass(frozen=True)
class JobKind:
    """What one kind of job brings to the shared routes."""

    path: str  # "/v1/images/jobs"
    param: str  # the id's path parameter ("job_id")
    store: str  # the ServerState attribute of its JobStore ("image_jobs")
    tasks: str  # the ServerState attribute of its finishing tasks ("image_job_tasks")
    not_found: Callable[[str], LocalimgError]  # the 404 for an unknown id
    create: Endpoint  # POST path
    show: EntryHandler  # GET path/{id}
    delete: EntryHandler  # DELETE path/{id}
    sub_path: str  # "/events", "/content"
    sub: EntryHandler  # GET path/{id}{sub_path}

    def store_of(self, request: Request) -> JobStore[Any]:
        store: JobStore[Any] = getattr(request.app.state, self.store)
        return store

    def entry(self, request: Request) -> Any:
        """The job the path names, or the kind's 404."""
        job_id = request.path_params[self.param]
        entry = self.store_of(request).get(job_id)
        if entry is None:
            raise self.not_found(job_id)
        return entry

    def start(self, request: Request, entry: Job, finish: Coroutine[Any, Any, None]) -> None:
        """Register a submitted job and the task that records its outcome (cancelled at
        shutdown by ServerState.close)."""
        state = request.app.state
        self.store_of(request).add(entry)
        tasks: set[asyncio.Task[None]] = getattr(state, self.tasks)
        task = asyncio.create_task(finish)
        tasks.add(task)
        task.add_done_callback(tasks.discard)


def job_routes(kind: JobKind) -> list[Route]:
    """The five routes of a job kind."""

    async def list_jobs(request: Request) -> Response:
        """List the jobs, newest first."""
        engine = request.app.state.engine
        entries = sorted(kind.store_of(request).values(), key=lambda e: e.created_at, reverse=True)
        return JSONResponse({"object": "list", "data": [e.public(engine) for e in entries]})

    def bound(handler: EntryHandler) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            return await handler(request, kind.entry(request))

        return functools.wraps(handler)(endpoint)  # its docstring and openapi.describe

    one = f"{kind.path}/{{{kind.param}}}"
    return [
        Route(kind.path, kind.create, methods=["POST"]),
        Route(kind.path, list_jobs, methods=["GET"]),
        Route(one, bound(kind.show), methods=["GET"]),
        Route(one, bound(kind.delete), methods=["DELETE"]),
        Route(one + kind.sub_path, bound(kind.sub), methods=["GET"]),
    ]
